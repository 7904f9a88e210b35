"""Canary rollout of a new model version inside the running servers (spec.rollout.strategy:
Canary). Pure: facts in, the next rollout status and what each pod should serve out.

A step switches k of the n ready pods in place (k = ceil(weight x n / 100), 1 <= k <= n - 1),
so the Service's load balancing sends about k/n of the traffic to the new version with no mesh
and no spare GPU. Each analysis compares, over the same window, the canary pods' counters of the
new version with the other pods' counters of the stable version (Triton labels every metric with
{model, version}): compute time per request (a pod's queue does not count) and the failure rate.
Too little traffic is inconclusive (the rollout pauses, never fails); a burst of failures rolls
back at once; a step passes when its pause elapsed and its last analysis passed; after the last
step every pod switches. A rollback switches every pod back in place, and that generation is not
retried until the spec changes. All of it lives in status.rollout: a restarted operator resumes
at the same step (the analysis window starts afresh).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from tritonop import clock
from tritonop.events import Event
from tritonop.api.spec import AnalysisStatus, CanaryAnalysis, CanarySpec, RolloutStatus, SideFigures
from tritonop.promtext import samples

Result = Literal["Passed", "Failed", "Inconclusive", "FastFailed"]


@dataclass(frozen=True)
class VersionCounters:
    """Triton's cumulative counters of one model version on one server."""

    success: float = 0.0
    failure: float = 0.0
    compute_us: float = 0.0  # nv_inference_compute_infer_duration_us

    def __sub__(self, other: VersionCounters) -> VersionCounters:
        # A server restart resets its counters: a negative delta counts as a fresh start.
        if self.success < other.success or self.failure < other.failure:
            return self
        return VersionCounters(
            self.success - other.success, self.failure - other.failure, self.compute_us - other.compute_us
        )

    def __add__(self, other: VersionCounters) -> VersionCounters:
        return VersionCounters(
            self.success + other.success, self.failure + other.failure, self.compute_us + other.compute_us
        )

    @property
    def requests(self) -> float:
        return self.success + self.failure

    def figures(self) -> SideFigures:
        compute = self.compute_us / self.success / 1000.0 if self.success else None
        return SideFigures.model_validate(
            {
                "requests": round(self.requests),
                "errors": round(self.failure),
                "computeMs": None if compute is None else round(compute, 2),
            }
        )


def parse_version_counters(text: str, model: str) -> dict[int, VersionCounters]:
    """One server's /metrics text -> counters by version of `model`."""
    names = {
        "nv_inference_request_success": "success",
        "nv_inference_request_failure": "failure",
        "nv_inference_compute_infer_duration_us": "compute_us",
    }
    found: dict[int, dict[str, float]] = {}
    for name, labels, value in samples(text, names):
        version = labels.get("version", "")
        if labels.get("model") != model or not version.isdigit():
            continue
        values = found.setdefault(int(version), {})
        values[names[name]] = values.get(names[name], 0.0) + value
    return {version: VersionCounters(**values) for version, values in found.items()}


@dataclass(frozen=True)
class Verdict:
    result: Result
    reason: str
    message: str
    canary: VersionCounters
    stable: VersionCounters


def judge(canary: VersionCounters, stable: VersionCounters, analysis: CanaryAnalysis) -> Verdict:
    """One analysis: the canary side against the stable side over the same window."""

    def verdict(result: Result, reason: str, message: str) -> Verdict:
        return Verdict(result, reason, message, canary, stable)

    c, s = canary.figures(), stable.figures()
    if canary.failure >= analysis.fast_fail_errors:
        return verdict(
            "FastFailed",
            "ErrorBurst",
            f"{c.errors} of {c.requests:,} canary requests failed in one window "
            f"(fastFailErrors {analysis.fast_fail_errors})",
        )
    if canary.requests < analysis.min_requests or stable.requests < analysis.min_requests:
        return verdict(
            "Inconclusive",
            "InsufficientTraffic",
            f"too little traffic to judge: canary {c.requests:,}, stable {s.requests:,} requests "
            f"(minRequests {analysis.min_requests:,} each)",
        )
    error_rate = 100.0 * canary.failure / canary.requests
    if error_rate > analysis.max_error_rate_percent:
        stable_rate = 100.0 * stable.failure / stable.requests
        return verdict(
            "Failed",
            "ErrorRegression",
            f"errors {error_rate:.1f}% vs {stable_rate:.1f}% over {c.requests:,} requests "
            f"(maxErrorRatePercent {analysis.max_error_rate_percent:g})",
        )
    if c.compute_ms is not None and s.compute_ms:
        increase = 100.0 * (c.compute_ms - s.compute_ms) / s.compute_ms
        figures = f"compute {c.compute_ms:g} ms vs {s.compute_ms:g} ms ({increase:+.0f}%) over {c.requests:,} requests"
        if increase > analysis.max_latency_increase_percent:
            return verdict(
                "Failed",
                "LatencyRegression",
                f"{figures} (maxLatencyIncreasePercent {analysis.max_latency_increase_percent})",
            )
        return verdict("Passed", "Healthy", figures)
    return verdict("Passed", "Healthy", f"errors {error_rate:.1f}% over {c.requests:,} requests")


