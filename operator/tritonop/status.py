"""Pure: what the reconciler observed -> the ModelDeployment's status (conditions and all).

Kubernetes API conventions: conditions with type/status/reason/message/lastTransitionTime/
observedGeneration; lastTransitionTime only moves when status flips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritonop.api.spec import (
    AutoscalerStatus,
    Condition,
    EndpointStatus,
    IntegrityStatus,
    LatencyStatus,
    LoadStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    RolloutStatus,
)
from tritonop.render.objects import endpoint, selector_string
from tritonop.repository.local import RepositoryReport

# Container waiting reasons that mean "this server cannot start", surfaced as Ready's reason.
FAILING_WAIT_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
CONDITION_ORDER = (
    "Ready",
    "RepositoryValid",
    "Scheduled",
    "ModelLoaded",
    "Progressing",
    "CanaryHealthy",
    "LatencyWithinTarget",
    "Synced",
)


@dataclass(frozen=True)
class PodFacts:
    name: str
    scheduled: bool = True
    unschedulable_message: str | None = None
    ready: bool = False  # the pod's Ready condition (probes and readiness gate)
    waiting_reason: str | None = None
    waiting_message: str = ""
    live: bool = False  # Triton answered on the pod IP
    ready_versions: tuple[int, ...] = ()
    config_current: bool = False  # the loaded config is the one the spec asks for
    load_error: str | None = None
    awaiting_replacement: bool = False  # Recreate/Rolling: an old pod the Deployment will replace
    unreachable: bool = False  # live, but the load call got no answer (server restarting)

    def serves(self, version: int | None) -> bool:
        if version is None:
            return bool(self.ready_versions) and self.config_current
        return version in self.ready_versions and self.config_current


@dataclass(frozen=True)
class Facts:
    desired_replicas: int
    repository: RepositoryReport
    target_version: int | None
    pods: tuple[PodFacts, ...] = ()
    rollout_pending: bool = False  # the Deployment still replaces pods (Recreate/Rolling, image change)
    gpu_resource: str = "nvidia.com/gpu"
    autoscale: AutoscaleFacts | None = None
    apply_refused: str | None = None  # the API server's message when it refused an owned object
    config_problem: str | None = None  # overrides that cannot load with the repository's config
    integrity: IntegrityStatus | None = None  # the target version's integrity check (verification.py)
    swap: str | None = None  # a pod-by-pod swap (the target does not fit twice) is pending or under way
    swap_blocked: str | None = None  # ... and cannot start: one replica without allowSwapDowntime
    last_load: LoadStatus | None = None  # the latest load this process timed (None: keep status's)
    rollout: RolloutStatus | None = None  # strategy Canary: the rollout after this reconcile (canary.py)
    pod_versions: Mapping[str, int | None] | None = None  # a canary: what each pod should serve

    def wanted(self, pod: PodFacts) -> int | None:
        """The version this pod should serve (a canary's pods differ from the rest)."""
        return wanted_version(self.pod_versions, pod.name, self.target_version)


def wanted_version(pod_versions: Mapping[str, int | None] | None, pod: str, target: int | None) -> int | None:
    """A pod's version: its own during a canary (canary.assignment), else the target."""
    return target if pod_versions is None else pod_versions.get(pod, target)


@dataclass(frozen=True)
class AutoscaleFacts:
    """What the autoscaler measured and did in this reconcile (None: it did not evaluate)."""

    latency_ms: float | None  # the spec's metric
    p95_ms: float | None
    average_ms: float | None
    queue_ms: float | None
    window_seconds: float
    target_ms: int
    metric: str
    unreadable: tuple[str, ...] = ()
    scaled: bool = False
    unreachable: str | None = None  # the target no replica can meet (policy.unreachable_message)
    learned: AutoscalerStatus | None = None  # the learned memory to keep (None: keep status's)


def condition(md: ModelDeployment, kind: str, status: str, reason: str, message: str = "") -> Condition:
    """A condition for this generation; lastTransitionTime is settled by compute_status."""
    return Condition.model_validate(
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": "",
            "observedGeneration": md.generation,
        }
    )


def _synced_condition(md: ModelDeployment, facts: Facts) -> Condition:
    if facts.apply_refused:
        return condition(md, "Synced", "False", "ApplyRefused", facts.apply_refused)
    return condition(md, "Synced", "True", "Applied", "owned objects match the spec")


