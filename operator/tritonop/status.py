"""Pure: what the reconciler observed -> the ModelDeployment's status (conditions and all).

Kubernetes API conventions: conditions with type/status/reason/message/lastTransitionTime/
observedGeneration; lastTransitionTime only moves when status flips.
"""

from __future__ import annotations

from typing import Any, overload

from tritonop.api.spec import ModelDeployment
from tritonop.api.status import (
    AutoscalerStatus,
    Condition,
    EndpointStatus,
    LatencyStatus,
    ModelDeploymentStatus,
    RolloutStatus,
    StartupStatus,
    TokenLatencyStatus,
)
from tritonop.autoscale.tokens import TRITON_FIRST_RESPONSE, VLLM_ITL, VLLM_TTFT, Percentile
from tritonop.facts import FAILING_WAIT_REASONS, AutoscaleFacts, Facts, PodFacts, PodStart, TokenFacts
from tritonop.render.objects import endpoint, selector_string
from tritonop.render.triton_release import first_response_histogram

CONDITION_ORDER = (
    "Ready",
    "RepositoryValid",
    "Scheduled",
    "ModelLoaded",
    "ModelCached",
    "Progressing",
    "CanaryHealthy",
    "LatencyWithinTarget",
    "Synced",
)


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
    verification = report.verification  # a version without a manifest serves, never called verified
    if report.readable and verification is not None:
        return condition(
            md, "RepositoryValid", "True", verification, f"{report.message} (checked by {report.checked_by})"
        )
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
    staging = sorted(pod.name for pod in live if pod.awaiting_staging and pod.name in behind)
    failed_staging = [entry for entry in facts.cache or () if entry.state == "Failed"]
    if staging and failed_staging:
        first = failed_staging[0]
        return condition(
            md,
            "ModelLoaded",
            "False",
            "StagingFailed",
            f"version {first.version} not loaded on {', '.join(staging)}: staging it on node {first.node} failed "
            f"({first.reason}: {first.message}); the loaded version keeps serving",
        )
    if staging:
        return condition(
            md,
            "ModelLoaded",
            "False",
            "AwaitingStaging",
            f"version {version} not loaded on {', '.join(staging)} until it is in their nodes' caches "
            "(status.cache); the loaded version keeps serving",
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


def _cached_condition(md: ModelDeployment, facts: Facts) -> Condition:
    """spec.model.cache: whether every version the pods need is on their nodes."""
    entries = facts.cache or ()
    for state in ("Failed", "NoRoom"):
        bad = [entry for entry in entries if entry.state == state]
        if bad:
            first = bad[0]
            where = f"version {first.version} on node {first.node}"
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return condition(md, "ModelCached", "False", first.reason or state, f"{where}: {first.message}{more}")
    staging = [entry for entry in entries if entry.state == "Staging"]
    if staging:
        names = ", ".join(f"{e.version} on {e.node}" for e in staging)
        return condition(md, "ModelCached", "False", "Staging", f"staging version {names}")
    if not entries:
        return condition(
            md, "ModelCached", "Unknown", "NothingToStage", "no pod is on a node yet, or the version is not known yet"
        )
    nodes = sorted({entry.node for entry in entries})
    return condition(
        md, "ModelCached", "True", "Cached", f"every needed version is in the cache of {len(nodes)} node(s)"
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
        "AwaitingStaging",
        "Staging",
        "SwappingVersion",
        "CanaryInProgress",
        "CanaryPaused",
        "CanaryWaiting",
    }
)
# A server that did not answer a load (restarting, going away): the next reconcile looks again.
TRANSIENT_REASONS = frozenset({"ServerUnreachable"})


# Ready, declared (cluster-api's summary style): True when every desired replica serves the
# version it should, and nothing is switching, rolling out, crashing or refused. Else its reason
# is the first of these conditions that is False for a reason that is not progress, then a
# crashing server, then the switch or rollout under way, then WaitingForReplicas.
READY_EXPLAINED_BY = ("Synced", "RepositoryValid", "Scheduled", "ModelLoaded")


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

    explaining = [
        _synced_condition(md, facts),
        _repository_condition(md, facts, bool(serving)),
        _scheduled_condition(md, facts),
        _loaded_condition(md, facts),
    ]
    switching = bool(serving) and len(serving) < len(ready_pods)
    progressing = _progressing_condition(md, facts, switching, len(serving), len(ready_pods), target)
    ready = _ready_condition(md, facts, explaining, progressing, switching, len(serving), target)
    cached = [_cached_condition(md, facts)] if md.spec.model.cache is not None else []
    conditions = [ready, *explaining, progressing, *cached]
    rollout = facts.rollout
    if rollout is not None:
        ready, progressing = _rollout_conditions(md, rollout, ready, progressing)
        conditions = [ready, *explaining, progressing, _canary_condition(md, rollout), *cached]
    if md.spec.autoscaling is not None:
        conditions.append(_latency_condition(md, facts.autoscale, previous))
    latency, last_scale_time, learned = _autoscaler_status(md, facts.autoscale, previous, now)

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
        token_latency=_token_status(md, facts.autoscale, previous),
        autoscaler=learned,
        integrity=facts.integrity,
        last_load=facts.last_load or previous.last_load,
        startup=startup_status(facts.pod_starts, previous.startup),
        cache=list(facts.cache) if facts.cache is not None else None,
        rollout=rollout,
        last_scale_time=last_scale_time,
        reason=ready.reason if ready.status != "True" else None,
        conditions=with_transition_times(conditions, previous, now),
    )


