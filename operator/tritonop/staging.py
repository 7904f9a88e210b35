"""spec.model.cache: the versions a ModelDeployment's pods need, staged on their nodes' local disks
before the servers load them (prefetched before a switch), by a short Job per (node, version).

- Which: for every scheduled pod, the version it should serve (a canary's pods: their own) on
  the pod's node (`needs`, pure). A switch needs the new version on every node with pods: the
  servers switch once all of them hold it (facts.StagingGate), so the switch takes one load time.
- How: a Job pinned to the node (nodeName) runs `tritonop cache stage` from the operator's image
  (render.objects.render_stage_job). It reads the repository exactly as a verification Job does,
  copies the version into the node's cache folder, hashing while it copies and comparing with the
  manifest, renames it into place only when every file matched, evicts least-recently-used
  versions no pod on the node needs to stay within the budget, and links it into this
  ModelDeployment's repository folder there (the servers' --model-repository). A version already
  there is a hit: its files' identities are compared, nothing is read from the store.
- Its verdict (the termination message) is kept in status.cache, per (node, version): it survives
  an operator restart, and a reconcile where every needed version is staged makes no request.
  A failed verdict is tried again after RETRY_FAILED_SECONDS with a new Job.
- A version that does not fit in the budget is still staged for its pods, outside the budget,
  and loads as before; status and a Warning say so (NoRoom). Nothing that serves stops serving:
  a failed staging only holds back the loads that need it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from tritonop.api.spec import ModelDeployment
from tritonop.api.status import NodeCacheStatus
from tritonop.cache.plan import LiveOwners
from tritonop.cache.verdict import Verdict
from tritonop.clock import rfc3339
from tritonop.events import Event
from tritonop.facts import StagingGate, node_of, wanted_version
from tritonop.k8s import KubeApi, KubeError
from tritonop.placement import eligible_nodes
from tritonop.render.objects import cache_owner, render_stage_job, stage_job_name
from tritonop.verification import age_seconds, job_finished, termination_message

LOG = logging.getLogger("tritonop.staging")
STAGING_VERDICTS = Counter(
    "tritonop_cache_staging_verdicts_total",
    "Staging Jobs' verdicts (spec.model.cache), by result: Staged, Cached (already on the node), NoRoom, Failed.",
    ["namespace", "name", "result"],
)
STAGED_BYTES = Counter(
    "tritonop_cache_staged_bytes_total",
    "Bytes copied from the store onto nodes by staging Jobs.",
    ["namespace", "name"],
)
STAGING_SECONDS = Histogram(
    "tritonop_cache_staging_seconds",
    "Time staging Jobs spent copying a version (0: already on the node).",
    ["namespace", "name"],
    buckets=(0.1, 1, 5, 10, 30, 60, 120, 300, 600, 1200),
)
POLL_SECONDS = 1.0  # while a Job runs, look again this soon: a pod's load waits on it
RETRY_FAILED_SECONDS = 60.0
# A deleted ModelDeployment's pins (which keep its versions from eviction) are released by the
# next staging Job on the node once they are this much older than the LIST that misses the owner.
RELEASE_AFTER_SECONDS = 600.0
# cache.nodes EligibleNodes: new, cordoned or relabelled nodes are seen this soon.
NODES_RELIST_SECONDS = 60.0
# A load that failed on a node whose copy status calls staged (the node's folder wiped or changed
# by hand): a Job looks at that copy again, at most this often, while loads keep failing.
RECHECK_AFTER_FAILED_LOAD_SECONDS = 30.0
# Loads may go: copied and verified, found already there, or copied outside the budget.
LOADABLE = frozenset({"Staged", "Cached", "NoRoom"})
VERDICT_STATES = {"staged": "Staged", "hit": "Cached", "no-room": "NoRoom", "failed": "Failed"}


@dataclass(frozen=True)
class NodeList:
    """cache.nodes EligibleNodes: the nodes the servers could run on, as last listed."""

    names: tuple[str, ...]
    at: float  # monotonic


@dataclass(frozen=True)
class Staging:
    nodes: tuple[NodeCacheStatus, ...]  # status.cache
    gate: StagingGate
    requeue_after: float | None = None

    def problems(self) -> list[NodeCacheStatus]:
        return [entry for entry in self.nodes if entry.state in ("Failed", "NoRoom")]


def needs(
    pods: Iterable[dict[str, Any]], pod_versions: Mapping[str, int | None] | None, target: int | None
) -> dict[int, frozenset[str]]:
    """Pure: version -> the nodes whose pods need it (scheduled pods not being deleted)."""
    wanted: dict[int, set[str]] = {}
    for pod in pods:
        node = node_of(pod)
        if not node or pod["metadata"].get("deletionTimestamp"):
            continue
        version = wanted_version(pod_versions, pod["metadata"]["name"], target)
        if version is not None:
            wanted.setdefault(version, set()).add(node)
    return {version: frozenset(nodes) for version, nodes in wanted.items()}


def with_prefetch(
    needed: Mapping[int, frozenset[str]], target: int | None, prefetch: Collection[str]
) -> dict[int, frozenset[str]]:
    """Pure: what is staged where: the pods' needs, and the target on the prefetch nodes."""
    staged_on = dict(needed)
    if target is not None and prefetch:
        staged_on[target] = staged_on.get(target, frozenset()) | frozenset(prefetch)
    return staged_on


