"""The canary package's pure modules: the judgement, the pod assignment and the step machine, table-tested."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tritonop.api.spec import CanaryAnalysis, CanarySpec
from tritonop.api.status import RolloutStatus
from tritonop.canary.counters import VersionCounters, parse_version_counters, window_sides
from tritonop.canary.judge import judge
from tritonop.canary.pods import PodView, assignment, canary_pod_count, choose_canary_pods
from tritonop.canary.steps import advance, changed, starts

ANALYSIS = CanaryAnalysis.model_validate(
    {"minRequests": 100, "maxLatencyIncreasePercent": 20, "maxErrorRatePercent": 1, "fastFailErrors": 20}
)
T0, T30, T90 = "2026-12-01T12:00:00Z", "2026-12-01T12:00:30Z", "2026-12-01T12:01:30Z"


def counters(requests: int, errors: int = 0, compute_ms: float = 50.0) -> VersionCounters:
    success = requests - errors
    return VersionCounters(success=success, failure=errors, compute_us=success * compute_ms * 1000)


@pytest.mark.parametrize(
    ("case", "canary", "stable", "result", "reason", "text"),
    [
        ("same compute, no errors", counters(300), counters(900), "Passed", "Healthy", "compute 50 ms vs 50 ms (+0%)"),
        ("20% slower is within", counters(300, 0, 60), counters(900), "Passed", "Healthy", "(+20%)"),
        (
            "62% slower",
            counters(1240, 0, 81),
            counters(3000),
            "Failed",
            "LatencyRegression",
            "compute 81 ms vs 50 ms (+62%) over 1,240 requests",
        ),
        (
            "errors over the limit",
            counters(400, 8),
            counters(900, 0),
            "Failed",
            "ErrorRegression",
            "errors 2.0% vs 0.0%",
        ),
        ("1% errors is the limit", counters(400, 4), counters(900, 0), "Passed", "Healthy", ""),
        ("too little canary traffic", counters(40), counters(900), "Inconclusive", "InsufficientTraffic", "canary 40"),
        ("too little stable traffic", counters(400), counters(20), "Inconclusive", "InsufficientTraffic", "stable 20"),
        ("a burst of errors, even with little traffic", counters(30, 25), counters(10), "FastFailed", "ErrorBurst", ""),
    ],
)
def test_judge(
    case: str, canary: VersionCounters, stable: VersionCounters, result: str, reason: str, text: str
) -> None:
    verdict = judge(canary, stable, ANALYSIS)
    assert (verdict.result, verdict.reason) == (result, reason), (case, verdict.message)
    assert text in verdict.message, (case, verdict.message)


@pytest.mark.parametrize(
    ("weight", "ready", "k"), [(25, 4, 1), (50, 4, 2), (25, 2, 1), (99, 4, 3), (1, 10, 1), (75, 4, 3), (50, 3, 2)]
)
def test_canary_pod_count_is_ceil_and_leaves_a_stable_pod(weight: int, ready: int, k: int) -> None:
    assert canary_pod_count(weight, ready) == k


def test_canary_pods_stay_put_and_fill_by_name() -> None:
    assert choose_canary_pods([], ["c", "a", "b", "d"], 1) == ["a"]
    assert choose_canary_pods(["c"], ["a", "b", "c", "d"], 2) == ["a", "c"]  # c keeps its version
    assert choose_canary_pods(["c", "gone"], ["a", "b", "c"], 1) == ["c"]


def rollout(**fields: Any) -> RolloutStatus:
    body = {"phase": "Progressing", "stableVersion": 2, "canaryVersion": 3, "generation": 4, "steps": 2}
    return RolloutStatus.model_validate({**body, **fields})


def test_a_state_change_is_validated_and_a_misspelt_field_raises() -> None:
    status = changed(rollout(), canary_pods=["a"], step=1)
    assert (status.canary_pods, status.step, status.canary_version) == (["a"], 1, 3)
    with pytest.raises(TypeError, match="canary_pod"):
        changed(rollout(), canary_pod=["a"])
    with pytest.raises(TypeError, match="canaryPods"):  # one spelling: python field names
        changed(rollout(), canaryPods=["a"])
    with pytest.raises(ValidationError):
        changed(rollout(), phase="Bogus")


def test_assignment() -> None:
    pods = ["a", "b", "c", "d"]
    assert assignment(None, pods, 3) == dict.fromkeys(pods, 3)
    assert assignment(rollout(canaryPods=["a"]), pods, 3) == {"a": 3, "b": 2, "c": 2, "d": 2}
    assert assignment(rollout(phase="Promoting"), pods, 3) == dict.fromkeys(pods, 3)
    for phase in ("RolledBack", "Waiting", "Aborted"):
        assert assignment(rollout(phase=phase, canaryPods=["a"]), pods, 3) == dict.fromkeys(pods, 2), phase


def test_a_rollout_starts_for_a_new_version_and_a_rolled_back_one_waits_for_a_spec_change() -> None:
    assert starts(None, 3, 2, 4)
    assert not starts(None, 2, 2, 4)  # already serving it
    assert not starts(None, 3, None, 4)  # nothing served yet: the first version simply loads
    assert not starts(rollout(), 3, 2, 4)  # under way
    assert not starts(rollout(phase="RolledBack", generation=4), 3, 2, 4)
    assert starts(rollout(phase="RolledBack", generation=4), 3, 2, 5)  # the spec changed
    assert starts(rollout(phase="RolledBack", generation=4), 5, 2, 5)


SPEC = CanarySpec.model_validate(
    {
        "steps": [{"weight": 25, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 0}],
        "analysis": {"intervalSeconds": 30, "minRequests": 100, "failureLimit": 1, "fastFailErrors": 20},
    }
)


def views(serving: dict[str, tuple[int, ...]]) -> list[PodView]:
    return [PodView(name, True, versions) for name, versions in serving.items()]


FOUR_ON_2 = views({"a": (2,), "b": (2,), "c": (2,), "d": (2,)})
A_ON_3 = views({"a": (3,), "b": (2,), "c": (2,), "d": (2,)})


def step(
    previous: RolloutStatus | None,
    pods: list[PodView],
    window: Any = None,
    age: float | None = None,
    now: str = T0,
    target: int = 3,
    active: int | None = 2,
) -> Any:
    return advance(previous, SPEC, 4, target, active, pods, window, age, now)


def test_start_picks_k_pods() -> None:
    decision = step(None, FOUR_ON_2)
    status = decision.rollout
    assert (status.phase, status.step, status.weight, status.canary_pods) == ("Progressing", 1, 25, ["a"])
    assert status.summary == "v3 25% 1/2"
    assert [e.reason for e in decision.events] == ["CanaryStarted"]


def test_one_replica_waits_with_a_reason() -> None:
    status = step(None, views({"a": (2,)})).rollout
    assert status.phase == "Waiting" and "2 or more ready replicas" in status.message
    assert assignment(status, ["a"], 3) == {"a": 2}  # it does not silently become a full switch
    assert step(status, views({"a": (2,), "b": (2,)})).rollout.phase == "Progressing"


def test_the_step_clock_starts_when_canary_pods_serve() -> None:
    started = step(None, FOUR_ON_2).rollout
    assert step(started, FOUR_ON_2).rollout.step_started_at is None  # a still switching
    running = step(started, A_ON_3, now=T0).rollout
    assert running.step_started_at == T0 and "analysing" in running.message


def analysing() -> RolloutStatus:
    return rollout(step=1, weight=25, canaryPods=["a"], stepStartedAt=T0)


def test_an_analysis_waits_for_its_interval() -> None:
    decision = step(analysing(), A_ON_3, (counters(300), counters(900)), age=10, now=T30)
    assert not decision.checked and decision.rollout == analysing()


def test_passing_before_the_pause_ends_keeps_the_step() -> None:
    decision = step(analysing(), A_ON_3, (counters(300), counters(900)), age=30, now=T30)
    status = decision.rollout
    assert decision.checked and status.step == 1 and status.last_analysis.result == "Passed"
    assert status.measured_share == 25.0 and "30s of its pause left" in status.message
    # The analysis names its own step, weight and share: the rollout moves on, the record stays.
    analysis = status.last_analysis
    assert (analysis.step, analysis.weight, analysis.measured_share) == (1, 25, 25.0)


def test_a_step_passes_when_its_pause_elapsed_and_the_check_passed() -> None:
    decision = step(analysing(), A_ON_3, (counters(300), counters(900)), age=30, now=T90)
    status = decision.rollout
    assert (status.step, status.weight, status.canary_pods, status.step_started_at) == (2, 50, ["a", "b"], None)
    assert [e.reason for e in decision.events] == ["StepPassed"]
    assert "compute 50 ms vs 50 ms" in decision.events[0].message


def test_after_the_last_step_every_pod_switches_then_it_is_promoted() -> None:
    last = rollout(step=2, weight=50, canaryPods=["a", "b"], stepStartedAt=T0)
    two_on_3 = views({"a": (3,), "b": (3,), "c": (2,), "d": (2,)})
    promoting = step(last, two_on_3, (counters(600), counters(600)), age=30, now=T30).rollout
    assert promoting.phase == "Promoting"
    assert assignment(promoting, ["a", "b", "c", "d"], 3) == dict.fromkeys("abcd", 3)
    assert step(promoting, two_on_3).rollout.phase == "Promoting"
    done = step(promoting, views(dict.fromkeys("abcd", (3,))))
    assert done.rollout.phase == "Succeeded" and done.rollout.summary == "Promoted v3"
    assert [e.reason for e in done.events] == ["Promoted"]


def test_too_little_traffic_pauses_and_never_fails() -> None:
    status = step(analysing(), A_ON_3, (counters(10), counters(30)), age=30, now=T90).rollout
    assert status.phase == "Paused" and status.failed_checks == 0 and status.summary == "v3 25% 1/2 paused"
    resumed = step(status, A_ON_3, (counters(300), counters(900)), age=30, now=T90).rollout
    assert resumed.step == 2


def test_a_failed_check_is_tolerated_once_then_rolls_back() -> None:
    slow = (counters(1240, 0, 81), counters(3000))
    once = step(analysing(), A_ON_3, slow, age=30, now=T30)
    assert once.rollout.phase == "Progressing" and once.rollout.failed_checks == 1
    assert [e.reason for e in once.events] == ["AnalysisFailed"]
    twice = step(once.rollout, A_ON_3, slow, age=30, now=T90)
    status = twice.rollout
    assert (status.phase, status.failed_checks, status.canary_pods, status.summary) == (
        "RolledBack",
        2,
        [],
        "RolledBack v3",
    )
    assert "LatencyRegression: compute 81 ms vs 50 ms (+62%) over 1,240 requests" in twice.events[0].message
    assert twice.events[0].type == "Warning"
    assert assignment(status, ["a", "b", "c", "d"], 3) == dict.fromkeys("abcd", 2)
    # Not retried for this generation; the next generation tries again.
    assert step(status, views(dict.fromkeys("abcd", (2,))), active=2).rollout == status
    assert advance(status, SPEC, 5, 3, 2, FOUR_ON_2, None, None, T90).rollout.phase == "Progressing"


def test_a_burst_of_failures_rolls_back_at_once() -> None:
    decision = step(analysing(), A_ON_3, (counters(40, 25), counters(100)), age=2, now=T0)
    assert decision.rollout.phase == "RolledBack" and decision.rollout.last_analysis.reason == "ErrorBurst"


def test_reverting_the_spec_mid_canary_aborts_at_once() -> None:
    decision = step(analysing(), A_ON_3, target=2, active=None)
    assert decision.rollout.phase == "Aborted" and [e.reason for e in decision.events] == ["CanaryAborted"]
    assert assignment(decision.rollout, ["a", "b"], 2) == {"a": 2, "b": 2}


def test_a_newer_version_mid_canary_restarts_from_the_stable_one() -> None:
    status = step(analysing(), A_ON_3, target=5, active=None).rollout
    assert (status.stable_version, status.canary_version, status.step) == (2, 5, 1)


def test_scale_up_during_a_step_keeps_the_share() -> None:
    six = views({"a": (3,), "b": (2,), "c": (2,), "d": (2,), "e": (2,), "f": (2,)})
    status = step(analysing(), six).rollout
    assert status.canary_pods == ["a", "b"] and status.step_started_at is None  # ceil(25% of 6) = 2


def test_window_sides_compare_each_side_on_its_own_version() -> None:
    baseline = {"a": {3: counters(100)}, "b": {2: counters(100)}}
    current = {"a": {3: counters(400), 2: counters(999)}, "b": {2: counters(700)}, "c": {2: counters(50)}}
    canary, stable = window_sides(baseline, current, ["a"], 3, 2)
    assert (canary.requests, stable.requests) == (300, 650)  # c joined: its counters count whole


METRICS = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="2"} 90
nv_inference_request_success{model="m",version="3"} 10
nv_inference_request_success{model="other",version="3"} 5
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="m",version="3"} 4
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="m",version="2"} 4500000
nv_inference_compute_infer_duration_us{model="m",version="3"} 810000
"""


