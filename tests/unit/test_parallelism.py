"""A generative model's declared parallelism against the servers' GPUs (repository/report.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonop.repository.report import RepositoryReport, inspect

VLLM_CONFIG = 'backend: "vllm"\nmodel_transaction_policy { decoupled: true }\n'


def vllm_model(root: Path, engine: dict[str, object] | str, config: str = VLLM_CONFIG) -> Path:
    version = root / "llm" / "1"
    version.mkdir(parents=True)
    (root / "llm" / "config.pbtxt").write_text(config)
    (version / "model.json").write_text(engine if isinstance(engine, str) else json.dumps(engine))
    return root


@pytest.mark.parametrize(
    ("engine", "declared"),
    [
        ({"model": "m", "tensor_parallel_size": 2}, 2),
        ({"model": "m", "tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 4),
        ({"model": "m"}, 1),  # vLLM's defaults: one GPU
        ("{not json", None),  # vLLM reports it at load; nothing is declared
    ],
)
def test_the_gpus_a_vllm_model_json_declares(tmp_path: Path, engine: dict[str, object] | str, declared: int) -> None:
    report = inspect(f"file://{vllm_model(tmp_path, engine)}", "llm", None)
    assert (report.problem, report.declared_gpus) == (None, declared)


def test_other_backends_declare_nothing(tmp_path: Path) -> None:
    root = vllm_model(tmp_path, {"tensor_parallel_size": 4}, config='backend: "python"\n')
    assert inspect(f"file://{root}", "llm", None).declared_gpus is None


def test_a_mismatch_names_both_figures_and_blocks_the_load(tmp_path: Path) -> None:
    report = inspect(f"file://{vllm_model(tmp_path, {'tensor_parallel_size': 2})}", "llm", None)
    assert report.fitted_to(2) == report
    fitted = report.fitted_to(1)
    assert fitted.problem == "ParallelismMismatch" and fitted.blocks_load
    assert fitted.message == (
        "model.json (tensor_parallel_size 2 x pipeline_parallel_size 1) asks for 2 GPU(s) per server, "
        "spec.server.gpus is 1: set spec.server.gpus to 2 or change the model's parallelism"
    )


def test_a_checksum_problem_stays_the_problem_said() -> None:
    broken = RepositoryReport(True, "ChecksumMismatch", "model.json: sha256 does not match", declared_gpus=2)
    assert broken.fitted_to(1) == broken


def test_the_declared_parallelism_survives_a_verification_job_verdict() -> None:
    report = RepositoryReport(True, None, "ok", [1], declared_gpus=4, declared_by="model.json (...)", version=1)
    again = RepositoryReport.from_verdict(report.to_verdict(1), "job/v")
    assert (again.declared_gpus, again.declared_by) == (4, "model.json (...)")
    assert again.fitted_to(2).problem == "ParallelismMismatch"
