"""One level-based reconcile of a ModelDeployment, as steps; each step is a call into the module
that owns it:

observe (owned.py) -> scale (autoscale/runner.py), or stop on the quiet path (quiet.py) ->
the repository (repository/, or a verification Job: verification.py) -> render (render/, pure)
-> apply what differs (owned.py) -> with a node cache, the versions on the pods' nodes
(staging.py) -> bring every Triton to the target, or during a canary each
pod to its own version (serving/) -> the canary's next step (canary/) -> compute status
(status.py, pure) -> write status only if it changed, post events (events.py) -> when to look
again.

An idle reconcile (nothing changed anywhere) makes no API request at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tritonop import quiet
from tritonop.api.spec import ModelDeployment
from tritonop.api.status import ModelDeploymentStatus
from tritonop.autoscale.runner import Scaling
from tritonop.canary import runner as canary_runner
from tritonop.canary.steps import StepOutcome
from tritonop.clock import rfc3339
from tritonop.controller import Next
from tritonop.events import EventRecorder, transition_events
from tritonop.facts import FAILING_WAIT_REASONS, Facts, PodFacts
from tritonop.k8s import KubeError
from tritonop.memory import ObjectMemory, Settled
from tritonop.owned import Observed, Owned
from tritonop.render.objects import RenderInputs, render_deployment, render_pdb, render_service, rollout_hash
from tritonop.repository.report import RepositoryReport, inspect
from tritonop.serving import Converged, Servers, Target
from tritonop.staging import NODES_RELIST_SECONDS, Staging, cache_events, prefetch_nodes, stage
from tritonop.state import READY, OperatorState
from tritonop.status import active_version, compute_status, status_patch
from tritonop.verification import Verification, verify

LOG = logging.getLogger("tritonop.reconcile")
# While something is converging (servers starting, loads under way) look again soon.
CONVERGING_REQUEUE_SECONDS = 1.0
# A server container that just started: its load begins as soon as Triton answers (live within
# a second), bounded by servers.SERVER_START_WATCH_SECONDS.
STARTING_REQUEUE_SECONDS = 0.2


async def reconcile(state: OperatorState, body: dict[str, Any], quiet_only: bool = False) -> Next:
    """quiet_only: the autoscaler's tick (controller.py's light evaluations): evaluate, and stop
    there unless something else needs a full reconcile; then answer full_now and do nothing more."""
    md = quiet.parse(state.memory, body)
    record = state.memory.of(md)
    events = recorder(md)
    owned = Owned(state.kube, state.cache, record.owned, md, events)
    # 1. observe; the replicas: the spec's, or the autoscaler's decision
    observed = await owned.observe(quiet.settled_observation(record, md))
    scaling = quiet.take_over(record, events) or await scale(state, record, md, observed, events)
    seen = quiet.fingerprint(body, observed)
    now = state.clock.monotonic()
    if quiet.only_autoscaler(record, md, seen, scaling, now, state.settings.resync_seconds):
        return Next(state.autoscalers.next_evaluation_in(md, record), light=True)
    if quiet_only:
        quiet.hand_over(record, scaling, events)
        return Next(full_now=True)
    record.settled = None
    control_key = await owned.ensure_control_key()
    # 2. the repository: what versions exist, verified where the bytes are
    report, verification = await repository(state, md)
    target_version = target_of(md, report)
    # 3. render (pure) and apply what differs
    inputs = RenderInputs(replicas=scaling.replicas, target_version=target_version)
    refused = await owned.converge(desired_objects(md, inputs), observed)
    # 4. with a node cache, each pod's version on its node first (a switch: on every node);
    # then bring each Triton to the target version and config (a canary: some pods to the new one)
    pod_versions = canary_runner.pod_versions(md, observed.pods, target_version)
    staging = await stage_on_nodes(state, record, md, observed, pod_versions, target_version, events)
    gate = staging.gate if staging is not None else None
    target = Target(target_version, report, control_key, rollout_hash(md, inputs), pod_versions, gate)
    servers = Servers(state.kube, state.cache, record.serving, md, events, state.clock, state.triton)
    converged = await servers.converge(observed.pods, target)
    # 5. a canary's next step
    stamp = rfc3339()
    canary = await canary_runner.progress(
        record.canary, state.clock, md, target_version, serving_version(converged, target_version),
        converged.pods, pod_ips(observed.pods), stamp,
    )  # fmt: skip
    events.record_all(canary.events)
    # 6. status (pure), written only if it changed; events for what changed
    facts = facts_of(md, scaling, target, observed, refused, converged, verification, record, canary, staging)
    status = compute_status(md, facts, md.status, stamp)
    await publish(state, md, body, status, events)
    # 7. when to look again
    evaluation_in = state.autoscalers.next_evaluation_in(md, record)
    after = next_look(facts, converged, canary, verification, evaluation_in, staging)
    if after.settles:
        as_left = md.model_copy(update={"status": status})
        record.settled = Settled(seen, scaling.replicas, state.clock.monotonic(), as_left, observed)
    return after.next


def recorder(md: ModelDeployment) -> EventRecorder:
    log = logging.LoggerAdapter(LOG, {"namespace": md.namespace, "model_deployment": md.name})
    return EventRecorder(log, f"{md.namespace}/{md.name}")


async def scale(
    state: OperatorState, record: ObjectMemory, md: ModelDeployment, observed: Observed, events: EventRecorder
) -> Scaling:
    """The autoscaler's decision (a canary holds the replicas its analysis needs)."""
    scaling = await state.autoscalers.scale(md, observed.pods, observed.deployment, events, record)
    return replace(scaling, replicas=canary_runner.hold_replicas(md, scaling.replicas, observed.deployment))