def _repository_condition(md: ModelDeployment, facts: Facts, served_anywhere: bool) -> Condition:
    report = facts.repository
    if report.problem:
        return condition(md, "RepositoryValid", "False", report.problem, report.message)
    if report.pending:
        return condition(md, "RepositoryValid", "Unknown", "Verifying", report.message)
    if report.readable and report.verified is not None:
        # A version without a manifest serves, but it is never called verified.
        reason = "Verified" if report.verified else "Unverified"
        return condition(md, "RepositoryValid", "True", reason, f"{report.message} (checked by {report.checked_by})")
    if report.readable:
        return condition(md, "RepositoryValid", "True", "Valid", report.message)
    if served_anywhere:
        return condition(md, "RepositoryValid", "True", "LoadedByTriton", "Triton loaded the model from the repository")
    return condition(md, "RepositoryValid", "Unknown", "NotReadableByOperator", report.message)


def _scheduled_condition(md: ModelDeployment, facts: Facts) -> Condition:
    # Only the scheduler's verdict counts: a pod it has not looked at yet is not a problem.
    pending = [pod for pod in facts.pods if not pod.scheduled and pod.unschedulable_message is not None]
    if not pending:
        return condition(md, "Scheduled", "True", "AllScheduled", f"{len(facts.pods)} pod(s) placed on nodes")
    message = pending[0].unschedulable_message or ""
    reason = "InsufficientGPU" if f"Insufficient {facts.gpu_resource}" in message else "Unschedulable"
    return condition(md, "Scheduled", "False", reason, f"{len(pending)} pod(s) not scheduled: {message}")


def _loaded_condition(md: ModelDeployment, facts: Facts) -> Condition:
    """What the servers load, and when they do not, why (never 'Loading' when nothing loads)."""
    failed = [pod for pod in facts.pods if pod.load_error]
    if failed:
        return condition(md, "ModelLoaded", "False", "LoadFailed", f"{failed[0].name}: {failed[0].load_error}")
    live = [pod for pod in facts.pods if pod.live]
    not_started = len(facts.pods) - len(live)
    if not live:
        if not facts.pods:
            return condition(md, "ModelLoaded", "Unknown", "NoServerRunning", "no replica exists yet")
        return condition(
            md,
            "ModelLoaded",
            "Unknown",
            "NoServerRunning",
            f"no Triton server is up yet ({not_started} pod(s) starting)",
        )
    version = facts.target_version if facts.target_version is not None else "latest"
    behind = sorted(pod.name for pod in live if not pod.serves(facts.wanted(pod)))
    if behind and facts.repository.problem:
        return condition(
            md,
            "ModelLoaded",
            "False",
            "BlockedByRepository",
            f"version {version} not loaded on {', '.join(behind)}: the repository check failed "
            f"({facts.repository.problem}); the loaded version keeps serving",
        )
    if behind and facts.swap_blocked:
        return condition(md, "ModelLoaded", "False", "InsufficientMemoryForSwitch", facts.swap_blocked)
    if behind and facts.swap:
        return condition(md, "ModelLoaded", "False", "SwappingVersion", facts.swap)
    if behind and facts.repository.pending:
        return condition(
            md,
            "ModelLoaded",
            "False",
            "AwaitingVerification",
            f"version {version} not loaded on {', '.join(behind)} until its files are verified "
            f"({facts.repository.checked_by}); the loaded version keeps serving",
        )
    if behind and facts.config_problem:
        return condition(
            md, "ModelLoaded", "False", "InvalidConfig", f"version {version} not loaded: {facts.config_problem}"
        )
    replaced = sorted(pod.name for pod in live if pod.awaiting_replacement and pod.name in behind)
    if replaced:
        return condition(
            md,
            "ModelLoaded",
            "False",
            "AwaitingReplacement",
            f"{', '.join(replaced)} keep the previous version until the Deployment replaces them",
        )
    unreachable = sorted(pod.name for pod in live if pod.unreachable and pod.name in behind)
    if unreachable:
        return condition(
            md, "ModelLoaded", "False", "ServerUnreachable", f"no answer from Triton on {', '.join(unreachable)}"
        )
    if behind:
        return condition(md, "ModelLoaded", "False", "Loading", f"loading version {version} on {', '.join(behind)}")
    starting = f"; {not_started} pod(s) not started yet" if not_started else ""
    return condition(
        md, "ModelLoaded", "True", "Loaded", f"version {version} loaded on {len(live)} server(s){starting}"
    )


def active_version(ready_pods: list[PodFacts], target: int | None) -> int | None:
    """The version every ready replica serves (during a switch: the one they still share)."""
    if not ready_pods:
        return None
    common = set(ready_pods[0].ready_versions)
    for pod in ready_pods[1:]:
        common &= set(pod.ready_versions)
    if target in common:
        return target
    return max(common) if common else None


