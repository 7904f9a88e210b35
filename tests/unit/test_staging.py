"""spec.model.cache, the operator's side: which (node, version) pairs are needed, what may not be
evicted, verdicts -> status.cache, the load gate, Events and the ModelCached condition (pure)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.unit.fakes import FakeApiServer
from tritonop.api.spec import ModelDeployment
from tritonop.api.status import ModelDeploymentStatus, NodeCacheStatus
from tritonop.api.validation import quantity_bytes
from tritonop.events import Event
from tritonop.facts import Facts, PodFacts, StagingGate
from tritonop.k8s import KubeError
from tritonop.repository.report import RepositoryReport
from tritonop.staging import NodeList, cache_events, entry_of, keep_on, needs, prefetch_nodes, stage
from tritonop.status import compute_status

NOW = "2026-12-05T12:00:00Z"


def pod(name: str, node: str | None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}}


def test_needs_the_version_of_every_scheduled_pod_on_its_node() -> None:
    pods = [pod("a", "n1"), pod("b", "n1"), pod("c", "n2"), pod("pending", None), pod("gone", "n3", deleting=True)]
    assert needs(pods, None, 3) == {3: frozenset({"n1", "n2"})}
    # A canary: the canary pod's version on its node only.
    assert needs(pods, {"c": 4}, 3) == {3: frozenset({"n1"}), 4: frozenset({"n2"})}
    assert needs(pods, None, None) == {}


def test_keep_is_what_the_nodes_pods_need_and_what_serves_now() -> None:
    needed = {3: frozenset({"n1", "n2"}), 4: frozenset({"n2"})}
    assert keep_on("n1", needed, serving=2) == [2, 3]
    assert keep_on("n2", needed, serving=3) == [3, 4]
    assert keep_on("n3", needed, serving=None) == []


def verdict(result: str, **fields: Any) -> str:
    return json.dumps({"result": result, "reason": None, "message": "", "key": "m-3-ab", "bytes": 2**30,
                       "seconds": 1.234, "budgetBytes": 2**31, "usedBytes": 2**30, "evicted": [],
                       "storeChanged": False, **fields})  # fmt: skip


@pytest.mark.parametrize(
    ("text", "state", "reason"),
    [
        (verdict("staged"), "Staged", None),
        (verdict("hit"), "Cached", None),
        (
            verdict("no-room", reason="NoRoom", message="budget 2 GiB, 1.5 GiB pinned, version 1 GiB"),
            "NoRoom",
            "NoRoom",
        ),
        (
            verdict("failed", reason="IntegrityMismatch", message="weights.bin sha256 differs"),
            "Failed",
            "IntegrityMismatch",
        ),
        ("Error: python not found", "Failed", "StagingFailed"),
    ],
)
def test_a_verdict_becomes_the_nodes_entry(text: str, state: str, reason: str | None) -> None:
    entry = entry_of(text, "n1", 3, "job-1", NOW)
    assert (entry.node, entry.version, entry.state, entry.reason, entry.job, entry.at) == (
        "n1",
        3,
        state,
        reason,
        "job-1",
        NOW,
    )
    if state != "Failed" or reason != "StagingFailed":
        assert entry.bytes == 2**30 and entry.seconds == 1.23


def test_a_store_changed_after_staging_is_said() -> None:
    entry = entry_of(verdict("hit", storeChanged=True, message="1/model.py changed in the store"), "n1", 3, "j", NOW)
    assert entry.state == "Cached"
    assert "the store changed after staging: the verified copy is served" in entry.message


def test_gate_new_servers_wait_for_their_node_switches_for_every_node() -> None:
    gate = StagingGate(frozenset({("n1", 4)}), {4: frozenset({"n1", "n2"})})
    assert not gate.blocks("n1", 4, serving=False)  # a new server on a node that holds it: load
    assert gate.blocks("n2", 4, serving=False)  # its node does not hold it yet
    assert gate.blocks("n1", 4, serving=True)  # a switch waits until every node holds it (prefetch)
    assert not StagingGate(frozenset({("n1", 4), ("n2", 4)}), {4: frozenset({"n1", "n2"})}).blocks("n1", 4, True)
    assert gate.blocks("n1", None, serving=False)  # the version is not known yet


def entry(node: str, state: str, **fields: Any) -> NodeCacheStatus:
    return NodeCacheStatus(node=node, version=3, state=state, **fields)


def test_events_for_verdicts_that_changed() -> None:
    old = [entry("n1", "Staging"), entry("n2", "Cached")]
    new = [
        entry("n1", "Staged", bytes=3 * 2**29, seconds=4.5),
        entry("n2", "Cached"),
        entry("n3", "NoRoom", reason="BudgetTooSmall", message="budget 1 GiB < version 1.5 GiB"),
        entry("n4", "Staging"),
    ]
    assert cache_events(old, new) == [
        Event("Normal", "VersionStaged", "version 3 on node n1: 1.50 GiB copied and verified in 4.5 s"),
        Event("Warning", "BudgetTooSmall", "version 3 on node n3: budget 1 GiB < version 1.5 GiB"),
    ]


def cached_md() -> ModelDeployment:
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2},
            "spec": {
                "model": {"repository": "pvc://models", "version": 3, "cache": {"claimName": "c", "budget": "1Gi"}},
                "replicas": 2,
            },
        }
    )


VALID = RepositoryReport(readable=True, message="ok", versions=[3])
SERVING = PodFacts(name="a", ready=True, live=True, ready_versions=(3,), config_current=True)
WAITING = PodFacts(name="b", live=True, awaiting_staging=True)


@pytest.mark.parametrize(
    ("cache", "pods", "cached", "loaded"),
    [
        ((entry("n1", "Cached"), entry("n2", "Staged")), (SERVING, SERVING), ("True", "Cached"), ("True", "Loaded")),
        ((entry("n1", "Cached"), entry("n2", "Staging")), (SERVING, WAITING), ("False", "Staging"),
         ("False", "AwaitingStaging")),
        ((entry("n1", "Cached"), entry("n2", "NoRoom", reason="NoRoom", message="budget 1 GiB")), (SERVING, SERVING),
         ("False", "NoRoom"), ("True", "Loaded")),
        ((entry("n1", "Cached"), entry("n2", "Failed", reason="DiskFull", message="no space left")),
         (SERVING, WAITING), ("False", "DiskFull"), ("False", "StagingFailed")),
    ],
)  # fmt: skip
def test_model_cached_condition_and_model_loaded_while_staging(
    cache: tuple[NodeCacheStatus, ...], pods: tuple[PodFacts, ...], cached: tuple[str, str], loaded: tuple[str, str]
) -> None:
    status = compute_status(cached_md(), Facts(2, VALID, 3, pods, cache=cache), ModelDeploymentStatus(), NOW)
    by_type = {c.type: (c.status, c.reason) for c in status.conditions}
    assert by_type["ModelCached"] == cached
    assert by_type["ModelLoaded"] == loaded
    assert status.cache == list(cache)
    if cached[0] == "False" and cached[1] != "Staging":
        message = next(c.message for c in status.conditions if c.type == "ModelCached")
        assert "node n2" in message and "version 3" in message


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("200Gi", 200 * 2**30), ("1Ki", 1024), ("1.5Gi", 3 * 2**29), ("8G", 8 * 10**9), ("500k", 500_000), ("1e9", 10**9),
     ("4096", 4096)],
)  # fmt: skip
def test_the_budget_in_bytes(quantity: str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


def test_a_budget_that_is_not_a_quantity_of_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="not a quantity of bytes"):
        quantity_bytes("1KB")


def server_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"nodeName": node},
    }


def finish(api: FakeApiServer, job: str, verdict_text: str) -> None:
    """The Job controller and kubelet: the Job complete, its pod terminated with the verdict."""
    stored = api.object("Job", "ns", job)
    assert stored is not None
    api.put({**stored, "status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    state = {"terminated": {"exitCode": 0, "message": verdict_text}}
    metadata = {"name": f"{job}-x", "namespace": "ns", "uid": job, "labels": {"job-name": job}}
    status = {"containerStatuses": [{"name": "stage", "state": state}]}
    api.put({"kind": "Pod", "metadata": metadata, "spec": {"nodeName": "n1"}, "status": status})


def with_status(md: ModelDeployment, entries: list[NodeCacheStatus]) -> ModelDeployment:
    return md.model_copy(update={"status": ModelDeploymentStatus(cache=entries)})


def test_stage_creates_a_job_per_node_follows_it_and_then_asks_nothing() -> None:
    api = FakeApiServer()
    md = cached_md()
    pods = [server_pod("a", "n1")]
    first = asyncio.run(stage(api, md, pods, None, 3, "img"))
    assert first is not None and [(e.node, e.state) for e in first.nodes] == [("n1", "Staging")]
    assert first.gate.blocks("n1", 3, serving=False) and first.requeue_after is not None
    (job,) = [o for (kind, _, _), o in api.objects.items() if kind == "Job"]
    assert job["spec"]["template"]["spec"]["nodeName"] == "n1"
    md = with_status(md, list(first.nodes))
    finish(api, job["metadata"]["name"], verdict("staged"))
    second = asyncio.run(stage(api, md, pods, None, 3, "img"))
    assert second is not None and [(e.node, e.state) for e in second.nodes] == [("n1", "Staged")]
    assert not second.gate.blocks("n1", 3, serving=False) and second.requeue_after is None
    # Staged, in status: the next reconcile makes no request at all.
    calls = dict(api.calls)
    third = asyncio.run(stage(api, with_status(md, list(second.nodes)), pods, None, 3, "img"))
    assert third is not None and third.nodes == second.nodes and api.calls == calls


def test_a_job_names_the_cache_owners_that_exist_so_deleted_ones_pins_are_released() -> None:
    """Listed when the Job is made: ModelDeployments with a cache, in every namespace (clusterwide)
    or in this one's; the time passed leaves pins of the last 10 minutes alone."""
    api = FakeApiServer()
    for namespace, name, cache in (("ns", "other", True), ("ns", "plain", False), ("team", "x", True)):
        model: dict[str, Any] = {"repository": "pvc://models"}
        if cache:
            model["cache"] = {"claimName": "c", "budget": "1Gi"}
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": {"model": model}}
        api.put({"apiVersion": "tritonop.dev/v1alpha1", "kind": "ModelDeployment", **body})

    def job_args(clusterwide: bool) -> list[str]:
        api.objects = {key: o for key, o in api.objects.items() if key[0] != "Job"}
        asyncio.run(stage(api, cached_md(), [server_pod("a", "n1")], None, 3, "img", clusterwide=clusterwide))
        (job,) = [o for (kind, _, _), o in api.objects.items() if kind == "Job"]
        return list(job["spec"]["template"]["spec"]["containers"][0]["args"])

    before = time.time()
    args = job_args(clusterwide=True)
    owners = args[args.index("--live-owners") :]
    assert owners[:4] == ["--live-owners", "ns.m,ns.other,team.x", "--owners-scope", "*"]
    assert before - 601 <= float(owners[5]) <= time.time() - 599
    args = job_args(clusterwide=False)
    assert args[args.index("--live-owners") :][:4] == ["--live-owners", "ns.m,ns.other", "--owners-scope", "ns"]


