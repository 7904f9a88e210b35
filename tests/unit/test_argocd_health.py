"""The shipped Argo CD health check (manifests/argocd/health.lua) on ModelDeployment objects of
each canary phase, and on the reasons the operator counts as progress. Run in Lua 5.1 (Argo CD's
gopher-lua is 5.1) and in lupa's default Lua; both must agree. The integration test in
tests/integration/test_install.py runs it on objects from the dev cluster."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lupa
import lupa.lua51
import pytest

from tritonop.status import PROGRESS_REASONS

HEALTH_LUA = (Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "health.lua").read_text()


def argocd_health(obj: dict[str, Any]) -> dict[str, str | None]:
    """Run the script the way Argo CD does: a global `obj`, a returned table."""
    results = []
    for runtime in (lupa.lua51.LuaRuntime, lupa.LuaRuntime):
        lua = runtime(unpack_returned_tuples=True)
        lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
        result = lua.execute(HEALTH_LUA)
        results.append({"status": result["status"], "message": result["message"]})
    assert results[0] == results[1], results
    return results[0]


def cond(kind: str, status: str, reason: str, message: str, generation: int = 7) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-12-01T12:00:00Z",
        "observedGeneration": generation,
    }


PODS = ["resnet50-6d8f9c7b5-2xk4p", "resnet50-6d8f9c7b5-9qzvl", "resnet50-6d8f9c7b5-fj7rm", "resnet50-6d8f9c7b5-tm2wd"]


def canary_md(
    phase: str,
    *,
    ready: tuple[str, str, str],
    canary: tuple[str, str, str] | None,
    summary: str,
    message: str,
    step: int = 1,
    weight: int = 25,
    generation: int = 7,
    rollout_generation: int = 7,
    failed_checks: int = 0,
) -> dict[str, Any]:
    """A ModelDeployment switching v2 -> v4 by canary on 4 replicas, steps 25% then 50%."""
    conditions = [
        cond("Ready", *ready),
        cond("RepositoryValid", "True", "Valid", "version 4 found, config parses, checksums match"),
        cond("Scheduled", "True", "Scheduled", "4/4 pods scheduled"),
        cond("ModelLoaded", "True", "Loaded", "4/4 servers loaded the version they serve"),
        cond("Progressing", "True" if phase not in ("RolledBack", "Succeeded") else "False", phase, ready[2]),
        cond("Synced", "True", "Applied", "owned objects match the spec"),
    ]
    if canary is not None:
        conditions.insert(5, cond("CanaryHealthy", *canary))
    canary_pods = PODS[: max(1, len(PODS) * weight // 100)] if phase in ("Progressing", "Paused") else []
    return {
        "apiVersion": "tritonop.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet50", "namespace": "vision", "generation": generation, "uid": "3f0c1d2e"},
        "spec": {
            "model": {"name": "resnet50", "repository": "pvc://models/vision", "version": 4},
            "replicas": 4,
            "rollout": {"strategy": "Canary"},
        },
        "status": {
            "observedGeneration": generation,
            "replicas": 4,
            "readyReplicas": 4,
            "activeVersion": 2,
            "targetVersion": 4,
            "reason": ready[1] if ready[0] != "True" else None,
            "rollout": {
                "phase": phase,
                "stableVersion": 2,
                "canaryVersion": 4,
                "generation": rollout_generation,
                "step": step,
                "steps": 2,
                "weight": weight,
                "canaryPods": canary_pods,
                "measuredShare": 24.6,
                "failedChecks": failed_checks,
                "message": message,
                "summary": summary,
            },
            "conditions": conditions,
        },
    }


WAITING = canary_md(
    "Waiting",
    step=0,
    weight=0,
    ready=("False", "CanaryWaiting", "v4 waiting: a canary needs 2 ready replicas, 1 is ready"),
    canary=("Unknown", "Waiting", "a canary needs 2 ready replicas, 1 is ready"),
    summary="v4 waiting",
    message="a canary needs 2 ready replicas, 1 is ready",
)
PROGRESSING = canary_md(
    "Progressing",
    ready=("False", "CanaryInProgress", "v4 25% 1/2: 1/4 pods serve v4; analysis in 20 s"),
    canary=("True", "Healthy", "v4 p95 23 ms vs v2 22 ms, errors 0.0% vs 0.0% over 30 s"),
    summary="v4 25% 1/2",
    message="1/4 pods serve v4; analysis in 20 s",
)
PAUSED = canary_md(
    "Paused",
    ready=("False", "CanaryPaused", "v4 25% 1/2: too little traffic to judge"),
    canary=("Unknown", "InsufficientTraffic", "v4 served 3 requests in 30 s, 20 needed"),
    summary="v4 25% 1/2",
    message="too little traffic to judge: v4 served 3 requests in 30 s, 20 needed",
)
PROMOTING = canary_md(
    "Promoting",
    step=2,
    weight=100,
    ready=("False", "CanaryInProgress", "v4 promoting: 2/4 pods serve v4"),
    canary=("True", "Healthy", "v4 p95 24 ms vs v2 22 ms, errors 0.0% vs 0.0% over 30 s"),
    summary="v4 promoting",
    message="2/4 pods serve v4",
)
ROLLED_BACK = canary_md(
    "RolledBack",
    ready=(
        "False",
        "RolledBack",
        "RolledBack v4: errors 19.8% on v4 vs 0.0% on v2 over 30 s (limit 1%); every pod serves v2",
    ),
    canary=("False", "ErrorRegression", "errors 19.8% on v4 vs 0.0% on v2 over 30 s (limit 1%)"),
    summary="RolledBack v4",
    message="errors 19.8% on v4 vs 0.0% on v2 over 30 s (limit 1%); every pod serves v2",
    failed_checks=1,
)
SUCCEEDED = canary_md(
    "Succeeded",
    step=2,
    weight=100,
    ready=("True", "Serving", "4/4 replicas serve version 4"),
    canary=("True", "Promoted", "v4 promoted after 2 steps"),
    summary="v4",
    message="v4 promoted after 2 steps",
)


def edited(obj: dict[str, Any], *paths_values: tuple[str, Any]) -> dict[str, Any]:
    """A copy with dotted paths set (conditions by type: `conditions.Ready.reason`)."""
    obj = copy.deepcopy(obj)
    for path, value in paths_values:
        *parents, leaf = path.split(".")
        node: Any = obj
        for key in parents:
            node = next(c for c in node if c["type"] == key) if isinstance(node, list) else node[key]
        node[leaf] = value
    return obj


def rolled_back_then_reverted() -> dict[str, Any]:
    """After the rollback the user set spec.model.version back to 2: a new generation, served."""
    obj = edited(
        ROLLED_BACK,
        ("metadata.generation", 8),
        ("status.observedGeneration", 8),
        ("spec.model.version", 2),
        ("status.targetVersion", 2),
    )
    obj["status"]["conditions"][0] = cond("Ready", "True", "Serving", "4/4 replicas serve version 2", 8)
    return obj


CASES = {
    "waiting": (WAITING, "Progressing", "v4 waiting: a canary needs 2 ready replicas, 1 is ready"),
    "progressing": (PROGRESSING, "Progressing", "v4 25% 1/2: 1/4 pods serve v4; analysis in 20 s"),
    "paused": (
        PAUSED,
        "Progressing",
        "v4 25% 1/2: too little traffic to judge: v4 served 3 requests in 30 s, 20 needed",
    ),
    "promoting": (PROMOTING, "Progressing", "v4 promoting: 2/4 pods serve v4"),
    "rolled back": (
        ROLLED_BACK,
        "Degraded",
        "RolledBack v4: errors 19.8% on v4 vs 0.0% on v2 over 30 s (limit 1%); every pod serves v2",
    ),
    "succeeded": (SUCCEEDED, "Healthy", "4/4 replicas serve version 4"),
    "aborted: the spec went back to v2": (
        edited(
            SUCCEEDED,
            ("status.rollout.phase", "Aborted"),
            ("status.rollout.message", "spec went back to v2; every pod serves v2"),
            ("status.conditions.Ready.message", "4/4 replicas serve version 2"),
        ),
        "Healthy",
        "4/4 replicas serve version 2",
    ),
    "a rollback of an older generation, spec reverted": (rolled_back_then_reverted(), "Healthy", None),
    "a rollback of an older generation, not acted on yet": (
        edited(ROLLED_BACK, ("status.rollout.generation", 6)),
        "Degraded",
        "RolledBack: RolledBack v4: errors 19.8% on v4 vs 0.0% on v2 over 30 s (limit 1%); every pod serves v2",
    ),
    "a failure during a canary says more than the canary": (
        edited(
            PROGRESSING,
            ("status.conditions.Ready.reason", "InsufficientGPU"),
            ("status.conditions.Ready.message", "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."),
        ),
        "Degraded",
        "InsufficientGPU: 0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
    ),
    "a running canary while Ready still says True": (
        edited(PROGRESSING, ("status.conditions.Ready.status", "True"), ("status.conditions.Ready.reason", "Serving")),
        "Progressing",
        "v4 25% 1/2: 1/4 pods serve v4; analysis in 20 s",
    ),
    "a canary recorded for an older generation: Ready decides": (
        edited(PROGRESSING, ("status.rollout.generation", 6)),
        "Progressing",
        "v4 25% 1/2: 1/4 pods serve v4; analysis in 20 s",
    ),
    "no rollout message": (
        edited(PROGRESSING, ("status.rollout.message", "")),
        "Progressing",
        "v4 25% 1/2",
    ),
    "a spec change the operator has not observed": (
        edited(PROGRESSING, ("metadata.generation", 8)),
        "Progressing",
        "Waiting for the operator to observe generation 8",
    ),
    "no status yet": (
        {k: v for k, v in PROGRESSING.items() if k != "status"},
        "Progressing",
        "Waiting for the operator to report status",
    ),
}


@pytest.mark.parametrize(("obj", "health", "message"), CASES.values(), ids=CASES.keys())
def test_health_of_each_rollout_phase(obj: dict[str, Any], health: str, message: str | None) -> None:
    result = argocd_health(obj)
    assert result["status"] == health
    if message is not None:
        assert result["message"] == message


@pytest.mark.parametrize("reason", sorted(PROGRESS_REASONS | {"CanaryInProgress", "CanaryPaused", "CanaryWaiting"}))
def test_health_counts_the_operators_progress_reasons_as_progress(reason: str) -> None:
    obj = edited(
        SUCCEEDED,
        ("status.conditions.Ready.status", "False"),
        ("status.conditions.Ready.reason", reason),
        ("status.conditions.Ready.message", "2/4 replicas serve version 4"),
    )
    del obj["status"]["rollout"]
    assert argocd_health(obj) == {"status": "Progressing", "message": "2/4 replicas serve version 4"}
