"""Manifest verification is done once per change of the files, not once per reconcile."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tritonop.repository import manifests
from tritonop.repository.manifests import MANIFEST_NAME, ManifestCache, verify_manifest
from tritonop.repository.report import inspect


def version_folder(root: Path, files: dict[str, bytes]) -> Path:
    version = root / "model" / "1"
    version.mkdir(parents=True)
    (root / "model" / "config.pbtxt").write_text('name: "model"\nbackend: "python"\n')
    for name, data in files.items():
        (version / name).write_bytes(data)
    manifest = {"algorithm": "sha256", "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
    (version / MANIFEST_NAME).write_text(json.dumps(manifest))
    return version


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files sha256_file read, in order."""
    reads: list[Path] = []
    real = manifests.sha256_file

    def spy(path: Path) -> str:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(manifests, "sha256_file", spy)
    return reads


def test_unchanged_files_are_hashed_once(tmp_path: Path, hashed: list[Path]) -> None:
    version = version_folder(tmp_path, {"model.py": b"print(1)\n", "weights.bin": b"w" * 5000})
    cache = ManifestCache()
    for _ in range(5):
        report = inspect(f"file://{tmp_path}", "model", 1, manifests=cache)
        assert report.problem is None
    assert sorted(p.name for p in hashed) == ["model.py", "weights.bin"]
    assert len(cache) == 1
    # Without a cache every call reads every file again (what the operator did before).
    verify_manifest(version)
    assert len(hashed) == 4


def test_rewritten_file_with_restored_mtime_is_hashed_again(tmp_path: Path, hashed: list[Path]) -> None:
    version = version_folder(tmp_path, {"weights.bin": b"a" * 4096})
    cache = ManifestCache()
    assert verify_manifest(version, cache) is None
    weights = version / "weights.bin"
    before = os.stat(weights)
    weights.write_bytes(b"b" * 4096)  # same size
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: ctime still moves
    verdict = verify_manifest(version, cache)
    assert verdict is not None and "weights.bin: sha256" in verdict and "does not match" in verdict
    assert [p.name for p in hashed] == ["weights.bin", "weights.bin"]
    # The mismatch is remembered too: the bad file is not re-read on every reconcile.
    assert verify_manifest(version, cache) == verdict
    assert len(hashed) == 2


def test_missing_file_then_restored(tmp_path: Path, hashed: list[Path]) -> None:
    version = version_folder(tmp_path, {"model.py": b"x", "weights.bin": b"y" * 10})
    cache = ManifestCache()
    data = (version / "weights.bin").read_bytes()
    (version / "weights.bin").unlink()
    verdict = verify_manifest(version, cache)
    assert verdict == f"{version / 'weights.bin'}: listed in {MANIFEST_NAME} but missing"
    (version / "weights.bin").write_bytes(data)
    assert verify_manifest(version, cache) is None


def test_changed_manifest_is_checked_again(tmp_path: Path, hashed: list[Path]) -> None:
    version = version_folder(tmp_path, {"weights.bin": b"z" * 100})
    cache = ManifestCache()
    assert verify_manifest(version, cache) is None
    manifest = json.loads((version / MANIFEST_NAME).read_text())
    manifest["files"]["weights.bin"] = "0" * 64
    (version / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert "does not match the manifest's 000000000000" in (verify_manifest(version, cache) or "")


def test_cache_is_bounded(tmp_path: Path) -> None:
    cache = ManifestCache(max_entries=2)
    folders = []
    for index in range(3):
        folder = version_folder(tmp_path / str(index), {"w": bytes([index])})
        folders.append(folder)
        assert verify_manifest(folder, cache) is None
    assert len(cache) == 2
    identity = (manifests._identity(folders[0] / MANIFEST_NAME, MANIFEST_NAME),)
    assert cache.lookup(folders[0], identity) == (False, None)  # the oldest went first


def test_entries_go_with_the_last_model_deployment_using_them(tmp_path: Path) -> None:
    shared = version_folder(tmp_path / "shared", {"w": b"1"})
    own = version_folder(tmp_path / "own", {"w": b"2"})
    cache = ManifestCache()
    verify_manifest(shared, cache, "uid-a")
    verify_manifest(shared, cache, "uid-b")
    verify_manifest(own, cache, "uid-b")
    cache.forget("uid-b")
    assert len(cache) == 1  # uid-a still uses the shared folder
    cache.forget("uid-a")
    assert len(cache) == 0
