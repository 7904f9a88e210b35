"""A version that does not fit beside the old one in device memory: switched pod by pod, the
others serving, no failed requests; with one replica only when downtime is allowed in spec."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from loadgen import LoadGenerator

from .conftest import OperatorProcess
from .helpers import (
    apply_md,
    events_for,
    get_md,
    infer_version,
    md_condition,
    md_pods,
    one_copy_repository,
    ready_ips,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
MODEL = "onecopy"


def spec(repository: Path, version: int, replicas: int, **rollout: object) -> dict[str, object]:
    return {
        "model": {"name": MODEL, "repository": f"file://{repository}", "version": version},
        "replicas": replicas,
        "rollout": {"strategy": "InPlace", **rollout},
    }


def test_a_version_that_does_not_fit_twice_is_swapped_pod_by_pod_under_load(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = one_copy_repository(tmp_path / "repo")
    apply_md(cluster, namespace, MODEL, spec(repository, 1, 3))
    wait_for_condition(api, namespace, MODEL, "Ready", "True", timeout=120)
    pods = {pod.metadata.uid for pod in md_pods(core, namespace, MODEL)}
    least_ready = [3]
    stop = threading.Event()

    def count_ready() -> None:
        while not stop.wait(0.2):
            least_ready[0] = min(least_ready[0], len(ready_ips(core, namespace, MODEL)))

    watcher = threading.Thread(target=count_ready, daemon=True)
    with LoadGenerator(lambda: ready_ips(core, namespace, MODEL), MODEL, 20, max_seconds=300) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        watcher.start()
        apply_md(cluster, namespace, MODEL, spec(repository, 2, 3))
        md = wait_for_condition(api, namespace, MODEL, "Ready", "True", "Serving", timeout=240)
        wait_until("load goes on after the swap", lambda: load.stats.versions[2] >= 20, timeout=30)
    stop.set()
    watcher.join()
    assert md["status"]["activeVersion"] == 2
    assert load.stats.failed == 0, load.stats.errors
    assert least_ready[0] == 2, "more than one pod was out of service at once"
    assert {pod.metadata.uid for pod in md_pods(core, namespace, MODEL)} == pods, "pods were replaced"
    assert all(infer_version(ip, MODEL) == 2 for ip in ready_ips(core, namespace, MODEL))
    events = sorted(events_for(core, namespace, MODEL), key=lambda e: e.first_timestamp)
    reasons = [e.reason for e in events]
    assert "VersionDoesNotFitTwice" in reasons
    swapped = [e for e in events if e.reason == "SwappingVersion" and "out of service meanwhile" in e.message]
    assert len(swapped) == 3, [(e.reason, e.message) for e in events]
    assert reasons.index("SwapPending") < reasons.index("SwappingVersion"), reasons
    last_load = md["status"]["lastLoad"]
    assert (last_load["version"], last_load["mode"]) == (2, "Swap"), last_load
    assert last_load["seconds"] > 0 and last_load["pod"] in {
        pod.metadata.name for pod in md_pods(core, namespace, MODEL)
    }


def test_one_replica_swaps_only_when_downtime_is_allowed(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = one_copy_repository(tmp_path / "repo")
    apply_md(cluster, namespace, MODEL, spec(repository, 1, 1))
    wait_for_condition(api, namespace, MODEL, "Ready", "True", timeout=120)
    (pod,) = md_pods(core, namespace, MODEL)

    apply_md(cluster, namespace, MODEL, spec(repository, 2, 1))
    md = wait_for_condition(api, namespace, MODEL, "ModelLoaded", "False", "InsufficientMemoryForSwitch", 120)
    message = md_condition(md, "ModelLoaded")["message"]
    assert "spec.rollout.allowSwapDowntime" in message and "CUDA out of memory" in message
    assert md["status"]["activeVersion"] == 1 and infer_version(pod.status.pod_ip, MODEL) == 1

    apply_md(cluster, namespace, MODEL, spec(repository, 2, 1, allowSwapDowntime=True))
    wait_until(
        "status says the swap will take the only replica out of service",
        lambda: (
            "does not serve during the swap"
            in md_condition(get_md(api, namespace, MODEL), "Progressing").get("message", "")
        ),
        timeout=60,
    )

    # Ready=True (Serving) for this generation alone does not mean the swap is over: the one pod
    # still serves version 1 until the swap unloads it, so wait for the status that names 2.
    def swapped() -> bool:
        md = get_md(api, namespace, MODEL)
        ready = md_condition(md, "Ready")
        return (
            (ready.get("status"), ready.get("reason")) == ("True", "Serving")
            and ready.get("observedGeneration") == md["metadata"]["generation"]
            and md["status"].get("activeVersion") == 2
        )

    wait_until("Ready (Serving) with version 2 active after the swap", swapped, timeout=120)
    assert infer_version(pod.status.pod_ip, MODEL) == 2
    assert [p.metadata.uid for p in md_pods(core, namespace, MODEL)] == [pod.metadata.uid]