def canary_pod_count(weight: int, ready: int) -> int:
    """k = ceil(weight x ready / 100), kept between 1 and ready - 1."""
    return max(1, min(ready - 1, math.ceil(weight * ready / 100)))


def choose_canary_pods(previous: Iterable[str], ready: list[str], k: int) -> list[str]:
    """Keep the pods already switched (no needless loads), add or drop by name to make k."""
    kept = [name for name in previous if name in ready][:k]
    extra = [name for name in sorted(ready) if name not in kept][: k - len(kept)]
    return sorted(kept + extra)


def summary(status: RolloutStatus) -> str:
    canary = f"v{status.canary_version}"
    if status.phase in ("Progressing", "Paused"):
        paused = " paused" if status.phase == "Paused" else ""
        return f"{canary} {status.weight}% {status.step}/{status.steps}{paused}"
    if status.phase == "Succeeded":
        return f"Promoted {canary}"
    return f"{status.phase} {canary}"


@dataclass(frozen=True)
class PodView:
    """A pod as the rollout sees it."""

    name: str
    ready: bool
    versions: tuple[int, ...]  # ready versions on its server
    current: bool = True  # its loaded config is the wanted one


@dataclass(frozen=True)
class Decision:
    rollout: RolloutStatus | None
    events: tuple[Event, ...] = ()
    checked: bool = False  # an analysis ran (the window restarts)
    counts: tuple[str, ...] = field(default_factory=tuple)  # analysis results, for the operator's metrics


def assignment(rollout: RolloutStatus | None, pods: Iterable[str], target: int | None) -> dict[str, int | None]:
    """What each pod should serve now: the canary version on canary pods while a step runs; the
    stable version everywhere while waiting, after a rollback or an abort; else the target."""
    names = list(pods)
    if rollout is None or rollout.phase in ("Succeeded", "Promoting"):
        version = rollout.canary_version if rollout is not None and rollout.phase == "Promoting" else target
        return dict.fromkeys(names, version)
    if rollout.phase in ("Waiting", "RolledBack", "Aborted"):
        return dict.fromkeys(names, rollout.stable_version)
    canary = set(rollout.canary_pods)
    return {name: rollout.canary_version if name in canary else rollout.stable_version for name in names}


def _serving(pods: list[PodView], version: int) -> list[PodView]:
    return [pod for pod in pods if pod.ready and version in pod.versions and pod.current]


def start(
    spec: CanarySpec, generation: int, stable: int, canary: int, ready: list[str], now: str
) -> tuple[RolloutStatus, Event]:
    steps = len(spec.steps)
    base = {
        "stableVersion": stable,
        "canaryVersion": canary,
        "generation": generation,
        "steps": steps,
    }
    if len(ready) < 2:
        status = RolloutStatus.model_validate(
            {
                **base,
                "phase": "Waiting",
                "message": f"a canary needs 2 or more ready replicas ({len(ready)} ready): version {canary} waits; "
                f"version {stable} keeps serving",
            }
        )
        return _with_summary(status), Event("Normal", "CanaryWaiting", status.message)
    weight = spec.steps[0].weight
    pods = choose_canary_pods([], ready, canary_pod_count(weight, len(ready)))
    status = RolloutStatus.model_validate(
        {
            **base,
            "phase": "Progressing",
            "step": 1,
            "weight": weight,
            "canaryPods": pods,
            "message": f"step 1/{steps}: switching {', '.join(pods)} to version {canary}",
        }
    )
    return _with_summary(status), Event(
        "Normal",
        "CanaryStarted",
        f"version {canary} on {len(pods)} of {len(ready)} replicas ({', '.join(pods)}), {stable} on the rest",
    )


def _with_summary(status: RolloutStatus) -> RolloutStatus:
    return status.model_copy(update={"summary": summary(status)})