def test_parse_version_counters() -> None:
    parsed = parse_version_counters(METRICS, "m")
    assert parsed == {
        2: VersionCounters(success=90, failure=0, compute_us=4_500_000),
        3: VersionCounters(success=10, failure=4, compute_us=810_000),
    }
    assert parsed[3].figures().model_dump(by_alias=True) == {
        "requests": 14,
        "errors": 4,
        "computeMs": 81.0,
        "timeToFirstTokenMs": None,  # a request/response model: no token figures
        "interTokenLatencyMs": None,
    }


def model_deployment(status: dict[str, Any], version: int = 3, generation: int = 4) -> Any:
    from tritonop.api.spec import ModelDeployment

    return ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
            "spec": {
                "model": {"repository": "file:///r", "version": version},
                "replicas": 4,
                "rollout": {"strategy": "Canary"},
            },
            "status": status,
        }
    )


PODS = [{"metadata": {"name": name}} for name in "abcd"]


def test_pod_versions_hold_every_pod_until_the_rollout_has_chosen_its_canary_pods() -> None:
    from tritonop.canary.runner import pod_versions

    # The spec moved from 2 to 3: nothing switches in the reconcile that starts the rollout.
    assert pod_versions(model_deployment({"activeVersion": 2}), PODS, 3) == dict.fromkeys("abcd", 2)
    status = {"rollout": rollout(canaryPods=["a"]).model_dump(by_alias=True, exclude_none=True)}
    assert pod_versions(model_deployment(status), PODS, 3) == {"a": 3, "b": 2, "c": 2, "d": 2}
    assert pod_versions(model_deployment({"activeVersion": 3}), PODS, 3) == dict.fromkeys("abcd", 3)
    assert pod_versions(model_deployment({}), PODS, 3) == dict.fromkeys("abcd", 3)  # the first version


