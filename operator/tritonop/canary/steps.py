"""Pure: the canary rollout's step machine (spec.rollout.strategy: Canary). Facts in, the next
rollout status and its events out.

A rollout starts when the spec asks for a version other than the one every ready pod serves.
Each phase under way has its own function (PHASES):
- Waiting: fewer than 2 ready replicas; it starts once there are 2;
- Progressing, Paused: the step's canary pods switch in place, its clock starts once they all
  serve, then every due window is judged (judge.py) and the verdict has its own function
  (VERDICTS): Passed (the step passes once its pause elapsed; after the last step every pod
  switches), Failed (tolerated failureLimit times, then rolled back), Inconclusive (too little
  traffic: paused, never failed), FastFailed (a burst of failures: rolled back at once);
- Promoting: every pod switches; Succeeded once they all serve the canary version.
The spec going back to the stable version aborts; another new version restarts from the stable
one. A rollback switches every pod back in place, and that generation is not retried until the
spec changes. All of it lives in status.rollout, changed only through `changed` (validated): a
restarted operator resumes at the same step (the analysis window starts afresh).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from tritonop import clock
from tritonop.api.spec import CanarySpec, CanaryStep
from tritonop.api.status import RolloutStatus
from tritonop.canary.counters import Sides
from tritonop.canary.judge import Result, Verdict, judge
from tritonop.canary.pods import PodView, canary_pod_count, choose_canary_pods, serving
from tritonop.events import Event


@dataclass(frozen=True)
class StepOutcome:
    rollout: RolloutStatus | None
    events: tuple[Event, ...] = ()
    checked: bool = False  # an analysis ran (the window restarts)
    counts: tuple[str, ...] = field(default_factory=tuple)  # analysis results, for the operator's metrics


@dataclass(frozen=True)
class StepInputs:
    """One reconcile's facts, as the step machine sees them."""

    previous: RolloutStatus | None  # status.rollout
    spec: CanarySpec
    generation: int  # metadata.generation
    target: int | None  # the spec's version
    active_version: int | None  # the version every ready pod serves (None: mixed or none)
    pods: tuple[PodView, ...]
    window: Sides | None  # counters since the last analysis (None: no window yet, e.g. after a restart)
    age: float | None  # seconds since that window began
    now: str
    token_quantile: float = 0.95  # a streaming model's TTFT/ITL percentile (spec.autoscaling.tokenLatency)

    @property
    def ready(self) -> list[str]:
        return sorted(pod.name for pod in self.pods if pod.ready)

    @property
    def steps(self) -> int:
        return len(self.spec.steps)

    def step_of(self, rollout: RolloutStatus) -> CanaryStep:
        return self.spec.steps[min(rollout.step, self.steps) - 1]


def changed(rollout: RolloutStatus | None, **fields: object) -> RolloutStatus:
    """`rollout` (None: a new one) with `fields` set, validated. Python field names only: status
    reads back ignoring unknown keys, so a misspelt name would be silently dropped; it raises here."""
    unknown = sorted(fields.keys() - RolloutStatus.model_fields.keys())
    if unknown:
        raise TypeError(f"RolloutStatus has no field {', '.join(unknown)}")
    base = {} if rollout is None else rollout.model_dump()
    return RolloutStatus.model_validate({**base, **fields})


def moved(rollout: RolloutStatus | None, **fields: object) -> RolloutStatus:
    """A move of the step machine: `changed`, and its summary recomputed."""
    status = changed(rollout, **fields)
    return changed(status, summary=summary(status))


def summary(status: RolloutStatus) -> str:
    """kubectl get's ROLLOUT column, e.g. 'v4 25% 1/2' or 'RolledBack v4'."""
    canary = f"v{status.canary_version}"
    if status.phase in ("Progressing", "Paused"):
        paused = " paused" if status.phase == "Paused" else ""
        return f"{canary} {status.weight}% {status.step}/{status.steps}{paused}"
    if status.phase == "Succeeded":
        return f"Promoted {canary}"
    return f"{status.phase} {canary}"


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


