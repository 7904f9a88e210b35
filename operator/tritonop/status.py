"""Pure: what the reconciler observed -> the ModelDeployment's status (conditions and all).

Kubernetes API conventions: conditions with type/status/reason/message/lastTransitionTime/
observedGeneration; lastTransitionTime only moves when status flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonop.api.spec import ModelDeployment
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
CONDITION_ORDER = ("Ready", "RepositoryValid", "Scheduled", "ModelLoaded", "Progressing", "LatencyWithinTarget")


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


def condition(md: ModelDeployment, kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message, "observedGeneration": md.generation}


def _repository_condition(md: ModelDeployment, facts: Facts, served_anywhere: bool) -> dict[str, Any]:
    report = facts.repository
    if report.problem:
        return condition(md, "RepositoryValid", "False", report.problem, report.message)
    if report.readable:
        return condition(md, "RepositoryValid", "True", "Valid", report.message)
    if served_anywhere:
        return condition(md, "RepositoryValid", "True", "LoadedByTriton", "Triton loaded the model from the repository")
    return condition(md, "RepositoryValid", "Unknown", "NotReadableByOperator", report.message)


def _scheduled_condition(md: ModelDeployment, facts: Facts) -> dict[str, Any]:
    # Only the scheduler's verdict counts: a pod it has not looked at yet is not a problem.
    pending = [pod for pod in facts.pods if not pod.scheduled and pod.unschedulable_message is not None]
    if not pending:
        return condition(md, "Scheduled", "True", "AllScheduled", f"{len(facts.pods)} pod(s) placed on nodes")
    message = pending[0].unschedulable_message or ""
    reason = "InsufficientGPU" if f"Insufficient {facts.gpu_resource}" in message else "Unschedulable"
    return condition(md, "Scheduled", "False", reason, f"{len(pending)} pod(s) not scheduled: {message}")


def _loaded_condition(md: ModelDeployment, facts: Facts) -> dict[str, Any]:
    failed = [pod for pod in facts.pods if pod.load_error]
    if failed:
        return condition(md, "ModelLoaded", "False", "LoadFailed", f"{failed[0].name}: {failed[0].load_error}")
    live = [pod for pod in facts.pods if pod.live]
    if not live:
        return condition(md, "ModelLoaded", "Unknown", "NoServerRunning", "no Triton server is up yet")
    behind = [pod.name for pod in live if not pod.serves(facts.target_version)]
    if behind:
        return condition(md, "ModelLoaded", "False", "Loading", f"loading on {', '.join(sorted(behind))}")
    version = facts.target_version if facts.target_version is not None else "latest"
    return condition(md, "ModelLoaded", "True", "Loaded", f"version {version} loaded on {len(live)} server(s)")


def _active_version(facts: Facts, ready_pods: list[PodFacts]) -> int | None:
    """The version every ready replica serves (during a switch: the one they still share)."""
    if not ready_pods:
        return None
    common = set(ready_pods[0].ready_versions)
    for pod in ready_pods[1:]:
        common &= set(pod.ready_versions)
    if facts.target_version in common:
        return facts.target_version
    return max(common) if common else None


def compute_status(md: ModelDeployment, facts: Facts, previous: dict[str, Any], now: str) -> dict[str, Any]:
    ready_pods = [pod for pod in facts.pods if pod.ready]
    serving = [pod for pod in ready_pods if pod.serves(facts.target_version)]
    active = _active_version(facts, ready_pods)
    target = facts.target_version if facts.target_version is not None else active
    previous_version = previous.get("previousVersion")
    if active is not None and previous.get("activeVersion") not in (None, active):
        previous_version = previous["activeVersion"]

    repository = _repository_condition(md, facts, bool(serving))
    scheduled = _scheduled_condition(md, facts)
    loaded = _loaded_condition(md, facts)
    switching = bool(serving) and len(serving) < len(ready_pods)
    if switching:
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
    settled = not switching and not facts.rollout_pending and crashing is None
    if ready_count >= facts.desired_replicas and settled and (facts.desired_replicas == 0 or serving):
        ready = condition(
            md, "Ready", "True", "Serving", f"{ready_count}/{facts.desired_replicas} replicas serve version {target}"
        )
    else:
        for failing in (repository, scheduled, loaded):
            if failing["status"] == "False" and failing["reason"] != "Loading":
                reason, message = failing["reason"], failing["message"]
                break
        else:
            if crashing is not None:
                reason = crashing.waiting_reason or "ServerFailing"
                message = f"{crashing.name}: {crashing.waiting_message}"
            elif switching or facts.rollout_pending:
                reason, message = progressing["reason"], progressing["message"]
            else:
                reason = "WaitingForReplicas"
                message = f"{ready_count}/{facts.desired_replicas} replicas serve the target version"
        ready = condition(md, "Ready", "False", reason, message)

    conditions = [ready, repository, scheduled, loaded, progressing]
    if md.spec.autoscaling is not None:
        conditions.append(_latency_condition(md, facts.autoscale, previous))
    old_conditions = {c.get("type"): c for c in previous.get("conditions") or []}
    for cond in conditions:
        old = old_conditions.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"]
        cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same and old else now
    conditions.sort(key=lambda c: CONDITION_ORDER.index(c["type"]) if c["type"] in CONDITION_ORDER else 99)

    status: dict[str, Any] = {
        "observedGeneration": md.generation,
        "modelName": md.model_name,
        "replicas": len(facts.pods),
        # Ready pods serve some version (VERSION shows which); the Ready condition wants the target.
        "readyReplicas": len(ready_pods),
        "desiredReplicas": facts.desired_replicas,
        "readySummary": f"{len(ready_pods)}/{facts.desired_replicas}",
        "selector": selector_string(md),
        "endpoint": endpoint(md),
        "conditions": conditions,
    }
    for key, value in (("activeVersion", active), ("targetVersion", target), ("previousVersion", previous_version)):
        if value is not None:
            status[key] = value
    if ready["status"] != "True":
        status["reason"] = ready["reason"]
    if md.spec.autoscaling is not None:
        auto = facts.autoscale
        if auto is not None:
            latency = {
                key: round(value)
                for key, value in (("p95Ms", auto.p95_ms), ("averageMs", auto.average_ms), ("queueMs", auto.queue_ms))
                if value is not None
            }
            if latency:
                status["latency"] = {**latency, "windowSeconds": round(auto.window_seconds)}
        elif "latency" in previous:
            status["latency"] = previous["latency"]
        if auto is not None and auto.scaled:
            status["lastScaleTime"] = now
        elif "lastScaleTime" in previous:
            status["lastScaleTime"] = previous["lastScaleTime"]
    return status


def _latency_condition(md: ModelDeployment, auto: AutoscaleFacts | None, previous: dict[str, Any]) -> dict[str, Any]:
    if auto is None:  # no evaluation in this reconcile: keep what the last one said
        old = next((c for c in previous.get("conditions") or [] if c.get("type") == "LatencyWithinTarget"), None)
        if old is not None:
            return {k: v for k, v in old.items() if k != "lastTransitionTime"} | {"observedGeneration": md.generation}
        return condition(md, "LatencyWithinTarget", "Unknown", "NotMeasured", "no measurement yet")
    unreadable = f"; metrics unreadable on {', '.join(auto.unreadable)}" if auto.unreadable else ""
    if auto.latency_ms is None:
        reason = "MetricsUnavailable" if auto.unreadable else "NoTraffic"
        return condition(md, "LatencyWithinTarget", "Unknown", reason, f"no {auto.metric} latency measured{unreadable}")
    measured = f"{auto.metric} {auto.latency_ms:.0f}ms, target {auto.target_ms}ms{unreadable}"
    if auto.latency_ms <= auto.target_ms:
        return condition(md, "LatencyWithinTarget", "True", "WithinTarget", measured)
    return condition(md, "LatencyWithinTarget", "False", "AboveTarget", measured)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning old into new (None: nothing changed, write nothing)."""
    if old == new:
        return None
    patch: dict[str, Any] = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