def test_the_autoscaler_does_not_scale_down_during_a_canary() -> None:
    from tritonop.canary.runner import hold_replicas

    status = {"rollout": rollout(canaryPods=["a"]).model_dump(by_alias=True, exclude_none=True)}
    deployment = {"spec": {"replicas": 4}}
    assert hold_replicas(model_deployment(status), 2, deployment) == 4
    assert hold_replicas(model_deployment(status), 6, deployment) == 6  # scaling up is fine
    done = {"rollout": rollout(phase="Succeeded").model_dump(by_alias=True, exclude_none=True)}
    assert hold_replicas(model_deployment(done), 2, deployment) == 2


@pytest.mark.parametrize(
    ("canary", "stable", "weight", "explained"),
    [
        (250, 750, 25, False),  # the weight, as k of n pods give it
        (320, 680, 25, False),  # within 10 points
        (120, 880, 25, True),  # pinned connections: under its weight
        (0, 500, 50, True),  # no traffic at all on the canary pods
        (0, 0, 50, False),  # nothing to say yet
    ],
)
def test_a_share_far_from_the_weight_is_explained(canary: int, stable: int, weight: int, explained: bool) -> None:
    from tritonop.canary.steps import share_note

    note = share_note(canary, stable, weight)
    assert (note is not None) == explained
    if note is not None:
        assert f"served {100 * canary / (canary + stable):.0f}% of the requests for a {weight}% step" in note
        assert "gRPC" in note


