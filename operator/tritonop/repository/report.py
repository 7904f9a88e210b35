"""Reading a Triton model repository that this process can see (file:// URIs, mounted PVCs),
or an S3 prefix (repository.s3, in the verification Job): one `inspect` for both.

The operator uses it to validate a repository before loading and to build the config override
from config.pbtxt; storage it cannot read (s3://, gs://, a PVC not mounted here) is verified by a
Job where the bytes are (verification.py) or by Triton itself at load time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from tritonclient.grpc import model_config_pb2

from tritonop.render.model_config import ModelConfigError, from_json, parse_pbtxt, to_json
from tritonop.repository.manifests import MANIFEST_NAME, ManifestCache, verify_manifest

if TYPE_CHECKING:
    from tritonop.repository.s3 import S3Path

Tree: TypeAlias = "Path | S3Path"  # a folder, or a key prefix in S3

VERDICT_LIMIT_BYTES = 4000  # a termination message is cut at 4096 bytes
# Triton's vLLM backend reads its engine arguments from this file in the version folder.
VLLM_ENGINE_ARGS = "model.json"


# status.integrity.result and the RepositoryValid reason when each node's staged copy was hashed
# (spec.model.cache) and the repository's files were not.
VERIFIED_ON_NODES = "VerifiedOnNodes"


@dataclass(frozen=True)
class RepositoryReport:
    """What was verified of a model version, by the operator itself or by a verification Job
    where the bytes are. `readable` False means: nothing verified (Unknown)."""

    readable: bool
    problem: str | None = None  # a condition reason when something is wrong
    message: str = ""
    versions: list[int] = field(default_factory=list)
    config: model_config_pb2.ModelConfig | None = None  # None where only a Job saw the repository
    verified: bool | None = None  # True: every file matches its manifest; False: no manifest; None: not checked
    pending: bool = False  # a verification Job is under way: nothing loads until it answers
    checked_by: str = "operator"  # "operator" or "job/<name>": who read the bytes
    version: int | None = None  # the version checked
    # GPUs one server needs by the model's own files (vLLM's model.json: tensor x pipeline
    # parallel size), and where that was read; None: the files do not say.
    declared_gpus: int | None = None
    declared_by: str = ""
    # spec.model.cache: the files were not hashed here; each node's copy is hashed against the
    # manifest as it is staged, and the servers load only those copies (one read of the bytes, not two).
    hashed_on_nodes: bool = False

    @property
    def verification(self) -> str | None:
        """How the bytes were found (the RepositoryValid reason, status.integrity.result): None
        when they were not checked."""
        if self.verified is None:
            return None
        if not self.verified:
            return "Unverified"
        return VERIFIED_ON_NODES if self.hashed_on_nodes else "Verified"

    def to_verdict(self, version: int | None) -> str:
        """The JSON a verification Job leaves as its termination message (at most 4 KiB). The
        repository's config goes with it when it fits, so the servers load exactly the verified
        version with it (no first load of the repository's config as-is to learn it)."""
        verdict: dict[str, Any] = {
            "problem": self.problem,
            "message": self.message[:1500],
            "versions": self.versions[-50:],
            "verified": self.verified,
            "version": version,
        }
        if self.hashed_on_nodes:
            verdict["hashedOnNodes"] = True
        if self.declared_gpus is not None:
            verdict["declaredGpus"] = self.declared_gpus
            verdict["declaredBy"] = self.declared_by
        if self.config is not None:
            config = json.loads(to_json(self.config))
            if len(json.dumps({**verdict, "config": config})) <= VERDICT_LIMIT_BYTES:
                verdict["config"] = config
        return json.dumps(verdict)

    @classmethod
    def from_verdict(cls, text: str, checked_by: str) -> RepositoryReport:
        try:
            verdict = json.loads(text)
            return cls(
                readable=True,
                problem=verdict.get("problem"),
                message=str(verdict.get("message", "")),
                versions=[int(v) for v in verdict.get("versions", [])],
                verified=verdict.get("verified"),
                checked_by=checked_by,
                version=verdict.get("version"),
                declared_gpus=verdict.get("declaredGpus"),
                declared_by=str(verdict.get("declaredBy", "")),
                hashed_on_nodes=bool(verdict.get("hashedOnNodes", False)),
                config=from_json(verdict["config"]) if verdict.get("config") else None,
            )
        except (ValueError, TypeError, AttributeError, ModelConfigError) as error:
            return cls(True, "VerificationFailed", f"{checked_by} left no readable verdict ({error}): {text[:200]}")

    def fitted_to(self, gpus: int) -> RepositoryReport:
        """This report for servers of `gpus` GPUs each: a model whose files declare another
        parallelism cannot load there (vLLM fails at start-up), so it is a problem, said before
        anything loads."""
        if self.problem is not None or self.declared_gpus is None or self.declared_gpus == gpus:
            return self
        return replace(
            self,
            problem="ParallelismMismatch",
            message=(
                f"{self.declared_by} asks for {self.declared_gpus} GPU(s) per server, "
                f"spec.server.gpus is {gpus}: set spec.server.gpus to {self.declared_gpus} or change the model's "
                f"parallelism"
            ),
        )

    @property
    def blocks_load(self) -> bool:
        """Nothing new is loaded: the check failed, or it has not answered yet."""
        return self.problem is not None or self.pending


def local_path(uri: str) -> Path | None:
    """The local directory for a file:// URI, when this process can see it."""
    if not uri.startswith("file://"):
        return None
    return Path("/" + uri[len("file://") :].strip("/"))


def model_versions(model_dir: Tree) -> list[int]:
    """The numeric version folders of a model folder, ascending."""
    return sorted(int(entry.name) for entry in model_dir.iterdir() if entry.is_dir() and entry.name.isdigit())


def inspect(
    uri: str,
    model_name: str,
    version: int | None,
    *,
    in_cluster: bool = False,
    manifests: ManifestCache | None = None,
    user: str | None = None,
    hash_files: bool = True,
) -> RepositoryReport:
    """What can be verified of this model (version) in the repository at uri.

    manifests: verdicts already reached, so unchanged files are not hashed again (the operator
    passes its process-wide cache and the ModelDeployment's uid as user; without a cache, every
    listed file is read).

    in_cluster: the operator runs in a pod, where a file:// path names a folder on the nodes
    (a hostPath), so a path missing here proves nothing. The caller says so from its settings;
    this function reads no environment. hash_files False (spec.model.cache): the manifest must be
    there, the files are hashed where each node stages them.
    """
    root = local_path(uri)
    if root is None:
        return RepositoryReport(readable=False, message=f"{uri.split('://')[0]}:// storage is validated by Triton")
    if not root.is_dir():
        # In a cluster the path lives on the node, not in the operator's pod: nothing to conclude.
        if in_cluster:
            return RepositoryReport(readable=False, message=f"{root} is on the nodes, not visible to the operator")
        return RepositoryReport(True, "RepositoryNotFound", f"model repository {root} does not exist")
    return inspect_tree(root, model_name, version, manifests, user, hash_files)


def inspect_tree(
    root: Tree,
    model_name: str,
    version: int | None,
    manifests: ManifestCache | None = None,
    user: str | None = None,
    hash_files: bool = True,
) -> RepositoryReport:
    """inspect() once the repository's root is known to exist (a folder, or an S3 prefix)."""
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
    version_dir = model_dir / str(target)
    declared_gpus, declared_by = declared_parallelism(config, version_dir) or (None, "")
    mismatch = verify_manifest(version_dir, manifests, user) if hash_files else None
    if mismatch:
        return RepositoryReport(True, "ChecksumMismatch", mismatch, versions, config, verified=False, version=target)
    verified = (version_dir / MANIFEST_NAME).exists()
    message = f"{model_name} versions {versions} in {root}; version {target} matches its {MANIFEST_NAME}"
    if not hash_files:
        message = (
            f"{model_name} versions {versions} in {root}; version {target} has its {MANIFEST_NAME}: each node's "
            "copy is hashed against it as it is staged (spec.model.cache)"
        )
    if not verified:
        message = (
            f"{model_name} versions {versions} in {root}; version {target} has no {MANIFEST_NAME}: "
            "served unverified (write one with `tritonop repo manifest`)"
        )
    return RepositoryReport(
        True,
        None,
        message,
        versions,
        config,
        verified=verified,
        version=target,
        declared_gpus=declared_gpus,
        declared_by=declared_by,
        hashed_on_nodes=verified and not hash_files,
    )


def declared_parallelism(config: model_config_pb2.ModelConfig, version_dir: Tree) -> tuple[int, str] | None:
    """GPUs one server needs by the model's own files, and where it says so. Triton's vLLM
    backend: tensor_parallel_size x pipeline_parallel_size in the version's model.json (vLLM's
    engine arguments; 1 each when absent). Other backends: not read (None)."""
    if config.backend != "vllm":
        return None
    path = version_dir / VLLM_ENGINE_ARGS
    if not path.is_file():
        return None
    try:
        engine = json.loads(path.read_text())
        tensor = int(engine.get("tensor_parallel_size", 1))
        pipeline = int(engine.get("pipeline_parallel_size", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # vLLM itself reports a model.json it cannot read, at load
    return tensor * pipeline, f"{path.name} (tensor_parallel_size {tensor} x pipeline_parallel_size {pipeline})"