# Reasons of a False condition that are progress, not trouble: they do not make Ready's reason.
PROGRESS_REASONS = frozenset(
    {
        "Loading",
        "WaitingForReplicas",
        "VersionSwitch",
        "RollingOut",
        "AwaitingReplacement",
        "AwaitingVerification",
        "SwappingVersion",
        "CanaryInProgress",
        "CanaryPaused",
        "CanaryWaiting",
    }
)
# A server that did not answer a load (restarting, going away): the next reconcile looks again.
TRANSIENT_REASONS = frozenset({"ServerUnreachable"})


def compute_status(
    md: ModelDeployment, facts: Facts, previous: ModelDeploymentStatus, now: str
) -> ModelDeploymentStatus:
    ready_pods = [pod for pod in facts.pods if pod.ready]
    serving = [pod for pod in ready_pods if pod.serves(facts.wanted(pod))]
    active = active_version(ready_pods, facts.target_version)
    target = facts.target_version if facts.target_version is not None else active
    previous_version = previous.previous_version
    if active is not None and previous.active_version not in (None, active):
        previous_version = previous.active_version

    synced = _synced_condition(md, facts)
    repository = _repository_condition(md, facts, bool(serving))
    scheduled = _scheduled_condition(md, facts)
    loaded = _loaded_condition(md, facts)
    switching = bool(serving) and len(serving) < len(ready_pods)
    if facts.swap and not facts.swap_blocked:
        progressing = condition(md, "Progressing", "True", "SwappingVersion", facts.swap)
    elif switching:
        progressing = condition(
            md,
            "Progressing",
            "True",
            "VersionSwitch",
            f"{len(serving)}/{len(ready_pods)} replicas serve version {target}",
        )
    elif facts.rollout_pending or len(facts.pods) != facts.desired_replicas:
        progressing = condition(
            md, "Progressing", "True", "RollingOut", f"{len(facts.pods)} pod(s), {facts.desired_replicas} desired"
        )
    else:
        progressing = condition(md, "Progressing", "False", "Complete", "no rollout or version switch under way")

    crashing = next((pod for pod in facts.pods if pod.waiting_reason in FAILING_WAIT_REASONS), None)
    ready_count = len(serving)
    settled = not switching and not facts.rollout_pending and crashing is None and not facts.apply_refused
    if ready_count >= facts.desired_replicas and settled and (facts.desired_replicas == 0 or serving):
        ready = condition(
            md, "Ready", "True", "Serving", f"{ready_count}/{facts.desired_replicas} replicas serve version {target}"
        )
    else:
        for failing in (synced, repository, scheduled, loaded):
            if failing.status == "False" and failing.reason not in PROGRESS_REASONS | TRANSIENT_REASONS:
                reason, message = failing.reason, failing.message
                break
        else:
            if crashing is not None:
                reason = crashing.waiting_reason or "ServerFailing"
                message = f"{crashing.name}: {crashing.waiting_message}"
            elif switching or facts.rollout_pending:
                reason, message = progressing.reason, progressing.message
            else:
                reason = "WaitingForReplicas"
                message = f"{ready_count}/{facts.desired_replicas} replicas serve the target version"
        ready = condition(md, "Ready", "False", reason, message)

    conditions = [ready, synced, repository, scheduled, loaded, progressing]
    rollout = facts.rollout
    if rollout is not None:
        ready, progressing = _rollout_conditions(md, rollout, ready, progressing)
        conditions = [ready, synced, repository, scheduled, loaded, progressing, _canary_condition(md, rollout)]
    if md.spec.autoscaling is not None:
        conditions.append(_latency_condition(md, facts.autoscale, previous))
    settled_conditions = []
    for cond in conditions:
        old = previous.condition(cond.type)
        since = old.last_transition_time if old is not None and old.status == cond.status else now
        settled_conditions.append(cond.model_copy(update={"last_transition_time": since}))
    settled_conditions.sort(key=lambda c: CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else 99)

    latency, last_scale_time, learned = None, None, None
    if md.spec.autoscaling is not None:
        auto = facts.autoscale
        latency = previous.latency
        learned = auto.learned if auto is not None and auto.learned is not None else previous.autoscaler
        if auto is not None and any(v is not None for v in (auto.p95_ms, auto.average_ms, auto.queue_ms)):
            latency = LatencyStatus(
                p95_ms=_rounded(auto.p95_ms),
                average_ms=_rounded(auto.average_ms),
                queue_ms=_rounded(auto.queue_ms),
                window_seconds=round(auto.window_seconds),
            )
        elif auto is not None:
            latency = None
        last_scale_time = now if auto is not None and auto.scaled else previous.last_scale_time

    return ModelDeploymentStatus(
        observed_generation=md.generation,
        model_name=md.model_name,
        replicas=len(facts.pods),
        # Ready pods serve some version (VERSION shows which); the Ready condition wants the target.
        ready_replicas=len(ready_pods),
        desired_replicas=facts.desired_replicas,
        ready_summary=f"{len(ready_pods)}/{facts.desired_replicas}",
        selector=selector_string(md),
        endpoint=EndpointStatus.model_validate(endpoint(md)),
        active_version=active,
        target_version=target,
        previous_version=previous_version,
        latency=latency,
        autoscaler=learned,
        integrity=facts.integrity,
        last_load=facts.last_load or previous.last_load,
        rollout=rollout,
        last_scale_time=last_scale_time,
        reason=ready.reason if ready.status != "True" else None,
        conditions=settled_conditions,
    )