def keep_on(node: str, needed: Mapping[int, frozenset[str]], serving: int | None) -> list[int]:
    """Pure: the versions no stager may evict from this node: those its pods need, and the one the
    servers serve now (during a switch, until the new one serves)."""
    keep = {version for version, nodes in needed.items() if node in nodes}
    if serving is not None:
        keep.add(serving)
    return sorted(keep)


def entry_of(verdict_text: str, node: str, version: int, job: str, now: str) -> NodeCacheStatus:
    """status.cache's entry for a stager's verdict (its termination message, one JSON line)."""
    try:
        verdict = Verdict.from_json(verdict_text)
    except ValueError:
        return NodeCacheStatus(
            node=node, version=version, state="Failed", reason="StagingFailed",
            message=f"job/{job}: unreadable verdict: {verdict_text[:200]}", job=job, at=now,
        )  # fmt: skip
    message = verdict.message
    if verdict.restagedBecause:
        message = f"{message} (staged again: {verdict.restagedBecause})".strip()
    if verdict.storeChanged:
        message = f"{message} (the store changed after staging: the verified copy is served)".strip()
    return NodeCacheStatus(
        node=node,
        version=version,
        state=VERDICT_STATES[verdict.result],
        reason=verdict.reason,
        message=message,
        bytes=verdict.bytes,
        seconds=round(verdict.seconds, 2),
        job=job,
        at=now,
    )


async def stage(
    kube: KubeApi,
    md: ModelDeployment,
    pods: list[dict[str, Any]],
    pod_versions: Mapping[str, int | None] | None,
    target: int | None,
    image: str,
    failed_loads: Collection[str] = (),
    clusterwide: bool = True,
    prefetch: Collection[str] = (),
) -> Staging | None:
    """Every needed (node, version) staged, or its Job created or followed; None without a cache.
    failed_loads: uids of pods whose last load failed: their node's copy is looked at again.
    prefetch: nodes without pods that get the target too (cache.nodes EligibleNodes); loads do
    not wait for them (the gate counts the pods' nodes only).
    clusterwide: the operator watches (and may list) every namespace: a Job releases the pins of
    deleted ModelDeployments anywhere, else of those in this one's namespace."""
    if md.spec.model.cache is None:
        return None
    now = rfc3339()
    previous = {(entry.node, entry.version): entry for entry in md.status.cache or []}
    needed = needs(pods, pod_versions, target)
    staged_on = with_prefetch(needed, target, prefetch)
    recheck = needs([pod for pod in pods if pod["metadata"].get("uid") in failed_loads], pod_versions, target)
    entries: list[NodeCacheStatus] = []
    requeue: float | None = None
    owners = OwnersOnce(kube, md, clusterwide)
    for version, nodes in sorted(staged_on.items()):
        for node in sorted(nodes):
            known = previous.get((node, version))
            suspect = node in recheck.get(version, ()) and age_seconds(known.at if known else None, now) >= (
                RECHECK_AFTER_FAILED_LOAD_SECONDS
            )
            if known is not None and known.state in LOADABLE and not suspect:
                entries.append(known)
                continue
            if known is not None and known.state == "Failed" and age_seconds(known.at, now) < RETRY_FAILED_SECONDS:
                entries.append(known)
                requeue = min(requeue or RETRY_FAILED_SECONDS, RETRY_FAILED_SECONDS)
                continue
            # A Job per attempt (a finished one's verdict is about the files as they were then);
            # one under way is followed by the name status keeps.
            name = known.job if known is not None and known.state == "Staging" and known.job else None
            name = name or stage_job_name(md, node, version, now)
            keep = keep_on(node, staged_on, md.status.active_version)
            entry = await _follow_job(kube, md, node, version, keep, image, name, known, now, owners)
            entries.append(entry)
            if entry.state == "Staging":
                requeue = POLL_SECONDS
    loadable = [e for e in entries if e.state in LOADABLE]
    ready = frozenset((e.node, e.version) for e in loadable)
    staged_at = {(e.node, e.version): e.at for e in loadable if e.at}
    return Staging(tuple(entries), StagingGate(ready, needed, staged_at), requeue)


