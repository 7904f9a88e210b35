"""repository.s3: Triton's S3 URI forms, and the Path operations inspect() needs over a listing.
The listing and the bodies come from a stand-in client here (pure code); the real S3 server is
tests/integration/test_s3.py's MinIO."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest

from tritonop.repository.report import inspect_tree
from tritonop.repository.s3 import S3Location, S3Path


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("s3://models/vision", S3Location("models", "vision", None)),
        ("s3://models", S3Location("models", "", None)),
        ("s3://minio.storage:9000/models/vision/", S3Location("models", "vision", "minio.storage:9000")),
        ("s3://http://127.0.0.1:9000/models", S3Location("models", "", "127.0.0.1:9000", secure=False)),
        ("s3://https://rgw.example.com:443/m/a/b", S3Location("m", "a/b", "rgw.example.com:443")),
    ],
)
def test_uri_forms(uri: str, want: S3Location) -> None:
    assert S3Location.parse(uri) == want


@pytest.mark.parametrize("uri", ["s3://Bucket/x", "s3://http://minio/models", "gs://b/x", "s3://minio:port/m"])
def test_malformed_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="not s3://bucket/path"):
        S3Location.parse(uri)


class Response(io.BytesIO):
    def release_conn(self) -> None:
        pass


class StandInClient:
    """Answers get_object from a dict (what S3Path asks of the MinIO SDK's client)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    def get_object(self, bucket: str, key: str) -> Any:
        self.reads.append(f"{bucket}/{key}")
        return Response(self.objects[key])


def tree(objects: dict[str, bytes]) -> tuple[S3Path, StandInClient]:
    client = StandInClient({f"repo/{k}": v for k, v in objects.items()})
    location = S3Location("bucket", "repo", "127.0.0.1:9000", secure=False)
    return S3Path("s3://http://127.0.0.1:9000/bucket/repo", frozenset(objects), client, location), client


CONFIG = b'name: "m"\nbackend: "python"\nmax_batch_size: 8\n'


def manifest(files: dict[str, bytes]) -> bytes:
    return json.dumps({"files": {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}}).encode()


def test_inspect_reads_an_s3_prefix_like_a_folder() -> None:
    weights = {"model.py": b"print(1)\n", "w/weights.bin": b"\0" * 5000}
    root, client = tree(
        {
            "m/config.pbtxt": CONFIG,
            "m/1/model.py": b"old\n",
            "m/2/model.py": weights["model.py"],
            "m/2/w/weights.bin": weights["w/weights.bin"],
            "m/2/SHA256SUMS.json": manifest(weights),
        }
    )
    report = inspect_tree(root, "m", 2)
    assert (report.problem, report.verified, report.versions, report.version) == (None, True, [1, 2], 2)
    assert "s3://http://127.0.0.1:9000/bucket/repo" in report.message
    assert sorted(client.reads) == [
        f"bucket/repo/m/{k}" for k in ("2/SHA256SUMS.json", "2/model.py", "2/w/weights.bin", "config.pbtxt")
    ]


def test_a_tampered_or_missing_object_is_named() -> None:
    good = {"model.py": b"print(1)\n"}
    tampered, _ = tree({"m/config.pbtxt": CONFIG, "m/3/model.py": b"evil\n", "m/3/SHA256SUMS.json": manifest(good)})
    report = inspect_tree(tampered, "m", 3)
    assert report.problem == "ChecksumMismatch"
    assert "s3://http://127.0.0.1:9000/bucket/repo/m/3/model.py" in report.message
    missing, _ = tree({"m/config.pbtxt": CONFIG, "m/3/other.py": b"x", "m/3/SHA256SUMS.json": manifest(good)})
    report = inspect_tree(missing, "m", 3)
    assert (
        report.problem == "ChecksumMismatch" and "m/3/model.py: listed in SHA256SUMS.json but missing" in report.message
    )
    absent, _ = tree({"m/config.pbtxt": CONFIG, "m/1/model.py": b"x"})
    assert inspect_tree(absent, "m", 4).problem == "VersionNotFound"
    assert inspect_tree(absent, "other", 1).problem == "ModelNotFound"