def advance(
    previous: RolloutStatus | None,
    spec: CanarySpec,
    generation: int,
    target: int | None,
    active_version: int | None,
    pods: list[PodView],
    window: tuple[VersionCounters, VersionCounters] | None,
    last_check_age: float | None,
    now: str,
) -> Decision:
    """The next rollout status.

    previous: status.rollout; target: the spec's version; active_version: the version every
    ready pod serves (None: mixed or none). window: (canary side, stable side) counters since the
    last analysis (None: no window yet, e.g. just after a restart or a step change);
    last_check_age: seconds since that window began.
    """
    ready = sorted(pod.name for pod in pods if pod.ready)
    rollout = previous
    if rollout is not None and rollout.active:
        if target == rollout.stable_version:
            aborted = _with_summary(
                rollout.model_copy(
                    update={
                        "phase": "Aborted",
                        "generation": generation,
                        "message": f"the spec went back to version {target}: canary pods switched back in place",
                    }
                )
            )
            return Decision(aborted, (Event("Normal", "CanaryAborted", aborted.message),))
        if target is not None and target != rollout.canary_version:
            status, event = start(spec, generation, rollout.stable_version, target, ready, now)
            return Decision(
                status,
                (
                    Event(
                        "Normal",
                        "CanaryRestarted",
                        f"version {target} replaces {rollout.canary_version} as the canary; {event.message}",
                    ),
                ),
            )
        return _step(rollout, spec, generation, pods, ready, window, last_check_age, now)
    if not starts(rollout, target, active_version, generation) or target is None or active_version is None:
        return Decision(rollout)
    status, event = start(spec, generation, active_version, target, ready, now)
    return Decision(status, (event,))


def starts(rollout: RolloutStatus | None, target: int | None, active_version: int | None, generation: int) -> bool:
    """A new rollout begins: none under way, and the spec asks for a version other than the one
    every ready pod serves (none serving yet: the first version simply loads). A rolled-back
    version is not retried until the spec changes (Flagger's rule)."""
    if rollout is not None and rollout.active:
        return False
    if target is None or active_version is None or target == active_version:
        return False
    rolled_back = rollout is not None and rollout.phase == "RolledBack" and rollout.canary_version == target
    return not (rolled_back and rollout is not None and rollout.generation == generation)