def test_eligible_nodes_get_the_target_too_but_loads_wait_only_for_the_pods_nodes() -> None:
    api = FakeApiServer()
    md = cached_md()
    pods = [server_pod("a", "n1")]
    first = asyncio.run(stage(api, md, pods, None, 3, "img", prefetch=["n1", "n2"]))
    assert first is not None and [(e.node, e.state) for e in first.nodes] == [("n1", "Staging"), ("n2", "Staging")]
    jobs = {o["spec"]["template"]["spec"]["nodeName"]: o for (kind, _, _), o in api.objects.items() if kind == "Job"}
    assert sorted(jobs) == ["n1", "n2"]
    assert api.calls["list"] == 1  # the cache's owners, listed once for both Jobs
    keep = jobs["n2"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert keep[keep.index("--keep") + 1] == "3"  # pinned there: a pod may come
    finish(api, jobs["n1"]["metadata"]["name"], verdict("staged"))
    second = asyncio.run(stage(api, with_status(md, list(first.nodes)), pods, None, 3, "img", prefetch=["n1", "n2"]))
    assert second is not None and [(e.node, e.state) for e in second.nodes] == [("n1", "Staged"), ("n2", "Staging")]
    # n2 has no pod: neither a new server nor a switch on n1 waits for it.
    assert not second.gate.blocks("n1", 3, serving=False) and not second.gate.blocks("n1", 3, serving=True)


class NodesForbidden(FakeApiServer):
    async def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Any]:
        if kind == "Node":
            raise KubeError(403, "Forbidden", 'nodes is forbidden: cannot list resource "nodes"')
        return await super().list(kind, namespace, label_selector)


