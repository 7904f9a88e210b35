"""A new pod's start, measured by phase (status.startup, tritonop_pod_startup_seconds), on the dev
cluster: real API server timestamps, the pod runner's container start, real Triton loads."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until

from .conftest import OperatorProcess
from .helpers import apply_md, get_md, md_pods, sleepy_spec, wait_for_condition

pytestmark = pytest.mark.integration

PHASES = ("schedulingSeconds", "containerSeconds", "serverSeconds", "loadSeconds", "readySeconds")


def startup_counts(operator: OperatorProcess, namespace: str) -> dict[str, float]:
    """tritonop_pod_startup_seconds' observations for this namespace, by phase."""
    return {
        key.split('phase="')[1].split('"')[0]: value
        for key, value in operator.metrics().items()
        if key.startswith("tritonop_pod_startup_seconds_count{") and f'namespace="{namespace}"' in key
    }


def ready_since(pod: client.V1Pod) -> datetime.datetime:
    return next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready" and c.status == "True")


def test_status_shows_how_the_new_pods_started(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")

    def measured() -> dict[str, Any]:
        return dict(get_md(api, namespace, "sleepy")["status"].get("startup") or {})

    # Both pods are measured by the reconcile that sees them Ready (the one that says Serving).
    wait_until("both starts in status.startup", lambda: len(measured().get("recentTotalSeconds", [])) == 2, 30)
    startup = measured()
    pods = {pod.metadata.name: pod for pod in md_pods(core, namespace, "sleepy")}
    assert startup["pod"] in pods, startup
    assert "stagingSeconds" not in startup  # no node cache: not measured
    phases = [startup[phase] for phase in PHASES]
    assert min(phases) >= 0, startup
    assert startup["totalSeconds"] >= startup["loadSeconds"] > 0, startup
    assert abs(sum(phases) - startup["totalSeconds"]) <= 2, startup
    assert startup["recentTotalSeconds"][-1] == startup["totalSeconds"]
    # Read from the pod's own stamps (whole seconds): creation to its Ready transition.
    pod = pods[startup["pod"]]
    since = ready_since(pod)
    assert startup["readyAt"] == since.strftime("%Y-%m-%dT%H:%M:%SZ"), (startup, pod.status.conditions)
    assert abs((since - pod.metadata.creation_timestamp).total_seconds() - startup["totalSeconds"]) <= 2, startup

    # One observation per phase per pod, however many reconciles follow (resync: 5 s here).
    counts = startup_counts(operator, namespace)
    assert counts == dict.fromkeys(("scheduling", "container", "server", "load", "ready", "total"), 2.0), counts
    reconciles_key = 'tritonop_reconciles_total{result="success"}'
    reconciles = operator.metrics()[reconciles_key]
    wait_until("two more reconciles", lambda: operator.metrics()[reconciles_key] >= reconciles + 2, timeout=30)
    assert startup_counts(operator, namespace) == counts

    # Released with the ModelDeployment: no series left.
    cluster.kubectl("delete", "md", "sleepy", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_until("the start-up series removed", lambda: not startup_counts(operator, namespace), timeout=30)