# status.startup keeps the totals of this many starts: enough to see a spread, small to write.
RECENT_STARTS = 5


def startup_status(starts: tuple[PodStart, ...], previous: StartupStatus | None) -> StartupStatus | None:
    """The latest measured start (the last of `starts`, else status's), with the recent totals."""
    if not starts:
        return previous
    recent = [*(previous.recent_total_seconds if previous is not None else ()), *(_tenths(s.total) for s in starts)]
    last = starts[-1]
    return StartupStatus(
        pod=last.pod,
        ready_at=last.ready_at,
        total_seconds=_tenths(last.total),
        scheduling_seconds=_tenths(last.scheduling),
        container_seconds=_tenths(last.container),
        server_seconds=_tenths(last.server),
        staging_seconds=_tenths(last.staging),
        load_seconds=_tenths(last.load),
        ready_seconds=_tenths(last.ready),
        recent_total_seconds=recent[-RECENT_STARTS:],
    )


def with_transition_times(conditions: list[Condition], previous: ModelDeploymentStatus, now: str) -> list[Condition]:
    """The condition setter: lastTransitionTime moves only when a condition's status flips; the
    conditions in their documented order."""
    settled = []
    for cond in conditions:
        old = previous.condition(cond.type)
        since = old.last_transition_time if old is not None and old.status == cond.status else now
        settled.append(cond.model_copy(update={"last_transition_time": since}))
    return sorted(settled, key=lambda c: CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else 99)


def _progressing_condition(
    md: ModelDeployment, facts: Facts, switching: bool, serving: int, ready: int, target: int | None
) -> Condition:
    if facts.swap and not facts.swap_blocked:
        return condition(md, "Progressing", "True", "SwappingVersion", facts.swap)
    if switching:
        message = f"{serving}/{ready} replicas serve version {target}"
        return condition(md, "Progressing", "True", "VersionSwitch", message)
    if facts.rollout_pending or len(facts.pods) != facts.desired_replicas:
        message = f"{len(facts.pods)} pod(s), {facts.desired_replicas} desired"
        return condition(md, "Progressing", "True", "RollingOut", message)
    return condition(md, "Progressing", "False", "Complete", "no rollout or version switch under way")


def _ready_condition(
    md: ModelDeployment,
    facts: Facts,
    explaining: list[Condition],
    progressing: Condition,
    switching: bool,
    serving: int,
    target: int | None,
) -> Condition:
    """READY_EXPLAINED_BY above, as code."""
    crashing = next((pod for pod in facts.pods if pod.waiting_reason in FAILING_WAIT_REASONS), None)
    settled = not switching and not facts.rollout_pending and crashing is None and not facts.apply_refused
    if serving >= facts.desired_replicas and settled and (facts.desired_replicas == 0 or serving):
        message = f"{serving}/{facts.desired_replicas} replicas serve version {target}"
        return condition(md, "Ready", "True", "Serving", message)
    by_type = {cond.type: cond for cond in explaining}
    for kind in READY_EXPLAINED_BY:
        failing = by_type[kind]
        if failing.status == "False" and failing.reason not in PROGRESS_REASONS | TRANSIENT_REASONS:
            return condition(md, "Ready", "False", failing.reason, failing.message)
    if crashing is not None:
        reason = crashing.waiting_reason or "ServerFailing"
        return condition(md, "Ready", "False", reason, f"{crashing.name}: {crashing.waiting_message}")
    if switching or facts.rollout_pending:
        return condition(md, "Ready", "False", progressing.reason, progressing.message)
    message = f"{serving}/{facts.desired_replicas} replicas serve the target version"
    return condition(md, "Ready", "False", "WaitingForReplicas", message)