ROLLOUT_READY_REASONS = {"Waiting": "CanaryWaiting", "Paused": "CanaryPaused"}


def _rollout_conditions(
    md: ModelDeployment, rollout: RolloutStatus, ready: Condition, progressing: Condition
) -> tuple[Condition, Condition]:
    """While a canary runs, Ready is False with its reason (unless something else is failing);
    after a rollback too: the cluster serves the stable version, not the spec's."""
    if rollout.phase not in ("Waiting", "Progressing", "Paused", "Promoting", "RolledBack"):
        return ready, progressing
    if ready.status != "True" and ready.reason not in PROGRESS_REASONS:
        return ready, progressing  # a failure says more than the rollout does
    message = f"{rollout.summary}: {rollout.message}"
    if rollout.phase == "RolledBack":
        return (
            condition(md, "Ready", "False", "RolledBack", message),
            condition(md, "Progressing", "False", "RolledBack", message),
        )
    reason = ROLLOUT_READY_REASONS.get(rollout.phase, "CanaryInProgress")
    return condition(md, "Ready", "False", reason, message), condition(md, "Progressing", "True", "Canary", message)


def _canary_condition(md: ModelDeployment, rollout: RolloutStatus) -> Condition:
    analysis = rollout.last_analysis
    if rollout.phase == "Succeeded":
        return condition(md, "CanaryHealthy", "True", "Promoted", rollout.message)
    if rollout.phase == "Aborted":
        return condition(md, "CanaryHealthy", "Unknown", "Aborted", rollout.message)
    if analysis is None:
        return condition(md, "CanaryHealthy", "Unknown", "Waiting", rollout.message or "no analysis yet")
    if analysis.result == "Passed":
        return condition(md, "CanaryHealthy", "True", "Healthy", analysis.message)
    if analysis.result == "Inconclusive":
        return condition(md, "CanaryHealthy", "Unknown", "InsufficientTraffic", analysis.message)
    reason = "ErrorRegression" if analysis.reason == "ErrorBurst" else analysis.reason
    return condition(md, "CanaryHealthy", "False", reason, analysis.message)


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def _latency_condition(md: ModelDeployment, auto: AutoscaleFacts | None, previous: ModelDeploymentStatus) -> Condition:
    if auto is None:  # no evaluation in this reconcile: keep what the last one said
        old = previous.condition("LatencyWithinTarget")
        if old is not None:
            return old.model_copy(update={"observed_generation": md.generation})
        return condition(md, "LatencyWithinTarget", "Unknown", "NotMeasured", "no measurement yet")
    unreadable = f"; metrics unreadable on {', '.join(auto.unreadable)}" if auto.unreadable else ""
    if auto.latency_ms is None:
        reason = "MetricsUnavailable" if auto.unreadable else "NoTraffic"
        return condition(md, "LatencyWithinTarget", "Unknown", reason, f"no {auto.metric} latency measured{unreadable}")
    measured = f"{auto.metric} {auto.latency_ms:.0f}ms, target {auto.target_ms}ms{unreadable}"
    if auto.unreachable:
        message = f"{auto.unreachable}; {measured}"
        return condition(md, "LatencyWithinTarget", "False", "TargetBelowServiceTime", message)
    if auto.latency_ms <= auto.target_ms:
        return condition(md, "LatencyWithinTarget", "True", "WithinTarget", measured)
    return condition(md, "LatencyWithinTarget", "False", "AboveTarget", measured)


def status_patch(old: dict[str, Any], new: ModelDeploymentStatus) -> dict[str, Any] | None:
    """A merge patch turning the stored status into new (None: nothing changed, write nothing)."""
    wanted = new.to_body()
    if old == wanted:
        return None
    patch: dict[str, Any] = dict(wanted)
    for key in old:
        if key not in wanted:
            patch[key] = None
    return patch