def _step(
    rollout: RolloutStatus,
    spec: CanarySpec,
    generation: int,
    pods: list[PodView],
    ready: list[str],
    window: tuple[VersionCounters, VersionCounters] | None,
    last_check_age: float | None,
    now: str,
) -> Decision:
    rollout = rollout.model_copy(update={"generation": generation, "steps": len(spec.steps)})
    if rollout.phase == "Waiting":
        if len(ready) < 2:
            return Decision(rollout)
        status, event = start(spec, generation, rollout.stable_version, rollout.canary_version, ready, now)
        return Decision(status, (event,))
    if rollout.phase == "Promoting":
        behind = [name for name in ready if name not in {p.name for p in _serving(pods, rollout.canary_version)}]
        if behind:
            return Decision(rollout)
        done = _with_summary(
            rollout.model_copy(
                update={
                    "phase": "Succeeded",
                    "canary_pods": [],
                    "message": f"version {rollout.canary_version} promoted to every replica",
                }
            )
        )
        return Decision(done, (Event("Normal", "Promoted", done.message),))

    # Progressing or Paused: keep k canary pods among the ready ones (scale-ups join to keep the share).
    step = spec.steps[min(rollout.step, len(spec.steps)) - 1]
    if len(ready) < 2:
        waiting = rollout.model_copy(update={"message": f"{len(ready)} ready replica(s): the step waits"})
        return Decision(_with_summary(waiting))
    k = canary_pod_count(step.weight, len(ready))
    canary_pods = choose_canary_pods(rollout.canary_pods, ready, k)
    if canary_pods != rollout.canary_pods:
        moved = rollout.model_copy(update={"canary_pods": canary_pods, "weight": step.weight, "step_started_at": None})
        return Decision(_with_summary(moved))
    serving = {pod.name for pod in _serving(pods, rollout.canary_version)}
    if not set(canary_pods) <= serving:
        switching = rollout.model_copy(
            update={
                "message": f"step {rollout.step}/{len(spec.steps)}: switching {', '.join(canary_pods)} to "
                f"version {rollout.canary_version}",
                "step_started_at": None,
            }
        )
        return Decision(_with_summary(switching))
    if rollout.step_started_at is None:
        started = rollout.model_copy(
            update={
                "step_started_at": now,
                "message": f"step {rollout.step}/{len(spec.steps)}: version {rollout.canary_version} on "
                f"{len(canary_pods)} of {len(ready)} replicas, analysing",
            }
        )
        return Decision(_with_summary(started))
    if window is None:
        return Decision(rollout)
    canary, stable = window
    due = last_check_age is not None and last_check_age >= spec.analysis.interval_seconds
    burst = canary.failure >= spec.analysis.fast_fail_errors
    if not due and not burst:
        return Decision(rollout)
    verdict = judge(canary, stable, spec.analysis)
    total = canary.requests + stable.requests
    analysis = AnalysisStatus.model_validate(
        {
            "result": verdict.result,
            "reason": verdict.reason,
            "message": verdict.message,
            "canary": canary.figures().model_dump(by_alias=True),
            "stable": stable.figures().model_dump(by_alias=True),
            "at": now,
        }
    )
    update: dict[str, object] = {
        "last_analysis": analysis,
        "measured_share": round(100.0 * canary.requests / total, 1) if total else None,
    }
    counted = (verdict.result,)
    if verdict.result == "FastFailed" or (
        verdict.result == "Failed" and rollout.failed_checks + 1 > spec.analysis.failure_limit
    ):
        failures = rollout.failed_checks + (verdict.result == "Failed")
        rolled = _with_summary(
            rollout.model_copy(
                update={
                    **update,
                    "phase": "RolledBack",
                    "failed_checks": failures,
                    "canary_pods": [],
                    "message": f"rolled back to version {rollout.stable_version}: {verdict.reason}: {verdict.message}",
                }
            )
        )
        return Decision(
            rolled,
            (
                Event(
                    "Warning",
                    "RolledBack",
                    f"version {rollout.canary_version} -> {rollout.stable_version}: "
                    f"{verdict.reason}: {verdict.message}",
                ),
            ),
            checked=True,
            counts=counted,
        )
    if verdict.result == "Failed":
        failed = rollout.model_copy(
            update={
                **update,
                "phase": "Progressing",
                "failed_checks": rollout.failed_checks + 1,
                "message": f"analysis failed ({rollout.failed_checks + 1} of {spec.analysis.failure_limit} "
                f"tolerated): {verdict.message}",
            }
        )
        return Decision(
            _with_summary(failed),
            (Event("Warning", "AnalysisFailed", f"{verdict.reason}: {verdict.message}"),),
            checked=True,
            counts=counted,
        )
    if verdict.result == "Inconclusive":
        paused = rollout.model_copy(update={**update, "phase": "Paused", "message": verdict.message})
        return Decision(_with_summary(paused), checked=True, counts=counted)
    # Passed: the step passes once its pause has elapsed.
    elapsed = _age(rollout.step_started_at, now)
    if elapsed < step.pause_seconds:
        passing = rollout.model_copy(
            update={
                **update,
                "phase": "Progressing",
                "message": f"step {rollout.step}/{len(spec.steps)} passing: {verdict.message}; "
                f"{step.pause_seconds - elapsed:.0f}s of its pause left",
            }
        )
        return Decision(_with_summary(passing), checked=True, counts=counted)
    passed = Event("Normal", "StepPassed", f"step {rollout.step}/{len(spec.steps)} ({step.weight}%): {verdict.message}")
    if rollout.step >= len(spec.steps):
        promoting = rollout.model_copy(
            update={
                **update,
                "phase": "Promoting",
                "message": f"every step passed: switching every replica to version {rollout.canary_version}",
            }
        )
        return Decision(_with_summary(promoting), (passed,), checked=True, counts=counted)
    nxt = spec.steps[rollout.step]
    k = canary_pod_count(nxt.weight, len(ready))
    following = rollout.model_copy(
        update={
            **update,
            "phase": "Progressing",
            "step": rollout.step + 1,
            "weight": nxt.weight,
            "canary_pods": choose_canary_pods(canary_pods, ready, k),
            "step_started_at": None,
            "message": f"step {rollout.step + 1}/{len(spec.steps)}: {k} of {len(ready)} replicas",
        }
    )
    return Decision(_with_summary(following), (passed,), checked=True, counts=counted)


def _age(stamp: str | None, now: str) -> float:
    if stamp is None:
        return 0.0
    return (clock.parse(now) - clock.parse(stamp)).total_seconds()


def window_sides(
    baseline: Mapping[str, Mapping[int, VersionCounters]],
    current: Mapping[str, Mapping[int, VersionCounters]],
    canary_pods: Iterable[str],
    canary_version: int,
    stable_version: int,
) -> tuple[VersionCounters, VersionCounters]:
    """Counters since the baseline: the canary version on canary pods, the stable version on
    the others (pods missing from the baseline joined since: their whole counters count)."""
    canary_set = set(canary_pods)
    canary, stable = VersionCounters(), VersionCounters()
    for pod, versions in current.items():
        side_version = canary_version if pod in canary_set else stable_version
        now = versions.get(side_version, VersionCounters())
        then = baseline.get(pod, {}).get(side_version, VersionCounters())
        delta = now - then
        if pod in canary_set:
            canary = canary + delta
        else:
            stable = stable + delta
    return canary, stable