async def repository(state: OperatorState, md: ModelDeployment) -> tuple[RepositoryReport, Verification]:
    """What the repository holds; where the operator cannot read the bytes (pvc://, file:// on
    nodes), a verification Job does. In a worker thread: a version seen for the first time (or
    changed) is hashed, in chunks."""
    report = await asyncio.to_thread(
        inspect,
        md.spec.model.repository,
        md.model_name,
        md.spec.model.version,
        in_cluster=state.settings.in_cluster,
        manifests=state.manifests,
        user=md.uid,
        hash_files=md.spec.model.cache is None,  # with the cache, each node's copy is hashed as it is staged
    )
    verification = await verify(state.kube, md, report, state.settings.verifier_image)
    # Integrity stays what the bytes say; loads are also gated on the model's declared parallelism.
    return verification.report.fitted_to(md.spec.server.gpus), verification


async def stage_on_nodes(
    state: OperatorState,
    record: ObjectMemory,
    md: ModelDeployment,
    observed: Observed,
    pod_versions: Mapping[str, int | None] | None,
    target_version: int | None,
    events: EventRecorder,
) -> Staging | None:
    """spec.model.cache: each pod's version in its node's cache, by staging Jobs (None: no cache).
    A pod whose last load failed has its node's copy looked at again."""
    image, failed = state.settings.verifier_image, record.serving.failed_loads.keys()
    nodes, problem = await prefetch_nodes(state.kube, md, record.eligible_nodes, state.clock.monotonic())
    record.eligible_nodes = nodes
    if problem is not None:
        events.warning("NodesUnlisted", problem)
    prefetch = nodes.names if nodes is not None else ()
    staging = await stage(
        state.kube, md, observed.pods, pod_versions, target_version, image, failed, state.settings.clusterwide, prefetch
    )
    if staging is not None:
        events.record_all(cache_events(md.status.cache or [], staging.nodes))
        if nodes is not None:  # look at the nodes again: new ones get the version before a pod needs it
            soonest = NODES_RELIST_SECONDS if staging.requeue_after is None else staging.requeue_after
            staging = replace(staging, requeue_after=min(soonest, NODES_RELIST_SECONDS))
    return staging


def desired_objects(md: ModelDeployment, inputs: RenderInputs) -> list[dict[str, Any]]:
    pdb = [render_pdb(md)] if inputs.replicas > 1 else []
    return [render_deployment(md, inputs), render_service(md), *pdb]


def pod_ips(pods: list[dict[str, Any]]) -> dict[str, str]:
    return {pod["metadata"]["name"]: pod.get("status", {}).get("podIP", "") for pod in pods}


def serving_version(converged: Converged, target_version: int | None) -> int | None:
    return active_version([pod for pod in converged.pods if pod.ready], target_version)


