"""`tritonop repo ...`: export (real torch), list, validate, show/diff; bad input changes nothing."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonop.repository import manifests, report, tools
from tritonop.repository.report import inspect

torch = pytest.importorskip("torch", reason="the torch extra is part of `make test`")
ROOT = Path(__file__).resolve().parents[2]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tritonop", "repo", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_export_writes_next_versions_with_config_and_manifest(tmp_path: Path) -> None:
    first = tools.export("examples.models.mlp:build_v1", tmp_path, "mlp", [4])
    second = tools.export("examples.models.mlp:build_v2", tmp_path, "mlp", [4], quantize="dynamic-int8")
    assert (first.version, second.version) == (1, 2)
    assert first.config_written and not second.config_written
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1", "2", "config.pbtxt"]
    assert set(first.files) == {"model.pt", "model.py"}
    assert tools.validate(tmp_path) == []
    report = inspect(f"file://{tmp_path}", "mlp", 2)
    assert report.problem is None and report.versions == [1, 2]
    config = report.config
    assert config is not None and config.backend == "python" and list(config.input[0].dims) == [4]
    assert list(config.output[0].dims) == [3]
    # The exported TorchScript answers like the module it came from.
    scripted = torch.jit.load(str(tmp_path / "mlp" / "1" / "model.pt"))
    from examples.models.mlp import build_v1

    x = torch.rand(2, 4)
    assert torch.allclose(scripted(x), build_v1()(x))


def test_export_refuses_an_existing_version_and_changes_nothing(tmp_path: Path) -> None:
    tools.export("examples.models.mlp:build_v1", tmp_path, "mlp", [4])
    before = snapshot(tmp_path)
    with pytest.raises(tools.RepositoryError, match="already exists"):
        tools.export("examples.models.mlp:build_v2", tmp_path, "mlp", [4], version=1)
    with pytest.raises(tools.RepositoryError, match=r"input dims \[4\] do not match the export's \[5\]"):
        tools.export("examples.models.mlp:build_v2", tmp_path, "mlp", [5])
    with pytest.raises(tools.RepositoryError, match=r"expected package\.module:factory"):
        tools.export("examples.models.mlp", tmp_path, "mlp", [4])
    assert snapshot(tmp_path) == before
    assert not [p for p in (tmp_path / "mlp").iterdir() if p.name.startswith(".")], "no staging folder left"


def test_validate_reports_each_problem(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "model_repo" / "sleepy", tmp_path / "sleepy")
    tools.export("examples.models.mlp:build_v1", tmp_path, "mlp", [4])
    (tmp_path / "sleepy" / "latest").mkdir()
    (tmp_path / "sleepy" / "2" / "model.py").unlink()
    (tmp_path / "mlp" / "1" / "model.pt").write_bytes(b"tampered")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text("backend: 'python'\nmax_batch_size: [")
    problems = tools.validate(tmp_path)
    assert any("sleepy/latest: version folders must be numbers" in p for p in problems), problems
    assert any("sleepy/2: missing model.py" in p for p in problems), problems
    assert any("mlp/1/model.pt: sha256" in p and "does not match the manifest" in p for p in problems), problems
    assert any("broken/config.pbtxt: config.pbtxt does not parse" in p for p in problems), problems
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("error: ") == len(problems)


def test_list_show_and_diff_from_the_command_line(tmp_path: Path) -> None:
    listing = run_cli("list", "model_repo")
    assert listing.returncode == 0
    assert "sleepy" in listing.stdout and "python" in listing.stdout
    md = tmp_path / "md.yaml"
    md.write_text(
        "apiVersion: tritonop.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: sleepy}\n"
        "spec:\n  model: {repository: 'file:///srv', version: 3, config: {maxBatchSize: 2, instanceCount: 4}}\n"
    )
    shown = run_cli("show", "model_repo", "sleepy", "-f", str(md))
    assert shown.returncode == 0, shown.stderr
    assert "max_batch_size: 2" in shown.stdout and "versions: 3" in shown.stdout and "count: 4" in shown.stdout
    diffed = run_cli("diff", "model_repo", "sleepy", "-f", str(md))
    assert "-max_batch_size: 8" in diffed.stdout and "+max_batch_size: 2" in diffed.stdout
    missing = run_cli("show", "model_repo", "sleepy", "--version", "9")
    assert missing.returncode == 1 and "version 9 not in" in missing.stderr
    help_text = run_cli("--help").stdout
    assert "export" in help_text and "validate" in help_text


def test_a_missing_file_repository_is_not_found_here_and_unknown_in_a_cluster(tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'absent'}"
    here = inspect(uri, "sleepy", None)
    assert here.readable and here.problem == "RepositoryNotFound"
    # In a pod the path is on the nodes: nothing is concluded from its absence in the operator's pod.
    in_pod = inspect(uri, "sleepy", None, in_cluster=True)
    assert not in_pod.readable and in_pod.problem is None and "on the nodes" in in_pod.message
    assert inspect(f"file://{ROOT / 'model_repo'}", "sleepy", 3, in_cluster=True).problem is None


def test_sha256_reads_in_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(256)) * 40
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    reads: list[int] = []
    real_open = Path.open

    def spying_open(self: Path, *args: object, **kwargs: object) -> object:
        handle = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        real_read = handle.read

        def read(size: int = -1) -> bytes:
            reads.append(size)
            return bytes(real_read(size))

        handle.read = read
        return handle

    monkeypatch.setattr(manifests, "HASH_CHUNK_BYTES", 1000)
    monkeypatch.setattr(Path, "open", spying_open)
    assert manifests.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert reads and all(0 < size <= 1000 for size in reads), reads
    assert tools.sha256_file is manifests.sha256_file and tools.model_versions is report.model_versions