def advance(
    previous: RolloutStatus | None,
    spec: CanarySpec,
    generation: int,
    target: int | None,
    active_version: int | None,
    pods: list[PodView],
    window: Sides | None,
    last_check_age: float | None,
    now: str,
    token_quantile: float = 0.95,
) -> StepOutcome:
    """The next rollout status (the fields are StepInputs')."""
    inputs = StepInputs(
        previous, spec, generation, target, active_version, tuple(pods), window, last_check_age, now, token_quantile
    )
    if previous is None or not previous.active:
        return _idle(inputs)
    redirected = _redirected(previous, inputs)
    if redirected is not None:
        return redirected
    return PHASES[previous.phase](changed(previous, generation=generation, steps=inputs.steps), inputs)


def _idle(inputs: StepInputs) -> StepOutcome:
    """None under way: one starts when the spec asks for a new version."""
    previous, target, active = inputs.previous, inputs.target, inputs.active_version
    if target is None or active is None or not starts(previous, target, active, inputs.generation):
        return StepOutcome(previous)
    status, event = _start(inputs, active, target)
    return StepOutcome(status, (event,))


def _redirected(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome | None:
    """The spec moved mid-rollout: back to the stable version aborts, to another new version
    restarts from the stable one (None: it still asks for the canary version)."""
    target = inputs.target
    if target == rollout.stable_version:
        aborted = moved(
            rollout,
            phase="Aborted",
            generation=inputs.generation,
            message=f"the spec went back to version {target}: canary pods switched back in place",
        )
        return StepOutcome(aborted, (Event("Normal", "CanaryAborted", aborted.message),))
    if target is None or target == rollout.canary_version:
        return None
    status, event = _start(inputs, rollout.stable_version, target)
    message = f"version {target} replaces {rollout.canary_version} as the canary; {event.message}"
    return StepOutcome(status, (Event("Normal", "CanaryRestarted", message),))


def _start(inputs: StepInputs, stable: int, canary: int) -> tuple[RolloutStatus, Event]:
    """Step 1 on k of the ready pods, or Waiting while fewer than 2 are ready."""
    ready, steps = inputs.ready, inputs.steps
    base = {"stable_version": stable, "canary_version": canary, "generation": inputs.generation, "steps": steps}
    if len(ready) < 2:
        waiting = moved(
            None,
            **base,
            phase="Waiting",
            message=f"a canary needs 2 or more ready replicas ({len(ready)} ready): version {canary} waits; "
            f"version {stable} keeps serving",
        )
        return waiting, Event("Normal", "CanaryWaiting", waiting.message)
    weight = inputs.spec.steps[0].weight
    pods = choose_canary_pods([], ready, canary_pod_count(weight, len(ready)))
    status = moved(
        None,
        **base,
        phase="Progressing",
        step=1,
        weight=weight,
        canary_pods=pods,
        message=f"step 1/{steps}: switching {', '.join(pods)} to version {canary}",
    )
    message = f"version {canary} on {len(pods)} of {len(ready)} replicas ({', '.join(pods)}), {stable} on the rest"
    return status, Event("Normal", "CanaryStarted", message)


# -- the phases under way: (status.rollout for this generation, inputs) -> decision ----------------
def _waiting(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome:
    """Waiting: starts once 2 replicas are ready."""
    if len(inputs.ready) < 2:
        return StepOutcome(rollout)
    status, event = _start(inputs, rollout.stable_version, rollout.canary_version)
    return StepOutcome(status, (event,))


def _promoting(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome:
    """Promoting: succeeded once every ready pod serves the canary version."""
    switched = serving(inputs.pods, rollout.canary_version)
    if any(name not in switched for name in inputs.ready):
        return StepOutcome(rollout)
    message = f"version {rollout.canary_version} promoted to every replica"
    done = moved(rollout, phase="Succeeded", canary_pods=[], message=message)
    return StepOutcome(done, (Event("Normal", "Promoted", done.message),))


def _progressing(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome:
    """Progressing or Paused: the first of these that has something to do decides."""
    return (
        _short_of_replicas(rollout, inputs)
        or _regrouped(rollout, inputs)
        or _switching(rollout, inputs)
        or _clock_started(rollout, inputs)
        or _analysed(rollout, inputs)
    )


PhaseStep = Callable[[RolloutStatus, StepInputs], StepOutcome]
PHASES: Mapping[str, PhaseStep] = {
    "Waiting": _waiting,
    "Progressing": _progressing,
    "Paused": _progressing,  # a paused step keeps being judged: traffic may come back
    "Promoting": _promoting,
}


# -- Progressing and Paused, in order ------------------------------------------------------------
def _short_of_replicas(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome | None:
    ready = len(inputs.ready)
    if ready >= 2:
        return None
    return StepOutcome(moved(rollout, message=f"{ready} ready replica(s): the step waits"))


def _regrouped(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome | None:
    """Keep k canary pods among the ready ones: scale-ups join to keep the share."""
    weight, ready = inputs.step_of(rollout).weight, inputs.ready
    pods = choose_canary_pods(rollout.canary_pods, ready, canary_pod_count(weight, len(ready)))
    if pods == rollout.canary_pods:
        return None
    return StepOutcome(moved(rollout, canary_pods=pods, weight=weight, step_started_at=None))


def _switching(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome | None:
    """The canary pods are still loading the canary version: the step's clock waits."""
    if set(rollout.canary_pods) <= serving(inputs.pods, rollout.canary_version):
        return None
    message = (
        f"step {rollout.step}/{inputs.steps}: switching {', '.join(rollout.canary_pods)} to "
        f"version {rollout.canary_version}"
    )
    return StepOutcome(moved(rollout, message=message, step_started_at=None))


def _clock_started(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome | None:
    """Every canary pod serves: the step's clock (and its pause) starts now."""
    if rollout.step_started_at is not None:
        return None
    message = (
        f"step {rollout.step}/{inputs.steps}: version {rollout.canary_version} on "
        f"{len(rollout.canary_pods)} of {len(inputs.ready)} replicas, analysing"
    )
    return StepOutcome(moved(rollout, step_started_at=inputs.now, message=message))


def _analysed(rollout: RolloutStatus, inputs: StepInputs) -> StepOutcome:
    """A window is judged once its interval is over, or at once on a burst of canary failures."""
    if inputs.window is None:
        return StepOutcome(rollout)
    canary, stable = inputs.window
    analysis = inputs.spec.analysis
    due = inputs.age is not None and inputs.age >= analysis.interval_seconds
    if not due and canary.failure < analysis.fast_fail_errors:
        return StepOutcome(rollout)
    verdict = judge(canary, stable, analysis, inputs.token_quantile)
    note = share_note(canary.requests, stable.requests, rollout.weight)
    if note:
        verdict = replace(verdict, message=f"{verdict.message}; {note}")
    total = canary.requests + stable.requests
    share = round(100.0 * canary.requests / total, 1) if total else None
    analysed = verdict.status(inputs.now).model_copy(
        update={"step": rollout.step, "weight": rollout.weight, "measured_share": share}
    )
    judged = changed(rollout, last_analysis=analysed, measured_share=share)
    decision = VERDICTS[verdict.result](judged, inputs, verdict)
    return replace(decision, checked=True, counts=(verdict.result,))


SHARE_TOLERANCE_POINTS = 10.0  # a measured share further than this from the step's weight is explained


def share_note(canary: float, stable: float, weight: int) -> str | None:
    """Why the canary's share of the requests is not its step's weight, when it is not: the pods
    are switched k of n, so each gets an even share only where clients pick a pod per request."""
    total = canary + stable
    if total <= 0:
        return None
    share = 100.0 * canary / total
    if abs(share - weight) <= SHARE_TOLERANCE_POINTS:
        return None
    return (
        f"the canary pods served {share:.0f}% of the requests for a {weight}% step: clients that keep "
        "connections open (gRPC, HTTP keep-alive) stay on the pods they reached first, and a pod's share "
        "follows its speed under closed-loop load; balance per request on the client side (gRPC round_robin "
        "over a headless Service) or with a mesh for the weight to hold"
    )


# -- the verdicts: (status.rollout with the analysis, inputs, verdict) -> decision ---------------
def _rolled_back(rollout: RolloutStatus, inputs: StepInputs, verdict: Verdict) -> StepOutcome:
    """FastFailed, or Failed once more than failureLimit tolerates: every pod switches back."""
    cause = f"{verdict.reason}: {verdict.message}"
    rolled = moved(
        rollout,
        phase="RolledBack",
        failed_checks=rollout.failed_checks + (verdict.result == "Failed"),
        canary_pods=[],
        message=f"rolled back to version {rollout.stable_version}: {cause}",
    )
    event = Event("Warning", "RolledBack", f"version {rollout.canary_version} -> {rollout.stable_version}: {cause}")
    return StepOutcome(rolled, (event,))


def _failed(rollout: RolloutStatus, inputs: StepInputs, verdict: Verdict) -> StepOutcome:
    """Failed: tolerated failureLimit times (the step goes on), then rolled back."""
    failures, limit = rollout.failed_checks + 1, inputs.spec.analysis.failure_limit
    if failures > limit:
        return _rolled_back(rollout, inputs, verdict)
    failed = moved(
        rollout,
        phase="Progressing",
        failed_checks=failures,
        message=f"analysis failed ({failures} of {limit} tolerated): {verdict.message}",
    )
    return StepOutcome(failed, (Event("Warning", "AnalysisFailed", f"{verdict.reason}: {verdict.message}"),))


def _inconclusive(rollout: RolloutStatus, inputs: StepInputs, verdict: Verdict) -> StepOutcome:
    """Too little traffic to judge: paused, never failed."""
    return StepOutcome(moved(rollout, phase="Paused", message=verdict.message))


def _passed(rollout: RolloutStatus, inputs: StepInputs, verdict: Verdict) -> StepOutcome:
    """Passed: the step passes once its pause has elapsed; after the last step every pod switches."""
    step = inputs.step_of(rollout)
    elapsed = _age(rollout.step_started_at, inputs.now)
    if elapsed < step.pause_seconds:
        message = (
            f"step {rollout.step}/{inputs.steps} passing: {verdict.message}; "
            f"{step.pause_seconds - elapsed:.0f}s of its pause left"
        )
        return StepOutcome(moved(rollout, phase="Progressing", message=message))
    passed = Event("Normal", "StepPassed", f"step {rollout.step}/{inputs.steps} ({step.weight}%): {verdict.message}")
    if rollout.step < inputs.steps:
        return StepOutcome(_next_step(rollout, inputs), (passed,))
    message = f"every step passed: switching every replica to version {rollout.canary_version}"
    return StepOutcome(moved(rollout, phase="Promoting", message=message), (passed,))


VerdictStep = Callable[[RolloutStatus, StepInputs, Verdict], StepOutcome]
VERDICTS: Mapping[Result, VerdictStep] = {
    "Passed": _passed,
    "Failed": _failed,
    "Inconclusive": _inconclusive,
    "FastFailed": _rolled_back,
}


def _next_step(rollout: RolloutStatus, inputs: StepInputs) -> RolloutStatus:
    following, ready = inputs.spec.steps[rollout.step], inputs.ready
    k = canary_pod_count(following.weight, len(ready))
    return moved(
        rollout,
        phase="Progressing",
        step=rollout.step + 1,
        weight=following.weight,
        canary_pods=choose_canary_pods(rollout.canary_pods, ready, k),
        step_started_at=None,
        message=f"step {rollout.step + 1}/{inputs.steps}: {k} of {len(ready)} replicas",
    )


def _age(stamp: str | None, now: str) -> float:
    if stamp is None:
        return 0.0
    return (clock.parse(now) - clock.parse(stamp)).total_seconds()