def test_eligible_nodes_are_listed_at_most_once_a_minute_and_a_refused_list_is_said() -> None:
    api = FakeApiServer()
    for name, labels in (("gpu-1", {"pool": "gpu"}), ("gpu-0", {"pool": "gpu"}), ("cpu-0", {"pool": "cpu"})):
        status = {"conditions": [{"type": "Ready", "status": "True"}]}
        api.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "status": status})
    body = cached_md().model_dump(by_alias=True, exclude_none=True)
    body["spec"]["model"]["cache"]["nodes"] = "EligibleNodes"
    body["spec"]["server"] = {"gpus": 0, "nodeSelector": {"pool": "gpu"}}
    md = ModelDeployment.from_body({**body, "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2}})
    listed, problem = asyncio.run(prefetch_nodes(api, md, None, now=100.0))
    assert listed == NodeList(("gpu-0", "gpu-1"), 100.0) and problem is None
    assert asyncio.run(prefetch_nodes(api, md, listed, now=159.0)) == (listed, None)  # no request
    assert api.calls["list"] == 1
    assert asyncio.run(prefetch_nodes(api, md, listed, now=161.0))[0] == NodeList(("gpu-0", "gpu-1"), 161.0)
    assert asyncio.run(prefetch_nodes(api, cached_md(), None, now=100.0)) == (None, None)  # PodNodes: no list
    kept, problem = asyncio.run(prefetch_nodes(NodesForbidden(), md, listed, now=300.0))
    assert kept == NodeList(("gpu-0", "gpu-1"), 300.0)  # the last list, tried again in a minute
    assert problem is not None and "cannot list Nodes" in problem and "forbidden" in problem


def test_a_failed_load_on_a_staged_node_has_its_copy_looked_at_again() -> None:
    api = FakeApiServer()
    staged = NodeCacheStatus(node="n1", version=3, state="Staged", job="old", at="2026-01-01T00:00:00Z")
    md = with_status(cached_md(), [staged])
    pods = [server_pod("a", "n1")]
    again = asyncio.run(stage(api, md, pods, None, 3, "img", failed_loads={"uid-a"}))
    assert again is not None and [(e.node, e.state) for e in again.nodes] == [("n1", "Staging")]
    assert any(kind == "Job" for (kind, _, _) in api.objects)