async def _follow_job(
    kube: KubeApi,
    md: ModelDeployment,
    node: str,
    version: int,
    keep: list[int],
    image: str,
    name: str,
    known: NodeCacheStatus | None,
    now: str,
    owners: OwnersOnce,
) -> NodeCacheStatus:
    since = known.at if known is not None and known.job == name and known.at else now
    staging = NodeCacheStatus(
        node=node, version=version, state="Staging", message=f"job/{name} is staging it", job=name, at=since
    )
    job = await kube.get("Job", md.namespace, name)
    if job is None:
        try:
            await kube.create(render_stage_job(md, node, version, keep, image, name, await owners.get()))
        except KubeError as error:
            if error.status != 409:
                return staging.model_copy(
                    update={
                        "state": "Failed",
                        "reason": "StagingFailed",
                        "message": f"cannot create job/{name}: {error}",
                    }
                )
        LOG.info("%s/%s: staging version %s on %s (job/%s)", md.namespace, md.name, version, node, name)
        return staging
    finished = job_finished(job)
    if finished is None:
        return staging
    pods = await kube.list("Pod", md.namespace, f"job-name={name}")
    message = termination_message(pods)
    if message:
        entry = entry_of(message, node, version, name, now)
        STAGING_VERDICTS.labels(md.namespace, md.name, entry.state).inc()
        if entry.state in ("Staged", "NoRoom") and entry.bytes:
            STAGED_BYTES.labels(md.namespace, md.name).inc(entry.bytes)
        STAGING_SECONDS.labels(md.namespace, md.name).observe(entry.seconds or 0.0)
        return entry
    why = next(
        (f"{c.get('reason', '')}: {c.get('message', '')}" for c in job.get("status", {}).get("conditions", [])
         if c.get("type") == "Failed"),
        "no verdict",
    )  # fmt: skip
    return staging.model_copy(
        update={
            "state": "Failed",
            "reason": "StagingFailed",
            "message": f"job/{name} {finished.lower()} without a verdict ({why})",
            "at": now,
        }
    )


async def prefetch_nodes(
    kube: KubeApi, md: ModelDeployment, known: NodeList | None, now: float
) -> tuple[NodeList | None, str | None]:
    """cache.nodes EligibleNodes: the nodes the servers could run on (placement.py), listed at most
    every NODES_RELIST_SECONDS; (None, None) otherwise. When the LIST fails, the last list stays
    and the error is returned (a Warning says it: a missing RBAC rule, most likely)."""
    cache = md.spec.model.cache
    if cache is None or cache.nodes != "EligibleNodes":
        return None, None
    if known is not None and now - known.at < NODES_RELIST_SECONDS:
        return known, None
    try:
        nodes = await kube.list("Node")
    except KubeError as error:  # tried again in NODES_RELIST_SECONDS, with the last list meanwhile
        return NodeList(known.names if known else (), now), f"cannot list Nodes (cache.nodes EligibleNodes): {error}"
    return NodeList(tuple(eligible_nodes(md, nodes)), now), None


@dataclass
class OwnersOnce:
    """live_owners, listed by the first Job a reconcile makes and reused by the others."""

    kube: KubeApi
    md: ModelDeployment
    clusterwide: bool
    listed: tuple[LiveOwners | None] | None = None

    async def get(self) -> LiveOwners | None:
        if self.listed is None:
            self.listed = (await live_owners(self.kube, self.md, self.clusterwide),)
        return self.listed[0]


async def live_owners(kube: KubeApi, md: ModelDeployment, clusterwide: bool) -> LiveOwners | None:
    """The cache's owners that exist: ModelDeployments with spec.model.cache, in every namespace
    (clusterwide) or in md's. Listed when a Job is made (rarely), not per reconcile. The time
    passed is RELEASE_AFTER_SECONDS before the LIST: a pin written since (by an owner newer than
    the list, or by a node whose clock is up to that much behind) is never released. None (nothing released)
    when the LIST fails."""
    listed_at = time.time() - RELEASE_AFTER_SECONDS
    try:
        items = await kube.list("ModelDeployment", None if clusterwide else md.namespace)
    except KubeError as error:
        LOG.info("%s/%s: cannot list ModelDeployments, no pins released: %s", md.namespace, md.name, error)
        return None
    names = {
        f"{item['metadata']['namespace']}.{item['metadata']['name']}"
        for item in items
        if ((item.get("spec") or {}).get("model") or {}).get("cache")
    }
    return LiveOwners(frozenset(names | {cache_owner(md)}), "*" if clusterwide else md.namespace, listed_at)


def forget_metrics(namespace: str, name: str) -> None:
    """Drop a ModelDeployment's staging series (it is gone)."""
    for result in ("Staged", "Cached", "NoRoom", "Failed"):
        with contextlib.suppress(KeyError):
            STAGING_VERDICTS.remove(namespace, name, result)
    for metric in (STAGED_BYTES, STAGING_SECONDS):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, name)


def cache_events(old: Iterable[NodeCacheStatus], new: Iterable[NodeCacheStatus]) -> list[Event]:
    """Pure: an Event for each (node, version) whose state changed to a verdict."""
    before = {(entry.node, entry.version): entry.state for entry in old}
    events = []
    for entry in new:
        if entry.state == before.get((entry.node, entry.version)) or entry.state == "Staging":
            continue
        where = f"version {entry.version} on node {entry.node}"
        if entry.state == "Staged":
            size = f"{(entry.bytes or 0) / 2**30:.2f} GiB" if entry.bytes else "size unknown"
            events.append(Event("Normal", "VersionStaged", f"{where}: {size} copied and verified in {entry.seconds} s"))
        elif entry.state == "Cached":
            events.append(Event("Normal", "VersionCached", f"{where}: already in the node's cache ({entry.message})"))
        else:
            events.append(Event("Warning", entry.reason or entry.state, f"{where}: {entry.message}"))
    return events