def _autoscaler_status(
    md: ModelDeployment, auto: AutoscaleFacts | None, previous: ModelDeploymentStatus, now: str
) -> tuple[LatencyStatus | None, str | None, AutoscalerStatus | None]:
    """status.latency, lastScaleTime and the learned memory (kept from status until measured)."""
    if md.spec.autoscaling is None:
        return None, None, None
    latency = previous.latency
    learned = auto.learned if auto is not None and auto.learned is not None else previous.autoscaler
    if auto is not None and any(v is not None for v in (auto.p95_ms, auto.p99_ms, auto.average_ms, auto.queue_ms)):
        latency = LatencyStatus(
            p95_ms=_rounded(auto.p95_ms),
            p99_ms=_rounded(auto.p99_ms),
            average_ms=_rounded(auto.average_ms),
            queue_ms=_rounded(auto.queue_ms),
            window_seconds=round(auto.window_seconds),
        )
    elif auto is not None:
        latency = None
    last_scale_time = now if auto is not None and auto.scaled else previous.last_scale_time
    return latency, last_scale_time, learned


def _token_status(
    md: ModelDeployment, auto: AutoscaleFacts | None, previous: ModelDeploymentStatus
) -> TokenLatencyStatus | None:
    """status.tokenLatency: kept between evaluations, gone when nothing was measured."""
    if md.spec.autoscaling is None or md.spec.autoscaling.token_latency is None:
        return None
    if auto is None:
        return previous.token_latency
    tokens = auto.tokens
    if tokens is None or (tokens.ttft is None and tokens.itl is None):
        return None
    return TokenLatencyStatus(
        percentile=tokens.percentile,
        time_to_first_token_ms=_rounded(tokens.ttft.ms if tokens.ttft else None),
        inter_token_latency_ms=_rounded(tokens.itl.ms if tokens.itl else None),
        source=tokens.source,
        window_seconds=round(tokens.window_seconds),
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


@overload
def _tenths(value: float) -> float: ...
@overload
def _tenths(value: None) -> None: ...
def _tenths(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


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
    figures = [f"{auto.metric} {auto.latency_ms:.0f}ms, target {auto.target_ms}ms"]
    verdicts: list[bool | None] = [auto.latency_ms <= auto.target_ms]
    unmeasured: list[str] = []
    # With spec.autoscaling.tokenLatency, TTFT and ITL must hold too (issue 24).
    targets = md.spec.autoscaling.token_latency if md.spec.autoscaling is not None else None
    if targets is not None:
        tokens = auto.tokens or TokenFacts(targets.percentile)
        for name, target, figure in (
            ("TTFT", targets.time_to_first_token_ms, tokens.ttft),
            ("ITL", targets.inter_token_latency_ms, tokens.itl),
        ):
            if target is None:
                continue
            if figure is None:
                exported = tokens.ttft_exported if name == "TTFT" else tokens.itl_exported
                unmeasured.append(f"no {name} in the window" if exported else _missing_family(md, name))
                continue
            figures.append(_token_figure(name, targets.percentile, figure, target))
            verdicts.append(TokenFacts.judge(figure, target))
    measured = "; ".join(figures) + unreadable
    if auto.unreachable:
        message = f"{auto.unreachable}; {measured}"
        return condition(md, "LatencyWithinTarget", "False", "TargetBelowServiceTime", message)
    if False in verdicts:
        return condition(md, "LatencyWithinTarget", "False", "AboveTarget", measured)
    if unmeasured or None in verdicts:
        message = "; ".join([*unmeasured, measured])
        return condition(md, "LatencyWithinTarget", "Unknown", "TokenLatencyNotMeasured", message)
    return condition(md, "LatencyWithinTarget", "True", "WithinTarget", measured)


def _token_figure(name: str, percentile: float, figure: Percentile, target: int) -> str:
    if figure.beyond_range:  # the histogram's highest finite bucket is all that is known
        return f"{name} p{percentile:g} above {figure.ms:.0f}ms (the histogram's highest bucket), target {target}ms"
    return f"{name} p{percentile:g} {figure.ms:.0f}ms, target {target}ms"


def _missing_family(md: ModelDeployment, name: str) -> str:
    if name == "TTFT":
        return (
            f"no TTFT measured: the pods export neither {VLLM_TTFT} (Triton's vLLM backend with "
            f"REPORT_CUSTOM_METRICS) nor {TRITON_FIRST_RESPONSE} (Triton 24.11+ with --metrics-config="
            f"histogram_latencies=true; {first_response_histogram(md).why})"
        )
    return f"no ITL measured: the pods do not export {VLLM_ITL} (Triton's vLLM backend with REPORT_CUSTOM_METRICS)"


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
