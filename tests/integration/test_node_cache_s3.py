"""The node cache's stager reading an s3:// repository from a real MinIO server (the binary
`make minio` builds), started here directly: the stager needs no cluster. An object overwritten
in the store after staging is reported (storeChanged) from a listing alone, the cached
(verified) bytes still being served."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import DEFAULT_CACHE_DIR
from devcluster.minio import MinioServer, minio_binary, start_minio
from tests.unit.test_node_cache import same_tree, write_version
from tritonop.cache.stage import Request, stage
from tritonop.repository.manifests import MANIFEST_NAME

pytestmark = pytest.mark.integration
ACCESS_KEY, SECRET_KEY, BUCKET = "tritonop-test", "tritonop-test-secret", "models"
ENVIRON = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """A MinIO server with an empty bucket (as test_s3's `minio` fixture starts it)."""
    binary = minio_binary(DEFAULT_CACHE_DIR)
    if not binary.exists():
        pytest.skip(f"{binary} missing: `make minio` builds it")
    running = start_minio(binary, tmp_path_factory.mktemp("minio-data"), ACCESS_KEY, SECRET_KEY, BUCKET)
    yield running
    running.stop()


@pytest.fixture
def endpoint(server: MinioServer) -> str:
    return server.endpoint


def make_client(endpoint: str) -> Any:
    from minio import Minio

    return Minio(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)


def upload(endpoint: str, local: Path, prefix: str) -> None:
    s3 = make_client(endpoint)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3.fput_object(BUCKET, f"{prefix}/{path.relative_to(local)}", str(path))


def test_stage_from_s3_then_an_overwritten_object_is_reported(endpoint: str, tmp_path: Path) -> None:
    local = tmp_path / "repo"
    write_version(local, "m", 1, {"model.py": b"print(1)\n", "weights/w.bin": b"\x01" * 5000})
    upload(endpoint, local, "cache-test/repo")
    uri = f"s3://http://{endpoint}/{BUCKET}/cache-test/repo"
    root = tmp_path / "cache"
    request = Request(uri, "m", 1, root, "ns.md", 1 << 30)

    first = stage(request, ENVIRON)
    assert (first.result, first.storeChanged) == ("staged", False), first.message
    assert same_tree(root / "repos" / "ns.md" / "m" / "1", local / "m" / "1")
    recorded = json.loads((root / "entries" / f"{first.key}.json").read_text())
    assert recorded["source"] == f"{uri}/m/1"
    assert all(record.get("etag") for record in recorded["files"])

    assert stage(request, ENVIRON).storeChanged is False  # an unchanged store: a plain hit
    make_client(endpoint).put_object(BUCKET, "cache-test/repo/m/1/weights/w.bin", io.BytesIO(b"\x02" * 5000), 5000)
    second = stage(request, ENVIRON)
    assert (second.result, second.key, second.storeChanged) == ("hit", first.key, True)
    assert "weights/w.bin" in second.message
    cached = root / "versions" / str(first.key) / "weights" / "w.bin"
    assert cached.read_bytes() == b"\x01" * 5000  # the verified bytes are still what the pods load

    cached.chmod(0o644)
    cached.write_bytes(b"tampered")  # a restage must now read the store's new bytes: they fail the manifest
    third = stage(request, ENVIRON)
    assert (third.result, third.reason) == ("failed", "IntegrityMismatch")
    assert f"{uri}/m/1/weights/w.bin" in third.message
    assert not (root / "versions" / str(first.key)).exists()


def test_missing_manifest_in_s3_is_named(endpoint: str, tmp_path: Path) -> None:
    local = tmp_path / "repo"
    write_version(local, "m", 2, {"model.py": b"x"})
    (local / "m" / "2" / MANIFEST_NAME).unlink()
    upload(endpoint, local, "cache-test/nomanifest")
    uri = f"s3://http://{endpoint}/{BUCKET}/cache-test/nomanifest"
    verdict = stage(Request(uri, "m", 2, tmp_path / "cache", "ns.md", 1 << 30), ENVIRON)
    assert (verdict.result, verdict.reason) == ("failed", "NoManifest")
    assert f"{uri}/m/2/{MANIFEST_NAME}" in verdict.message
