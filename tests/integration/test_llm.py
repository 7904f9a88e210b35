"""Generative models on the dev cluster with real Triton: what the operator checks before a
large language model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from devcluster.cluster import DevCluster, wait_until
from loadgen import write_model
from tests.integration.conftest import OperatorProcess
from tests.integration.helpers import (
    apply_md,
    events_for,
    get_md,
    md_condition,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
MODEL = "llm"
# Triton's vLLM backend: a decoupled model whose engine arguments are the version's model.json.
VLLM_CONFIG = """backend: "vllm"
model_transaction_policy { decoupled: true }
instance_group [ { count: 1, kind: KIND_MODEL } ]
"""


def vllm_repository(root: Path, tensor_parallel_size: int) -> Path:
    write_model(root, MODEL, VLLM_CONFIG, {})
    version = root / MODEL / "1"
    version.mkdir()
    engine = {"model": "facebook/opt-125m", "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": 0.5}
    (version / "model.json").write_text(json.dumps(engine))
    return root


def llm_spec(repository: Path, gpus: int) -> dict[str, object]:
    return {"model": {"name": MODEL, "repository": f"file://{repository}"}, "server": {"gpus": gpus}, "replicas": 1}


def test_a_parallelism_the_servers_cannot_give_is_said_before_anything_loads(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """model.json asks vLLM for tensor parallelism 2; each server has 1 GPU. vLLM would fail at
    start-up on the GPU node, after the image pull and the weights download: the operator says
    so from the files, naming both figures, and loads nothing."""
    repository = vllm_repository(tmp_path / "repo", tensor_parallel_size=2)
    apply_md(cluster, namespace, MODEL, llm_spec(repository, gpus=1))

    md = wait_for_condition(api, namespace, MODEL, "RepositoryValid", "False", "ParallelismMismatch")
    message = md_condition(md, "RepositoryValid")["message"]
    assert "tensor_parallel_size 2" in message and "spec.server.gpus is 1" in message, message
    assert md_condition(md, "Ready")["status"] == "False"
    wait_until(
        "a Warning event ParallelismMismatch",
        lambda: any(
            e.type == "Warning" and e.reason == "ParallelismMismatch" for e in events_for(core, namespace, MODEL)
        ),
        timeout=30,
    )
    # Nothing was asked to load: no load failed, no version is active.
    assert not any(e.reason == "LoadFailed" for e in events_for(core, namespace, MODEL))
    assert get_md(api, namespace, MODEL).get("status", {}).get("activeVersion") is None

    # Two GPUs per server: the files and the spec agree, the repository is valid again (this CPU
    # Triton has no vLLM backend, so the load itself then fails: that is Triton's to say).
    apply_md(cluster, namespace, MODEL, llm_spec(repository, gpus=2))
    md = wait_for_condition(api, namespace, MODEL, "RepositoryValid", "True")
    assert "ParallelismMismatch" not in md_condition(md, "RepositoryValid").get("reason", "")
