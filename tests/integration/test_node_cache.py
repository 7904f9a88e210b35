"""spec.model.cache on the dev cluster: versions staged on the node by a Job (the real
`tritonop cache stage`, run by the pod runner), the servers loading the node's verified copy.

Cold (staged from the store), warm (a second pod on the node starts with the store unreadable),
prefetched switch (the new version on the node before the switch, one load), a tampered cached
copy staged again before it loads, and a budget too small (said, and the pods still serve). The
repository is a hostPath PersistentVolume, like the cache: the operator cannot read either, as
in a real cluster; the namespace enforces Pod Security `restricted`."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from devcluster.volumes import host_path_claim
from tritonop.repository import tools

from .conftest import OperatorProcess, restricted_namespace_named
from .helpers import (
    MODEL_REPO,
    apply_md,
    events_for,
    get_md,
    infer_version,
    lifecycle,
    md_condition,
    md_pods,
    pod_log,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
NODE = "gpu-node-0"


@pytest.fixture
def restricted(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    name = restricted_namespace_named(core, f"t-cache-{uuid.uuid4().hex[:6]}")
    yield name
    cluster.kubectl("delete", "md", "--all", "-n", name, "--wait=false", check=False)
    core.delete_namespace(name)
    for volume in (f"models-{name}", f"cache-{name}"):
        cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


def spec(version: int, replicas: int, budget: str = "64Mi") -> dict[str, Any]:
    return {
        "model": {
            "name": "sleepy",
            "repository": "pvc://models",
            "version": version,
            "cache": {"claimName": "model-cache", "budget": budget},
        },
        "replicas": replicas,
        # Every pod on one node: the second one finds the version in that node's cache.
        "server": {"gpus": 0, "nodeSelector": {"kubernetes.io/hostname": NODE}},
    }


def storage(
    cluster: DevCluster, core: client.CoreV1Api, namespace: str, tmp_path: Path, versions: tuple[int, ...]
) -> tuple[Path, Path]:
    """The store (sleepy's versions, each with its manifest) and the cache folder, each a hostPath
    PersistentVolume bound to its claim (models, model-cache)."""
    store = tmp_path / "store"
    for version in versions:
        shutil.copytree(MODEL_REPO / "sleepy" / str(min(version, 3)), store / "sleepy" / str(version))
        tools.write_manifest(store / "sleepy" / str(version))
    shutil.copy(MODEL_REPO / "sleepy" / "config.pbtxt", store / "sleepy" / "config.pbtxt")
    cache = tmp_path / "cache"
    cache.mkdir()
    objects = [
        *host_path_claim(namespace, "models", f"models-{namespace}", store, "ReadOnlyMany"),
        *host_path_claim(namespace, "model-cache", f"cache-{namespace}", cache, "ReadWriteMany"),
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    wait_until(
        "claims bound",
        lambda: all(
            core.read_namespaced_persistent_volume_claim(c, namespace).status.phase == "Bound"
            for c in ("models", "model-cache")
        ),
        timeout=60,
    )
    return store, cache


def cache_entry(md: dict[str, Any], version: int, node: str = NODE) -> dict[str, Any]:
    return next(e for e in md["status"].get("cache") or [] if e["version"] == version and e["node"] == node)


def serving_pods(core: client.CoreV1Api, namespace: str, version: int, count: int) -> bool:
    pods = md_pods(core, namespace, "sleepy")
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    return len(ready) == count and all(infer_version(p.status.pod_ip) == version for p in ready)


def test_versions_are_staged_on_the_node_and_served_from_there(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    restricted: str,
    tmp_path: Path,
) -> None:
    namespace = restricted
    store, cache = storage(cluster, core, namespace, tmp_path, (2, 3, 4))
    node_cache = cache / NODE

    # Cold: staged from the store by a Job on the node, then loaded from the node's copy.
    apply_md(cluster, namespace, "sleepy", spec(2, 1))
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=180)
    assert cache_entry(md, 2)["state"] == "Staged", md["status"]["cache"]
    assert md_condition(md, "ModelCached")["status"] == "True"
    # The verification Job read no file (the staging Job hashed the node's copy): one read, not two.
    assert md["status"]["integrity"]["result"] == "VerifiedOnNodes", md["status"]["integrity"]
    assert md_condition(md, "RepositoryValid")["reason"] == "VerifiedOnNodes"
    header, row = cluster.kubectl("get", "md", "sleepy", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert row[header.index("CACHED") :].split()[0] == "True", (header, row)  # columns are aligned; some empty
    (staged,) = (node_cache / "versions").iterdir()
    assert staged.name.startswith("sleepy-2-")
    link = node_cache / "repos" / f"{namespace}.sleepy" / "sleepy" / "2"
    assert link.is_symlink() and link.resolve() == staged.resolve()
    (first,) = md_pods(core, namespace, "sleepy")
    assert infer_version(first.status.pod_ip) == 2
    assert any(e.reason == "VersionStaged" and NODE in e.message for e in events_for(core, namespace, "sleepy"))

    # Warm: the store's version 2 is unreadable; a second pod on the node starts from the cache.
    hidden = store / "sleepy" / "2-hidden"
    (store / "sleepy" / "2").rename(hidden)
    apply_md(cluster, namespace, "sleepy", spec(2, 2))
    wait_until("two pods serve version 2", lambda: serving_pods(core, namespace, 2, 2), timeout=120)
    md = get_md(api, namespace, "sleepy")
    assert cache_entry(md, 2)["state"] == "Staged"  # the same verdict: no second Job
    hidden.rename(store / "sleepy" / "2")

    # Prefetched switch: version 3 on the node first, then one load per pod.
    apply_md(cluster, namespace, "sleepy", spec(3, 2))
    wait_until("two pods serve version 3", lambda: serving_pods(core, namespace, 3, 2), timeout=180)
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=60)
    assert cache_entry(md, 3)["state"] == "Staged"
    for pod in md_pods(core, namespace, "sleepy"):
        assert lifecycle(pod_log(cluster, pod).read_text(), "sleepy").loading[3] == 1

    # A tampered cached copy of version 2 is noticed and staged again before it loads.
    cached_two = next(p for p in (node_cache / "versions").iterdir() if p.name.startswith("sleepy-2-"))
    model_py = cached_two / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed on the node after staging\n")
    apply_md(cluster, namespace, "sleepy", spec(2, 2))
    wait_until("two pods serve version 2 again", lambda: serving_pods(core, namespace, 2, 2), timeout=180)
    md = get_md(api, namespace, "sleepy")
    assert cache_entry(md, 2)["state"] == "Staged", md["status"]["cache"]
    assert "changed after staging" in cache_entry(md, 2)["message"], md["status"]["cache"]
    restaged = next(p for p in (node_cache / "versions").iterdir() if p.name.startswith("sleepy-2-"))
    assert (restaged / "model.py").read_bytes() == (store / "sleepy" / "2" / "model.py").read_bytes()

    # A budget smaller than the version: said (node, budget, size), and the pods still serve it.
    apply_md(cluster, namespace, "sleepy", spec(4, 2, budget="1Ki"))
    md = wait_for_condition(api, namespace, "sleepy", "ModelCached", "False", "BudgetTooSmall", timeout=180)
    message = md_condition(md, "ModelCached")["message"]
    assert NODE in message and "budget" in message, message
    wait_until("two pods serve version 4 outside the budget", lambda: serving_pods(core, namespace, 4, 2), 120)


GPU_NODES = ("gpu-node-0", "gpu-node-1")


def test_eligible_nodes_hold_the_version_before_a_pod_is_placed_there(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    restricted: str,
    tmp_path: Path,
) -> None:
    """cache.nodes EligibleNodes: one replica, and both GPU nodes get the version; the second
    replica, kept off the first one's node, starts there from the copy, with no staging Job."""
    namespace = restricted
    _, cache = storage(cluster, core, namespace, tmp_path, (2,))
    body = spec(2, 1)
    body["model"]["cache"]["nodes"] = "EligibleNodes"
    apart = {"labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "sleepy"}},
             "topologyKey": "kubernetes.io/hostname"}  # fmt: skip
    body["server"] = {
        "gpus": 0,
        "nodeSelector": {"nvidia.com/gpu.present": "true"},  # the kwok GPU nodes; not cpu-node-0, not the real node
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [apart]}},
    }
    apply_md(cluster, namespace, "sleepy", body)
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=180)

    def staged_everywhere() -> bool:
        md = get_md(api, namespace, "sleepy")
        return all(
            any(
                e["node"] == node and e["version"] == 2 and e["state"] == "Staged"
                for e in md["status"].get("cache") or []
            )
            for node in GPU_NODES
        )

    wait_until("version 2 staged on both GPU nodes", staged_everywhere, timeout=120)
    (first,) = md_pods(core, namespace, "sleepy")
    idle = next(node for node in GPU_NODES if node != first.spec.node_name)
    link = cache / idle / "repos" / f"{namespace}.sleepy" / "sleepy" / "2"
    assert link.is_symlink() and (link / "model.py").is_file()  # on a node where no pod runs
    batch = client.BatchV1Api(api)
    jobs = {job.metadata.name for job in batch.list_namespaced_job(namespace).items}

    apply_md(cluster, namespace, "sleepy", {**body, "replicas": 2})
    wait_until("two pods serve version 2", lambda: serving_pods(core, namespace, 2, 2), timeout=120)
    assert {p.spec.node_name for p in md_pods(core, namespace, "sleepy")} == set(GPU_NODES)
    assert {job.metadata.name for job in batch.list_namespaced_job(namespace).items} == jobs  # no new staging
    md = get_md(api, namespace, "sleepy")
    assert cache_entry(md, 2, idle)["state"] == "Staged"
    assert md["status"]["startup"]["pod"] != first.metadata.name
    assert md["status"]["startup"].get("stagingSeconds") == 0  # its node held the version already