def facts_of(
    md: ModelDeployment,
    scaling: Scaling,
    target: Target,
    observed: Observed,
    refused: str | None,
    converged: Converged,
    verification: Verification,
    record: ObjectMemory,
    canary: StepOutcome,
    staging: Staging | None = None,
) -> Facts:
    """Everything status is computed from, gathered from this reconcile's steps."""
    return Facts(
        desired_replicas=scaling.replicas,
        repository=target.repository,
        target_version=target.version,
        pods=tuple(converged.pods),
        rollout_pending=rollout_pending(observed, scaling.replicas),
        gpu_resource=md.spec.server.gpu_resource_name,
        autoscale=scaling.facts,
        apply_refused=refused,
        config_problem=converged.config_problem,
        integrity=verification.integrity,
        swap=converged.swap,
        swap_blocked=converged.swap_blocked,
        last_load=record.serving.last_load,
        rollout=canary.rollout,
        pod_versions=target.pod_versions,
        pod_starts=converged.starts,
        cache=staging.nodes if staging is not None else None,
    )


async def publish(
    state: OperatorState,
    md: ModelDeployment,
    body: dict[str, Any],
    status: ModelDeploymentStatus,
    events: EventRecorder,
) -> None:
    """The Ready gauge, events for conditions that changed, the status (if it changed), the events."""
    READY.labels(md.namespace, md.name).set(int(status.reason is None))
    for event in transition_events(md.status, status):
        events.record(event)
    await write_status(state, md, body, status)
    await events.flush(state.kube, body)


@dataclass(frozen=True)
class Look:
    next: Next
    settles: bool  # nothing left that only a timer would bring back: the quiet path may follow


def next_look(
    facts: Facts,
    converged: Converged,
    canary: StepOutcome,
    verification: Verification,
    evaluation_in: float | None,
    staging: Staging | None = None,
) -> Look:
    """When to look again: soon while something converges (servers starting, loads under way, a
    canary's steps and analyses, which run on time), when verification or the autoscaler is due."""
    pods = list(facts.pods)
    # Nothing converges while the overrides cannot load: the spec has to change first.
    soon = converging(pods, facts.wanted) if converged.config_problem is None else None
    if canary.rollout is not None and canary.rollout.active:
        soon = CONVERGING_REQUEUE_SECONDS
    # Failed loads are retried on a timer; a swap or a refused apply waits on one too.
    unsettled = converged.swap or facts.apply_refused or any(pod.load_error for pod in pods)
    staging_in = staging.requeue_after if staging is not None else None
    settles = soon is None and verification.requeue_after is None and staging_in is None and not unsettled
    looks = [t for t in (soon, verification.requeue_after, staging_in, evaluation_in) if t is not None]
    return Look(Next(min(looks) if looks else None), settles)


def converging(pods: list[PodFacts], wanted: Callable[[PodFacts], int | None]) -> float | None:
    """Servers starting or loading: look again soon. A crash loop or a failed load is not progress;
    pod events and the resync bring those back. wanted: the version each pod should serve."""
    moving = any(
        not pod.live or not pod.serves(wanted(pod)) or not pod.ready
        for pod in pods
        if pod.scheduled and pod.waiting_reason not in FAILING_WAIT_REASONS
    ) and not any(pod.load_error for pod in pods)
    if not moving:
        return None
    return STARTING_REQUEUE_SECONDS if any(pod.starting for pod in pods) else CONVERGING_REQUEUE_SECONDS


def target_of(md: ModelDeployment, report: RepositoryReport) -> int | None:
    """The version to serve: the spec's, else the highest the operator can see (None: Triton's latest)."""
    if md.spec.model.version is None and report.readable and report.versions:
        return report.versions[-1]
    return md.spec.model.version


def rollout_pending(observed: Observed, replicas: int) -> bool:
    """The Deployment is still replacing or removing pods (Recreate/Rolling, image change, scale-down)."""
    status = (observed.deployment or {}).get("status", {})
    return observed.deployment is not None and (
        status.get("updatedReplicas", 0) < replicas or status.get("replicas", 0) > replicas
    )


async def write_status(
    state: OperatorState, md: ModelDeployment, body: dict[str, Any], status: ModelDeploymentStatus
) -> None:
    patch = status_patch(body.get("status") or {}, status)
    if patch is None:
        return
    try:
        updated = await state.kube.patch_status("ModelDeployment", md.namespace, md.name, patch)
        body["status"] = updated.get("status", status.to_body())
    except KubeError as error:
        if error.status != 404:  # deleted meanwhile: nothing to report on
            raise
