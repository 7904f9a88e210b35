"""Model versions switched inside running Triton servers: no pod restarts, no failed requests."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from loadgen import LoadGenerator

from .conftest import OperatorProcess
from .helpers import (
    MODEL_REPO,
    Lifecycle,
    apply_md,
    get_md,
    infer_version,
    lifecycle,
    md_condition,
    md_pods,
    pod_log,
    ready_ips,
    sleepy_spec,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
LOAD_RATE = 30.0


def spec_for(version: int, replicas: int, strategy: str = "InPlace", repository: str | None = None) -> dict:
    spec = sleepy_spec(replicas=replicas, rollout={"strategy": strategy})
    spec["model"]["version"] = version
    if repository:
        spec["model"]["repository"] = repository
    return spec


def pod_identities(core: client.CoreV1Api, namespace: str) -> dict[str, int]:
    return {
        pod.metadata.uid: pod.status.container_statuses[0].restart_count for pod in md_pods(core, namespace, "sleepy")
    }


def switch_under_load(
    cluster: DevCluster, api: client.ApiClient, core: client.CoreV1Api, namespace: str, replicas: int, strategy: str
) -> tuple[float, int, int, dict[int, int]]:
    apply_md(cluster, namespace, "sleepy", spec_for(2, replicas, strategy))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", LOAD_RATE, max_seconds=300) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        started = time.monotonic()
        apply_md(cluster, namespace, "sleepy", spec_for(3, replicas, strategy))

        def switched() -> bool:
            md = get_md(api, namespace, "sleepy")
            ready = md_condition(md, "Ready")
            return (
                md["status"].get("activeVersion") == 3
                and ready.get("status") == "True"
                and ready.get("observedGeneration") == md["metadata"]["generation"]
                and len(md_pods(core, namespace, "sleepy")) == replicas
            )

        wait_until("every replica on version 3", switched, timeout=240)
        elapsed = time.monotonic() - started
        after = load.stats.sent
        wait_until("more requests after the switch", lambda: load.stats.sent >= after + 20, timeout=30)
    stats = load.stats
    print(
        f"\n{strategy} switch 2 -> 3 with {replicas} replicas: {elapsed:.1f}s; requests sent {stats.sent}, "
        f"failed {stats.failed}; served by version {dict(stats.versions)}"
    )
    return elapsed, stats.sent, stats.failed, dict(stats.versions)


@pytest.mark.parametrize("replicas", [2, 4])
def test_in_place_switch_under_load_fails_no_request(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    replicas: int,
) -> None:
    apply_md(cluster, namespace, "sleepy", spec_for(2, replicas))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    before = pod_identities(core, namespace)
    _, _, failed, versions = switch_under_load(cluster, api, core, namespace, replicas, "InPlace")
    assert failed == 0
    assert versions.get(2, 0) > 0 and versions.get(3, 0) > 0
    assert pod_identities(core, namespace) == before, "pods were replaced or restarted"
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}
    md = get_md(api, namespace, "sleepy")
    assert (md["status"]["activeVersion"], md["status"]["previousVersion"], md["status"]["targetVersion"]) == (3, 2, 3)
    # The load time Triton took, so probes and spareReplicas can be sized from it.
    last_load = md["status"]["lastLoad"]
    assert (last_load["version"], last_load["mode"]) == (3, "SideBySide"), last_load
    assert last_load["seconds"] > 0 and last_load["pod"] in {
        pod.metadata.name for pod in md_pods(core, namespace, "sleepy")
    }


def fresh_copy(root: Path) -> Path:
    """model_repo as a new deployment finds it: no __pycache__ in sleepy's version folders. Each
    server's python stub writes one into a version's folder the first time it loads it, after
    Triton read the folder's timestamps, and Triton 2.51 reloads a READY version that a later load
    request lists when its folder changed: the case where a switch by a side-by-side load
    ([old, new]) and a retire ([new]) made three loads per pod."""
    shutil.copytree(MODEL_REPO, root, ignore=shutil.ignore_patterns("__pycache__"))
    root.parent.chmod(0o755)
    return root


def test_each_switch_loads_the_new_version_once_and_never_reloads_the_old_one(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """From each pod's own Triton log: per switch (2 -> 3, then back 3 -> 2), one load request
    listing the new version only ("loading: sleepy:<new>" once, "loading: sleepy:<old>" never),
    one model instance created (a load, not an update), the old version freed once; no request
    failed, no pod restarted."""
    uri = f"file://{fresh_copy(tmp_path / 'repo')}"
    replicas = 2
    apply_md(cluster, namespace, "sleepy", spec_for(2, replicas, repository=uri))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    before = pod_identities(core, namespace)
    logs = {pod.metadata.name: pod_log(cluster, pod) for pod in md_pods(core, namespace, "sleepy")}
    assert len(logs) == replicas and all(path.exists() for path in logs.values()), logs
    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", LOAD_RATE, max_seconds=300) as load:

        def switch(old: int, new: int) -> None:
            offsets = {name: path.stat().st_size for name, path in logs.items()}

            def since(name: str) -> Lifecycle:
                return lifecycle(logs[name].read_bytes()[offsets[name] :].decode(errors="replace"), "sleepy")

            def switched() -> bool:
                md = get_md(api, namespace, "sleepy")
                ready = md_condition(md, "Ready")
                return (
                    md["status"].get("activeVersion") == new
                    and ready.get("status") == "True"
                    and ready.get("observedGeneration") == md["metadata"]["generation"]
                )

            served = load.stats.versions[new]
            apply_md(cluster, namespace, "sleepy", spec_for(new, replicas, repository=uri))
            wait_until(f"every replica on version {new}", switched, timeout=240)
            # Triton frees the old version once its in-flight requests are done.
            wait_until(f"version {old} freed on every pod", lambda: all(since(n).unloaded[old] for n in logs), 60)
            wait_until(f"requests served by {new}", lambda: load.stats.versions[new] >= served + 20, timeout=30)
            for name in logs:
                assert since(name) == Lifecycle(Counter({new: 1}), 1, Counter({old: 1})), (
                    f"{name} switching {old} -> {new}: {since(name)}"
                )

        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        switch(2, 3)
        switch(3, 2)
    assert load.stats.failed == 0, load.stats.errors.most_common(3)
    assert load.stats.versions[2] > 0 and load.stats.versions[3] > 0
    assert pod_identities(core, namespace) == before, "pods were replaced or restarted"
    last_load = get_md(api, namespace, "sleepy")["status"]["lastLoad"]
    assert (last_load["version"], last_load["mode"]) == (2, "SideBySide"), last_load


def test_rolling_strategy_replaces_pods(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", spec_for(2, 2, "Rolling"))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    before = set(pod_identities(core, namespace))
    switch_under_load(cluster, api, core, namespace, 2, "Rolling")
    assert not before & set(pod_identities(core, namespace)), "Rolling must replace every pod"
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}


def test_rollback_is_setting_the_old_version_again(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", spec_for(3, 2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    apply_md(cluster, namespace, "sleepy", spec_for(1, 2))
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    assert (md["status"]["activeVersion"], md["status"]["previousVersion"]) == (1, 3)
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {1}


def broken_copy(root: Path) -> Path:
    """model_repo with version 3 of sleepy corrupt (its model.py raises at load)."""
    fresh_copy(root)
    (root / "sleepy" / "3" / "model.py").write_text(
        "raise ImportError('corrupt weights file: truncated at byte 4096')\n"
    )
    return root


def test_failed_load_keeps_the_old_version_and_recovers_when_fixed(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = broken_copy(tmp_path / "repo")
    uri = f"file://{repository}"
    apply_md(cluster, namespace, "sleepy", spec_for(2, 2, repository=uri))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", LOAD_RATE, max_seconds=300) as load:
        apply_md(cluster, namespace, "sleepy", spec_for(3, 2, repository=uri))
        md = wait_for_condition(api, namespace, "sleepy", "ModelLoaded", "False", "LoadFailed")
        assert "corrupt weights file: truncated at byte 4096" in md_condition(md, "ModelLoaded")["message"]
        assert md["status"]["activeVersion"] == 2
        assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {2}

        # Fixing the repository is enough: the operator retries the load by itself.
        shutil.copy(MODEL_REPO / "sleepy" / "3" / "model.py", repository / "sleepy" / "3" / "model.py")
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=120)
        assert md["status"]["activeVersion"] == 3
    assert load.stats.failed == 0, load.stats.errors.most_common(3)
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}


def test_checksum_mismatch_loads_nothing(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(MODEL_REPO, repository)
    tmp_path.chmod(0o755)
    manifest = {"files": {"model.py": "0" * 64}}
    (repository / "sleepy" / "3" / "SHA256SUMS.json").write_text(json.dumps(manifest))
    uri = f"file://{repository}"
    apply_md(cluster, namespace, "sleepy", spec_for(2, 1, repository=uri))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    apply_md(cluster, namespace, "sleepy", spec_for(3, 1, repository=uri))
    md = wait_for_condition(api, namespace, "sleepy", "RepositoryValid", "False", "ChecksumMismatch")
    assert "does not match the manifest" in md_condition(md, "RepositoryValid")["message"]
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {2}


def test_config_overrides_apply_in_place(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", spec_for(2, 2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    before = pod_identities(core, namespace)
    spec = spec_for(2, 2)
    spec["model"]["config"] = {
        "maxBatchSize": 4,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 250, "preferredBatchSizes": [2, 4]},
        "instanceCount": 2,
    }
    apply_md(cluster, namespace, "sleepy", spec)

    def applied(ip: str) -> bool:
        with urllib.request.urlopen(f"http://{ip}:8000/v2/models/sleepy/config", timeout=5) as response:
            config = json.load(response)
        return (
            config["max_batch_size"] == 4
            and config["dynamic_batching"]["preferred_batch_size"] == [2, 4]
            and int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 250
            and config["instance_group"][0]["count"] == 2
        )

    wait_until("overrides loaded on every server", lambda: all(map(applied, ready_ips(core, namespace, "sleepy"))), 60)
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    assert pod_identities(core, namespace) == before


def test_pods_started_later_serve_the_target_version(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", spec_for(2, 1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    apply_md(cluster, namespace, "sleepy", spec_for(3, 1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    apply_md(cluster, namespace, "sleepy", spec_for(3, 3))
    wait_until("3 ready replicas", lambda: len(ready_ips(core, namespace, "sleepy")) == 3, timeout=90)
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}
    victim = md_pods(core, namespace, "sleepy")[0]
    core.delete_namespaced_pod(victim.metadata.name, namespace)
    wait_until(
        "a replacement pod ready",
        lambda: (
            len(ready_ips(core, namespace, "sleepy")) == 3
            and victim.metadata.uid not in {p.metadata.uid for p in md_pods(core, namespace, "sleepy")}
        ),
        timeout=90,
    )
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}


def test_model_control_api_refuses_calls_without_the_key(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", spec_for(2, 1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    ip = ready_ips(core, namespace, "sleepy")[0]
    for action in ("load", "unload"):
        request = urllib.request.Request(
            f"http://{ip}:8000/v2/repository/models/sleepy/{action}", data=b"{}", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        assert "This API is restricted" in refused.value.read().decode()
    assert infer_version(ip) == 2
