"""One level-based reconcile of a ModelDeployment, as steps; each step is a call into the module
that owns it:

observe (owned.py) -> scale (autoscale/runner.py) -> the repository (repository/local.py, or a
verification Job: verification.py) -> render (render/, pure) -> apply what differs (owned.py) ->
bring every Triton to the target, or during a canary each pod to its own version (serving.py;
rollout.py) -> the canary's next step (canary.py, pure) -> compute status (status.py, pure) ->
write status only if it changed -> post events (events.py).

An idle reconcile (nothing changed anywhere) makes no API request at all. Between full ones, the
autoscaler's 1 s evaluations take a quiet path: when nothing the last full reconcile saw has
changed (the object, its Deployment/Service/PDB, its pods, by resourceVersion), nothing was left
converging and the decision keeps the replicas, the evaluation is all that runs. Once a
reconcile ends that way, the controller's ticker runs the next evaluations (quiet_only) without
the work queue; one that finds more to do hands its decision and events to a full reconcile. A
full reconcile still comes with every watch event and at least every resync period (Triton-side
drift).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter

from tritonop import rollout
from tritonop.api.spec import ModelDeployment, ModelDeploymentStatus
from tritonop.clock import rfc3339
from tritonop.events import EventRecorder, transition_events
from tritonop.k8s import KubeError
from tritonop.owned import Observed, Owned
from tritonop.render.objects import RenderInputs, render_deployment, render_pdb, render_service, rollout_hash
from tritonop.repository.local import RepositoryReport, inspect
from tritonop.serving import Servers, Target
from tritonop.state import READY, Carried, OperatorState, Settled
from tritonop.status import FAILING_WAIT_REASONS, Facts, PodFacts, active_version, compute_status, status_patch
from tritonop.verification import verify

LOG = logging.getLogger("tritonop.reconcile")
QUIET_EVALUATIONS = Counter(
    "tritonop_quiet_evaluations_total", "Reconciles in which only the autoscaler evaluated (nothing else changed)."
)
# While something is converging (servers starting, loads under way) look again soon.
CONVERGING_REQUEUE_SECONDS = 1.0


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None = None
    # Only the autoscaler has work until then: a light evaluation will do (quiet_only), not a
    # full reconcile.
    quiet: bool = False
    # quiet_only, and the evaluation found more to do: a full reconcile is needed now (it takes
    # over this evaluation's scaling and events).
    needs_full: bool = False


async def reconcile(state: OperatorState, body: dict[str, Any], quiet_only: bool = False) -> Outcome:
    """quiet_only: the autoscaler's tick (controller.py's light evaluations): evaluate, and stop
    there unless something else needs a full reconcile; then return needs_full and do nothing more."""
    md = parse(state, body)
    log = logging.LoggerAdapter(LOG, {"namespace": md.namespace, "model_deployment": md.name})
    events = EventRecorder(log, f"{md.namespace}/{md.name}")
    owned = Owned(state.kube, state.cache, state.owned, md, events)

    # 1. observe
    settled = state.settled.get(md.uid) if md.spec.autoscaling is not None else None
    observed = await owned.observe(settled.observed if settled is not None else None)
    # 2. replicas: the spec's, or the autoscaler's decision (one a light evaluation just took)
    carried = state.carried.pop(md.uid, None)
    if carried is not None:
        scaling = carried.scaling
        events.events.extend(carried.events)
    else:
        scaling = await state.autoscalers.scale(md, observed.pods, observed.deployment, events)
        scaling = replace(scaling, replicas=rollout.hold_replicas(md, scaling.replicas, observed.deployment))
    seen = fingerprint(body, observed)
    if quiet(settled, seen, scaling.replicas, scaling.facts is None, time.monotonic(), state.settings.resync_seconds):
        QUIET_EVALUATIONS.inc()
        return Outcome(requeue_after=state.autoscalers.next_evaluation_in(md), quiet=True)
    if quiet_only:
        log.debug(
            "light evaluation needs a full reconcile: settled %s, same reads %s, replicas %s, report %s",
            settled is not None,
            settled is not None and settled.fingerprint == seen,
            scaling.replicas,
            scaling.facts is not None,
        )
        state.carried[md.uid] = Carried(scaling, tuple(events.events))
        return Outcome(needs_full=True)
    state.settled.pop(md.uid, None)
    control_key = await owned.ensure_control_key()
    # In a worker thread: a version seen for the first time (or changed) is hashed, in chunks.
    report = await asyncio.to_thread(
        inspect,
        md.spec.model.repository,
        md.model_name,
        md.spec.model.version,
        in_cluster=state.settings.in_cluster,
        manifests=state.manifests,
        user=md.uid,
    )
    # Where the operator cannot read the bytes, a verification Job does (pvc://, file:// on nodes).
    verification = await verify(state.kube, md, report, state.settings.verifier_image)
    report = verification.report
    target_version = target_of(md, report)
    # 3. render (pure) and apply what differs
    inputs = RenderInputs(replicas=scaling.replicas, target_version=target_version)
    desired = [render_deployment(md, inputs), render_service(md)] + ([render_pdb(md)] if scaling.replicas > 1 else [])
    refused = await owned.converge(desired, observed)
    # 4. bring each Triton to the target version and config (a canary: some pods to the new one)
    servers = Servers(state.kube, state.cache, state.serving, md, events)
    pod_versions = rollout.pod_versions(md, observed.pods, target_version)
    target = Target(target_version, report, control_key, rollout_hash(md, inputs), pod_versions)
    converged = await servers.converge(observed.pods, target)
    pods = converged.pods
    # 5. a canary's next step (canary.py decides; rollout.py reads the servers' counters)
    now = rfc3339()
    ips = {pod["metadata"]["name"]: pod.get("status", {}).get("podIP", "") for pod in observed.pods}
    active = active_version([pod for pod in pods if pod.ready], target_version)
    canary = await rollout.progress(state.rollouts, md, target_version, active, pods, ips, now)
    for step_event in canary.events:
        (events.warning if step_event.kind == "Warning" else events.normal)(step_event.reason, step_event.message)
    # 6. status (pure), written only if it changed; events for what changed
    facts = Facts(
        desired_replicas=scaling.replicas,
        repository=report,
        target_version=target_version,
        pods=tuple(pods),
        rollout_pending=rollout_pending(observed, scaling.replicas),
        gpu_resource=md.spec.server.gpu_resource_name,
        autoscale=scaling.facts,
        apply_refused=refused,
        config_problem=converged.config_problem,
        integrity=verification.integrity,
        swap=converged.swap,
        swap_blocked=converged.swap_blocked,
        last_load=state.serving.last_loads.get(md.uid),
        rollout=canary.rollout,
        pod_versions=pod_versions,
    )
    status = compute_status(md, facts, md.status, now)
    READY.labels(md.namespace, md.name).set(int(status.reason is None))
    for event in transition_events(md.status, status):
        events.record(event)
    await write_status(state, md, body, status)
    await events.flush(state.kube, body)
    # Nothing converges while the overrides cannot load: the spec has to change first.
    soon = next_look(pods, facts.wanted) if converged.config_problem is None else None
    if canary.rollout is not None and canary.rollout.active:
        soon = CONVERGING_REQUEUE_SECONDS  # steps, pauses and analyses run on time
    # Settled: nothing left that only a timer would bring back (failed loads are retried on a timer).
    unsettled = converged.swap or refused or any(pod.load_error for pod in pods)
    if soon is None and verification.requeue_after is None and not unsettled:
        as_left = md.model_copy(update={"status": status})
        state.settled[md.uid] = Settled(seen, scaling.replicas, time.monotonic(), as_left, observed)
    looks = [t for t in (soon, verification.requeue_after, state.autoscalers.next_evaluation_in(md)) if t is not None]
    return Outcome(requeue_after=min(looks) if looks else None)


def parse(state: OperatorState, body: dict[str, Any]) -> ModelDeployment:
    """The body as the typed model. An object at the resourceVersion a settled reconcile left is
    that reconcile's (nobody wrote since: the same spec, and the status it wrote), not parsed again:
    the autoscaler's evaluations come every second."""
    meta = body["metadata"]
    settled = state.settled.get(meta.get("uid", ""))
    if settled is not None and settled.fingerprint[0] == meta.get("resourceVersion", "-"):
        return settled.md
    return ModelDeployment.from_body(body)


