"""Reading a Triton model repository that this process can see (file:// URIs, mounted PVCs).

The operator uses it to validate a repository before loading and to build the config override
from config.pbtxt; storage it cannot read (s3://, gs://, a PVC not mounted here) is validated by
Triton itself at load time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from tritonop.render.model_config import ModelConfigError, parse_pbtxt

MANIFEST_NAME = "SHA256SUMS.json"
HASH_CHUNK_BYTES = 1 << 20  # sha256_file reads this much at a time: memory stays bounded for any file size


@dataclass(frozen=True)
class RepositoryReport:
    """What the operator could verify. `readable` False means: nothing verified (Unknown)."""

    readable: bool
    problem: str | None = None  # a condition reason when something is wrong
    message: str = ""
    versions: list[int] = field(default_factory=list)
    config: model_config_pb2.ModelConfig | None = None


def local_path(uri: str) -> Path | None:
    """The local directory for a file:// URI, when this process can see it."""
    if not uri.startswith("file://"):
        return None
    return Path("/" + uri[len("file://") :].strip("/"))


def model_versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a model folder, ascending."""
    return sorted(int(entry.name) for entry in model_dir.iterdir() if entry.is_dir() and entry.name.isdigit())


def sha256_file(path: Path) -> str:
    """The file's sha256 as hex, read in chunks of HASH_CHUNK_BYTES (model files can be many GiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_manifest(version_dir: Path) -> str | None:
    """None when the version has no manifest or every file matches it; else what is wrong."""
    manifest_path = version_dir / MANIFEST_NAME
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{manifest_path}: unreadable manifest ({error})"
    for relative, expected in sorted(files.items()):
        path = version_dir / relative
        if not path.is_file():
            return f"{path}: listed in {MANIFEST_NAME} but missing"
        digest = sha256_file(path)
        if digest != expected:
            return f"{path}: sha256 {digest[:12]}… does not match the manifest's {str(expected)[:12]}…"
    return None


def inspect(uri: str, model_name: str, version: int | None, *, in_cluster: bool = False) -> RepositoryReport:
    """What can be verified of this model (version) in the repository at uri.

    in_cluster: the operator runs in a pod, where a file:// path names a folder on the nodes
    (a hostPath), so a path missing here proves nothing. The caller says so from its settings;
    this function reads no environment.
    """
    root = local_path(uri)
    if root is None:
        return RepositoryReport(readable=False, message=f"{uri.split('://')[0]}:// storage is validated by Triton")
    if not root.is_dir():
        # In a cluster the path lives on the node, not in the operator's pod: nothing to conclude.
        if in_cluster:
            return RepositoryReport(readable=False, message=f"{root} is on the nodes, not visible to the operator")
        return RepositoryReport(True, "RepositoryNotFound", f"model repository {root} does not exist")
    model_dir = root / model_name
    if not model_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        return RepositoryReport(
            True, "ModelNotFound", f"no model {model_name!r} in {root} (models there: {', '.join(present) or 'none'})"
        )
    versions = model_versions(model_dir)
    if not versions:
        return RepositoryReport(True, "VersionNotFound", f"{model_dir} has no numeric version folders")
    if version is not None and version not in versions:
        listed = ", ".join(map(str, versions))
        return RepositoryReport(True, "VersionNotFound", f"version {version} not in {model_dir} (versions: {listed})")
    config_path = model_dir / "config.pbtxt"
    try:
        config = parse_pbtxt(config_path.read_text())
    except OSError as error:
        return RepositoryReport(True, "InvalidConfig", f"{config_path}: {error.strerror}", versions)
    except ModelConfigError as error:
        return RepositoryReport(True, "InvalidConfig", f"{config_path}: {error}", versions)
    target = version if version is not None else versions[-1]
    mismatch = verify_manifest(model_dir / str(target))
    if mismatch:
        return RepositoryReport(True, "ChecksumMismatch", mismatch, versions, config)
    return RepositoryReport(True, None, f"{model_name} versions {versions} in {root}", versions, config)
