"""Model repository tooling behind `tritonop repo ...`: export, list, validate, show, diff.

torch is an optional extra (`pip install tritonop[torch]`), imported only by `export`.
Every write goes to a temporary folder beside its destination and is renamed into place, so a
crash never leaves a half-written version folder.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from tritonop.api.spec import ModelConfigOverrides, ModelDeployment
from tritonop.render.model_config import ModelConfigError, effective_config, parse_pbtxt
from tritonop.repository.manifests import MANIFEST_NAME, sha256_file, verify_manifest
from tritonop.repository.report import model_versions

TORCHSCRIPT_FILE = "model.pt"
# The python-backend loader placed beside each exported TorchScript file (it runs on CPU). Serving
# the same folder with `backend: "pytorch"` on a GPU image is untested; a dynamic-int8 version is
# CPU-only whatever the backend (PyTorch's dynamic quantization has no CUDA kernels).
LOADER = '''"""Serves the TorchScript module in this folder (written by `tritonop repo export`)."""

import json
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.model = torch.jit.load(str(folder / "model.pt"), map_location="cpu").eval()
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        with torch.inference_mode():
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                result = self.model(torch.from_numpy(data)).numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, result)]))
        return responses
'''


class RepositoryError(Exception):
    """A problem with a repository or an export request, said in one line."""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_manifest(version_dir: Path) -> dict[str, str]:
    files = {
        str(path.relative_to(version_dir)): sha256_file(path)
        for path in sorted(version_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME and "__pycache__" not in path.parts
    }
    (version_dir / MANIFEST_NAME).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n")
    return files


# -- export ----------------------------------------------------------------------------------
def load_module(source: str) -> Any:
    """A torch module from `package.module:factory` (called with no arguments) or a TorchScript file."""
    import torch

    if source.endswith((".pt", ".pth", ".ts")) or Path(source).is_file():
        if not Path(source).is_file():
            raise RepositoryError(f"{source}: no such TorchScript file")
        return torch.jit.load(source, map_location="cpu")  # type: ignore[no-untyped-call]
    module_name, _, attribute = source.partition(":")
    if not attribute:
        raise RepositoryError(f"{source}: expected package.module:factory or a TorchScript file")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise RepositoryError(f"{source}: {error}") from error
    return factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory


def generated_config(
    model_name: str, input_shape: list[int], output_shape: list[int], max_batch_size: int
) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    config.name = model_name
    config.backend = "python"
    config.max_batch_size = max_batch_size
    tensor_input = config.input.add()
    tensor_input.name, tensor_input.data_type = "INPUT0", model_config_pb2.TYPE_FP32
    tensor_input.dims.extend(input_shape)
    tensor_output = config.output.add()
    tensor_output.name, tensor_output.data_type = "OUTPUT0", model_config_pb2.TYPE_FP32
    tensor_output.dims.extend(output_shape)
    if max_batch_size > 1:
        config.dynamic_batching.max_queue_delay_microseconds = 1000
    group = config.instance_group.add()
    group.count, group.kind = 1, model_config_pb2.ModelInstanceGroup.KIND_CPU
    return config


@dataclass(frozen=True)
class ExportResult:
    version_dir: Path
    version: int
    files: dict[str, str]
    config_written: bool


def export(
    source: str,
    repository: Path,
    model_name: str,
    input_shape: list[int],
    max_batch_size: int = 8,
    quantize: str | None = None,
    version: int | None = None,
) -> ExportResult:
    import torch

    model_dir = repository / model_name
    existing = model_versions(model_dir) if model_dir.is_dir() else []
    version = version if version is not None else (existing[-1] + 1 if existing else 1)
    if (model_dir / str(version)).exists():
        raise RepositoryError(f"{model_dir / str(version)} already exists: versions are immutable, export a new one")
    # Check what can be checked before the slow part, so a bad request fails fast and writes nothing.
    config_path = model_dir / "config.pbtxt"
    existing_config = parse_pbtxt(config_path.read_text()) if config_path.exists() else None
    if existing_config is not None:
        declared = [list(t.dims) for t in existing_config.input]
        if declared and declared[0] != input_shape:
            raise RepositoryError(f"{config_path}: input dims {declared[0]} do not match the export's {input_shape}")
    progress(f"loading {source}")
    module = load_module(source)
    if quantize == "dynamic-int8":
        if isinstance(module, torch.jit.ScriptModule):
            raise RepositoryError("--quantize needs a Python module, not an already-scripted TorchScript file")
        progress("quantizing Linear layers to dynamic int8")
        quantize_dynamic = torch.ao.quantization.quantize_dynamic
        module = quantize_dynamic(module.eval(), {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    elif quantize is not None:
        raise RepositoryError(f"--quantize {quantize}: allowed values are dynamic-int8")
    example = torch.zeros(1, *input_shape)
    progress(f"tracing with an example input of shape {list(example.shape)}")
    with torch.inference_mode():
        if isinstance(module, torch.jit.ScriptModule):
            scripted = module
        else:
            with warnings.catch_warnings():  # TorchScript is what Triton's libtorch backend loads
                warnings.simplefilter("ignore", FutureWarning)
                scripted = torch.jit.trace(module.eval(), example)  # type: ignore[no-untyped-call]
        output_shape = list(scripted(example).shape[1:])

    config_written = existing_config is None
    config = existing_config or generated_config(model_name, input_shape, output_shape, max_batch_size)

    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=model_dir))
    try:
        progress(f"writing version {version} of {model_name}")
        scripted.save(str(staging / TORCHSCRIPT_FILE))
        (staging / "model.py").write_text(LOADER)
        progress("computing sha256 manifest")
        files = write_manifest(staging)
        if config_written:
            tmp_config = model_dir / ".config.pbtxt.tmp"
            tmp_config.write_text(text_format.MessageToString(config))
            os.replace(tmp_config, config_path)
        os.chmod(staging, 0o755)
        os.rename(staging, model_dir / str(version))  # atomic: the version appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"exported {model_dir / str(version)}")
    return ExportResult(model_dir / str(version), version, files, config_written)


# -- list / validate / show ------------------------------------------------------------------
def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_models(repository: Path) -> list[dict[str, Any]]:
    if not repository.is_dir():
        raise RepositoryError(f"{repository}: no such directory")
    rows = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        backend = "?"
        config_path = model_dir / "config.pbtxt"
        if config_path.exists():
            try:
                config = parse_pbtxt(config_path.read_text())
                backend = config.backend or config.platform or "?"
            except ModelConfigError:
                backend = "invalid config"
        for version in model_versions(model_dir):
            version_dir = model_dir / str(version)
            rows.append(
                {
                    "model": model_dir.name,
                    "version": version,
                    "bytes": folder_size(version_dir),
                    "backend": backend,
                    "manifest": (version_dir / MANIFEST_NAME).exists(),
                }
            )
    return rows


def validate(repository: Path, model: str | None = None) -> list[str]:
    """Every problem found, one message each (empty: valid)."""
    if not repository.is_dir():
        return [f"{repository}: no such directory"]
    problems: list[str] = []
    models = [repository / model] if model else sorted(p for p in repository.iterdir() if p.is_dir())
    for model_dir in models:
        if model_dir.name.startswith("."):
            continue
        if not model_dir.is_dir():
            problems.append(f"{model_dir}: no such model")
            continue
        config_path = model_dir / "config.pbtxt"
        config = None
        if not config_path.exists():
            problems.append(f"{config_path}: missing (Triton needs a config for explicit loads)")
        else:
            try:
                config = parse_pbtxt(config_path.read_text())
            except ModelConfigError as error:
                problems.append(f"{config_path}: {error}")
            if config is not None and config.name and config.name != model_dir.name:
                problems.append(f"{config_path}: name {config.name!r} differs from the folder {model_dir.name!r}")
        for entry in sorted(model_dir.iterdir()):
            if (
                entry.is_dir()
                and not entry.name.isdigit()
                and not entry.name.startswith(".")
                and entry.name != "configs"
            ):
                problems.append(f"{entry}: version folders must be numbers")
        versions = model_versions(model_dir)
        if not versions:
            problems.append(f"{model_dir}: no version folders")
        backend = (config.backend or config.platform) if config else ""
        for version in versions:
            version_dir = model_dir / str(version)
            expected = {"python": "model.py", "pytorch": TORCHSCRIPT_FILE, "pytorch_libtorch": TORCHSCRIPT_FILE}
            needed = expected.get(backend)
            if needed and not (version_dir / needed).exists():
                problems.append(f"{version_dir}: missing {needed} (backend {backend})")
            mismatch = verify_manifest(version_dir)
            if mismatch:
                problems.append(mismatch)
    return problems


def overrides_from(md_file: Path | None) -> tuple[ModelConfigOverrides | None, int | None, str | None]:
    if md_file is None:
        return None, None, None
    import yaml

    body = yaml.safe_load(md_file.read_text())
    body.setdefault("metadata", {}).setdefault("namespace", "default")
    body["metadata"].setdefault("uid", "local")
    try:
        md = ModelDeployment.from_body(body)
    except ValidationError as error:
        raise RepositoryError(f"{md_file}: not a valid ModelDeployment: {error}") from error
    return md.spec.model.config, md.spec.model.version, md.model_name


def show(repository: Path, model: str, version: int | None, overrides: ModelConfigOverrides | None) -> str:
    """The config Triton will load for this model (and version) with these overrides, as pbtxt."""
    model_dir = repository / model
    config_path = model_dir / "config.pbtxt"
    if not config_path.exists():
        raise RepositoryError(f"{config_path}: missing")
    versions = model_versions(model_dir)
    if version is not None and version not in versions:
        raise RepositoryError(f"version {version} not in {model_dir} (versions: {versions})")
    target = version if version is not None else (versions[-1] if versions else None)
    config = effective_config(parse_pbtxt(config_path.read_text()), model, overrides, [target] if target else None)
    return str(text_format.MessageToString(config))


def diff(repository: Path, model: str, version: int | None, overrides: ModelConfigOverrides | None) -> str:
    base = text_format.MessageToString(parse_pbtxt((repository / model / "config.pbtxt").read_text()))
    effective = show(repository, model, version, overrides)
    lines = difflib.unified_diff(
        base.splitlines(keepends=True),
        effective.splitlines(keepends=True),
        fromfile=f"{model}/config.pbtxt",
        tofile=f"{model} as Triton loads it",
    )
    return "".join(lines)