def fingerprint(body: dict[str, Any], observed: Observed) -> tuple[str, ...]:
    """What a full reconcile works from, by resourceVersion (a write by anyone changes it)."""
    objects = [body, observed.deployment, observed.service, observed.pdb, *observed.pods]
    return tuple((obj or {}).get("metadata", {}).get("resourceVersion", "-") for obj in objects)


def quiet(
    settled: Settled | None, seen: tuple[str, ...], replicas: int, nothing_to_report: bool, now: float, resync: float
) -> bool:
    """Only the autoscaler has work: the last full reconcile left nothing converging, nothing it
    read has changed since, the replicas stay and the measurement is not due in status."""
    return (
        settled is not None
        and settled.fingerprint == seen
        and settled.replicas == replicas
        and nothing_to_report
        and now - settled.at < resync
    )


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


def next_look(pods: list[PodFacts], wanted: Callable[[PodFacts], int | None]) -> float | None:
    """Servers starting or loading: look again soon. A crash loop or a failed load is not progress;
    pod events and the resync bring those back. wanted: the version each pod should serve."""
    converging = any(
        not pod.live or not pod.serves(wanted(pod)) or not pod.ready
        for pod in pods
        if pod.scheduled and pod.waiting_reason not in FAILING_WAIT_REASONS
    ) and not any(pod.load_error for pod in pods)
    return CONVERGING_REQUEUE_SECONDS if converging else None


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
