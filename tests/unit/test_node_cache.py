"""The node cache's stager (tritonop.cache): real files under tmp_path, real subprocesses for the
concurrent and killed stagers, a real tmpfs for a full disk; the pure decisions by tables."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonop.cache.plan import (
    Entry,
    FileRecord,
    NoRoom,
    cache_key,
    changed_objects,
    first_change,
    plan_eviction,
    stale_versions,
)
from tritonop.cache.stage import Request, stage
from tritonop.cache.verdict import Verdict
from tritonop.repository.manifests import MANIFEST_NAME

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
OWNER = "ns.md"


# -- helpers ---------------------------------------------------------------------------------
def write_version(repo: Path, model: str, version: int, files: dict[str, bytes]) -> Path:
    """A version folder with its manifest, and the model's config.pbtxt."""
    folder = repo / model / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (repo / model / "config.pbtxt").write_text(f'name: "{model}"\nbackend: "python"\n')
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    digests = {relative: hashlib.sha256(data).hexdigest() for relative, data in files.items()}
    (folder / MANIFEST_NAME).write_text(json.dumps({"algorithm": "sha256", "files": digests}))
    return folder


def size_of(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def run(repo: Path, root: Path, model: str = "m", version: int = 1, **options: object) -> Verdict:
    request = Request(
        str(repo),
        model,
        version,
        root,
        str(options.get("owner", OWNER)),
        int(options.get("budget", 1 << 30)),  # type: ignore[call-overload]
        frozenset(str(v) for v in options.get("keep", ())),  # type: ignore[attr-defined]
        options.get("display_root"),  # type: ignore[arg-type]
    )
    verdict = stage(request, environ={})
    assert Verdict.from_json(verdict.to_json()) == verdict
    return verdict


def same_tree(a: Path, b: Path) -> bool:
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    return files(a) == files(b)


def cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(OPERATOR)}
    command = [sys.executable, "-m", "tritonop", "cache", "stage", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repository = tmp_path / "repo"
    write_version(repository, "m", 1, {"model.py": b"one" * 100, "weights/w.bin": b"\x01" * 1000})
    return repository


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# -- pure decisions --------------------------------------------------------------------------
def entry(key: str, size: int, last_used: float) -> Entry:
    return Entry(key, "file:///r", "m", "1", "0" * 64, size, 0.0, last_used, ())


@pytest.mark.parametrize(
    ("entries", "pinned", "budget", "size", "want"),
    [
        ([], set(), 100, 50, []),
        ([entry("a", 40, 1)], set(), 100, 50, []),
        ([entry("a", 40, 2), entry("b", 40, 1)], set(), 100, 50, ["b"]),  # least recently used first
        ([entry("a", 40, 1), entry("b", 40, 2)], set(), 100, 100, ["a", "b"]),
        ([entry("a", 40, 1), entry("b", 40, 2)], {"a"}, 100, 50, ["b"]),  # pinned skipped, newer goes
        ([entry("a", 60, 1), entry("b", 30, 2)], {"a"}, 100, 50, NoRoom("NoRoom", 100, 90, 60, 50)),
        ([entry("a", 10, 1)], set(), 100, 101, NoRoom("BudgetTooSmall", 100, 10, 0, 101)),
        ([entry("a", 50, 1), entry("b", 50, 1)], set(), 100, 50, ["a"]),  # ties: by key
    ],
)
def test_plan_eviction(
    entries: list[Entry], pinned: set[str], budget: int, size: int, want: list[str] | NoRoom
) -> None:
    assert plan_eviction(entries, pinned, budget, size) == want


def test_no_room_messages_name_the_numbers() -> None:
    assert "budget of 100 bytes" in NoRoom("BudgetTooSmall", 100, 0, 0, 101).message
    message = NoRoom("NoRoom", 100, 90, 60, 50).message
    assert all(str(n) in message for n in (100, 90, 60, 50))


def test_cache_key_is_content_addressed() -> None:
    assert cache_key("m", 1, b"x") == cache_key("m", 1, b"x") == f"m-1-{hashlib.sha256(b'x').hexdigest()[:16]}"
    assert cache_key("m", 1, b"x") != cache_key("m", 1, b"y")


@pytest.mark.parametrize(
    ("observed", "want"),
    [
        ({"a": (1, 2, 3), "b": (4, 5, 6)}, None),
        ({"a": (1, 2, 3), "b": (4, 9, 6)}, "b"),  # rewritten (mtime)
        ({"a": (1, 2, 7), "b": (4, 5, 6)}, "a"),  # replaced (inode)
        ({"a": (1, 2, 3), "b": None}, "b"),  # removed
    ],
)
def test_first_change(observed: dict[str, tuple[int, int, int] | None], want: str | None) -> None:
    files = (FileRecord("a", 1, 2, 3), FileRecord("b", 4, 5, 6))
    assert first_change(files, observed) == want


def test_changed_objects_and_stale_versions() -> None:
    files = (FileRecord("a", 1, 2, 3, "e1"), FileRecord("b", 1, 2, 3, "e2"), FileRecord("c", 1, 2, 3))
    assert changed_objects(files, {"a": "e1", "b": "e2"}) == []
    assert changed_objects(files, {"a": "x", "b": None}) == ["a", "b"]
    assert stale_versions(["1", "2", "3", "4"], "3", {"1"}) == ["2", "4"]


def test_verdict_stays_under_4_kib() -> None:
    verdict = Verdict("staged", None, "x" * 10000, "k", evicted=[f"model-{i}-{'0' * 16}" for i in range(500)])
    assert len(verdict.to_json().encode()) <= 4000
    assert Verdict.from_json(verdict.to_json()).result == "staged"
    with pytest.raises(ValueError, match="not a cache verdict"):
        Verdict.from_json("Traceback (most recent call last):")


# -- staging ---------------------------------------------------------------------------------
def test_cold_stage_then_hit_reads_no_source_bytes(repo: Path, root: Path) -> None:
    first = run(repo, root, display_root="pvc://models/repo")
    assert first.result == "staged" and first.reason is None
    key = first.key
    assert key is not None and key.startswith("m-1-")
    assert first.bytes == size_of(repo / "m" / "1") == first.usedBytes
    assert same_tree(root / "versions" / key, repo / "m" / "1")
    link = root / "repos" / OWNER / "m" / "1"
    assert os.readlink(link) == f"../../../versions/{key}"  # relative: the folder is mounted elsewhere too
    assert same_tree(link, repo / "m" / "1")
    assert (root / "repos" / OWNER / "m" / "config.pbtxt").read_bytes() == (repo / "m" / "config.pbtxt").read_bytes()
    recorded = json.loads((root / "entries" / f"{key}.json").read_text())
    assert recorded["source"] == "pvc://models/repo/m/1"
    assert {f["path"] for f in recorded["files"]} == {"model.py", "weights/w.bin", MANIFEST_NAME}
    assert json.loads((root / "pins" / f"{OWNER}.json").read_text())["keys"] == [key]
    assert list((root / "tmp").iterdir()) == []

    for path in (repo / "m" / "1").rglob("*"):  # data files unreadable: a hit may read the manifest only
        if path.is_file() and path.name != MANIFEST_NAME:
            path.chmod(0)
    used_before = recorded["last_used"]
    time.sleep(0.01)
    second = run(repo, root)
    assert (second.result, second.key, second.seconds, second.evicted) == ("hit", key, 0.0, [])
    assert json.loads((root / "entries" / f"{key}.json").read_text())["last_used"] > used_before
    if os.geteuid() == 0:  # root reads files whatever their mode: the test then relies on seconds == 0 above
        return
    assert not os.access(repo / "m" / "1" / "model.py", os.R_OK)


def test_two_owners_share_one_entry(repo: Path, root: Path) -> None:
    a = run(repo, root, owner="a.x")
    b = run(repo, root, owner="b.y")
    assert (a.result, b.result, a.key) == ("staged", "hit", b.key)
    assert [p.name for p in (root / "versions").iterdir()] == [a.key]
    assert os.readlink(root / "repos" / "b.y" / "m" / "1") == f"../../../versions/{a.key}"


def test_lru_eviction_order(tmp_path: Path, root: Path) -> None:
    """Unpinned entries go least recently used first; an owner's own previous version is unpinned
    once it moves on (its pins are recomputed by the run, not read from its old pins file)."""
    repo = tmp_path / "repo"
    for version in (1, 2, 3, 4):
        write_version(repo, "m", version, {"w.bin": bytes([version]) * 1000})
    budget = 3 * size_of(repo / "m" / "1")

    def at(version: int, owner: str) -> Verdict:
        time.sleep(0.01)  # distinct last_used
        return run(repo, root, version=version, owner=owner, budget=budget)

    keys = {version: at(version, "o.o").key for version in (1, 2, 3)}  # o ends on 3: 1 and 2 unpinned
    assert at(1, "p.p").result == "hit"  # 1 used after 2
    assert at(3, "p.p").result == "hit"  # p moves on to 3: pins only 3
    fourth = at(4, "o.o")
    assert (fourth.result, fourth.evicted, fourth.usedBytes) == ("staged", [keys[2]], budget)
    again = at(2, "o.o")  # o moves from 4 to 2: 1 (used before 4) goes, 3 stays pinned by p
    assert (again.result, again.evicted) == ("staged", [keys[1]])
    assert sorted(p.name for p in (root / "versions").iterdir()) == sorted([keys[3], fourth.key, again.key])
    assert not (root / "repos" / "o.o" / "m" / "4").exists()  # not kept: its link went