def test_an_inconclusive_window_keeps_counting_until_it_has_the_traffic_to_judge() -> None:
    from tests.unit.fakes import FakeClock
    from tritonop.canary.runner import RolloutMemory
    from tritonop.canary.steps import StepOutcome

    clock, memory = FakeClock(), RolloutMemory()
    rollout = RolloutStatus.model_validate(
        {
            "phase": "Paused",
            "generation": 1,
            "canaryVersion": 2,
            "stableVersion": 1,
            "step": 1,
            "weight": 50,
            "canaryPods": ["a"],
        }
    )

    def read(canary: int, stable: int) -> dict[str, dict[int, VersionCounters]]:
        return {"a": {2: counters(canary)}, "b": {1: counters(stable)}}

    assert memory.measure(clock, rollout, read(0, 0)) == (None, None)  # the window starts
    clock.advance(10)
    sides, age = memory.measure(clock, rollout, read(60, 300))
    assert sides is not None and sides[0].requests == 60 and age == 10
    memory.settle(clock, StepOutcome(rollout, checked=True, counts=("Inconclusive",)), read(60, 300))
    clock.advance(10)
    sides, age = memory.measure(clock, rollout, read(120, 600))
    # Still from the first read: 120 canary requests over 20 s; the next analysis is due 10 s on.
    assert sides is not None and sides[0].requests == 120 and age == 10
    memory.settle(clock, StepOutcome(rollout, checked=True, counts=("Passed",)), read(120, 600))
    sides, _ = memory.measure(clock, rollout, read(130, 650))
    assert sides is not None and sides[0].requests == 10  # a conclusive analysis restarts it
