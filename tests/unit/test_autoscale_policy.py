"""The autoscaling decision is a pure function: table-tested."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from tritonop.api.spec import AutoscalingSpec
from tritonop.autoscale.metrics import CounterSample, WindowStats, baseline, combine, parse_sample, window
from tritonop.autoscale.policy import Decision, History, Observation, decide


def spec(**overrides: Any) -> AutoscalingSpec:
    base = {"minReplicas": 1, "maxReplicas": 10, "targetLatencyMs": 100, "scaleDownStabilizationSeconds": 60}
    return AutoscalingSpec.model_validate({**base, **overrides})


def observe(latency: float | None, rate: float = 50.0, ready: int = 2) -> Observation:
    return Observation(latency_ms=latency, request_rate=rate, ready_replicas=ready, window_seconds=5)


CAPACITY_50 = History(capacity_per_replica=50.0)
CASES = [
    # name, observation, current replicas, history, scale-down window (s), expected replicas, direction
    ("within tolerance holds", observe(105), 2, History(), 0, 2, "none"),
    ("breach triples at most", observe(500), 2, History(), 0, 6, "up"),
    ("small breach adds one", observe(115), 2, History(), 0, 3, "up"),
    ("breach never above max", observe(900, ready=8), 8, History(), 0, 10, "up"),
    ("no ready pods holds", observe(None, ready=0), 3, History(), 0, 3, "none"),
    ("far below, held by the window", observe(20), 4, History(((0.0, 4),)), 60, 4, "none"),
    ("far below, window expired: one down", observe(20), 4, History(((-100.0, 4),)), 60, 3, "down"),
    ("below but not far, no capacity known: hold", observe(70), 4, History(), 0, 4, "none"),
    ("capacity known: what throughput needs", observe(40, rate=100, ready=6), 6, CAPACITY_50, 0, 3, "down"),
    ("capacity known: at most halve", observe(40, rate=10, ready=8), 8, CAPACITY_50, 0, 4, "down"),
    ("no traffic: min replicas", observe(None, rate=0), 3, History(), 0, 1, "down"),
]


@pytest.mark.parametrize(
    ("case", "obs", "current", "history", "window_s", "expected", "direction"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    case: str, obs: Observation, current: int, history: History, window_s: int, expected: int, direction: str
) -> None:
    decision = decide(obs, spec(scaleDownStabilizationSeconds=window_s), current, history, now=0.0)
    assert (decision.replicas, decision.direction) == (expected, direction), decision.reason


def test_scale_down_window_keeps_the_highest_recent_recommendation() -> None:
    s = spec(scaleDownStabilizationSeconds=30)
    history = History()
    replicas = 4
    decisions: list[Decision] = []
    for t in range(0, 40, 5):  # load gone at t=0; every recommendation says 1
        decision = decide(observe(None, rate=0), s, replicas, history, now=float(t) + 100)
        history, replicas = decision.history, decision.replicas
        decisions.append(decision)
    # Before the first evaluation the window only knows older recommendations of 4.
    seeded = History(((90.0, 4),))
    held = decide(observe(None, rate=0), s, 4, seeded, now=100.0)
    assert held.replicas == 4 and "held by the 30s scale-down window" in held.reason
    assert decisions[-1].replicas == 1


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    s = spec(scaleUpStabilizationSeconds=20)
    history = History(((95.0, 2),))
    decision = decide(observe(500), s, 2, history, now=100.0)
    assert decision.replicas == 2 and decision.recommendation == 6
    later = decide(observe(500), s, 2, decision.history, now=120.0)
    assert later.replicas == 6


def test_steady_load_does_not_flap() -> None:
    s = spec()
    history, replicas, directions = History(), 3, []
    for t in range(0, 600, 5):
        latency = 95.0 if t % 10 else 108.0  # noisy but around target
        decision = decide(observe(latency, rate=150, ready=replicas), s, replicas, history, now=float(t))
        history, replicas = decision.history, decision.replicas
        directions.append(decision.direction)
    assert set(directions) == {"none"}


def test_capacity_is_learned_from_busy_time() -> None:
    # 4 replicas serving 120 req/s while busy 60% of the time: each could serve 50 req/s.
    busy = Observation(latency_ms=30, request_rate=120, ready_replicas=4, window_seconds=5, busy=0.6)
    decision = decide(busy, spec(), 4, History(), now=0.0)
    assert decision.history.capacity_per_replica == pytest.approx(50.0)
    # 120 req/s at 75% of 50 req/s per replica: 4 replicas are right, none removed.
    assert decision.replicas == 4
    idle = Observation(latency_ms=30, request_rate=5, ready_replicas=4, window_seconds=5, busy=0.05)
    assert decide(idle, spec(), 4, History(), now=0.0).history.capacity_per_replica is None


def test_saturated_breach_sizes_for_the_served_rate() -> None:
    saturated = Observation(latency_ms=300, request_rate=100, ready_replicas=2, window_seconds=5, busy=0.98)
    decision = decide(saturated, spec(scaleDownStabilizationSeconds=0), 2, History(capacity_per_replica=50.0), 0.0)
    assert decision.replicas == 6  # 3x (ratio 3), and at least 100 / (50 x 0.75) = 3


def test_capacity_is_learned_near_target() -> None:
    s = spec()
    decision = decide(observe(95, rate=200, ready=4), s, 4, History(), now=0.0)
    assert decision.history.capacity_per_replica == pytest.approx(50.0)
    # Overloaded (a queue building up): the replicas serve all they can, which is their capacity.
    over = decide(observe(900, rate=160, ready=4), s, 4, History(), now=0.0)
    assert over.history.capacity_per_replica == pytest.approx(40.0)
    smoothed = decide(observe(95, rate=200, ready=4), s, 4, over.history, now=5.0)
    assert smoothed.history.capacity_per_replica == pytest.approx(0.7 * 40 + 0.3 * 50)


def test_min_and_max_changes_apply_at_once() -> None:
    assert decide(observe(100), spec(minReplicas=5), 2, History(), 0.0).replicas == 5
    assert decide(observe(100), spec(maxReplicas=3), 6, History(((0.0, 6),)), 0.0).replicas == 3


METRICS = """
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 100
nv_inference_request_success{model="m",version="2"} 50
nv_inference_request_success{model="other",version="1"} 999
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="m",version="1"} 3000000
nv_inference_request_duration_us{model="m",version="2"} 1500000
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="m",version="1"} 1000000
nv_inference_queue_duration_us{model="m",version="2"} 500000
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us{model="m",version="1",quantile="0.95"} 41000
nv_inference_request_summary_us{model="m",version="2",quantile="0.95"} NaN
nv_inference_request_summary_us_count{model="m",version="1"} 100
nv_inference_request_summary_us_sum{model="m",version="1"} 3000000
"""


def test_metrics_window_deltas() -> None:
    sample = parse_sample(METRICS, "m", at=10.0)
    assert (sample.success, sample.duration_us, sample.queue_us, sample.p95_us) == (150, 4.5e6, 1.5e6, 41000)
    busy = window(
        CounterSample(0.0, 0, 0, 0, None, compute_us=0, executions=0),
        # 100 requests in 25 batches of 4, 20 ms each: compute counted per request = 100 x 20 ms.
        CounterSample(10.0, 100, 0, 0, None, compute_us=100 * 20_000, executions=25),
    )
    assert busy.busy == pytest.approx(25 * 0.020 / 10)
    earlier = CounterSample(at=5.0, success=50, duration_us=1.5e6, queue_us=0.5e6, p95_us=None)
    stats = window(earlier, sample)
    assert stats == WindowStats(
        requests=100, seconds=5.0, average_ms=30.0, queue_ms=10.0, p95_ms=41.0, arrivals=100.0, pending=0.0
    )
    restarted = window(CounterSample(5.0, 1000, 9e9, 9e9, None), sample)
    assert restarted.requests == 150 and restarted.average_ms == 30.0
    idle = window(sample, sample)
    assert idle.average_ms is None and idle.requests == 0


def test_combine_weights_by_requests_and_reports_unreadable_pods() -> None:
    fast = WindowStats(requests=300, seconds=5, average_ms=10, queue_ms=1, p95_ms=20)
    slow = WindowStats(requests=100, seconds=5, average_ms=50, queue_ms=20, p95_ms=90)
    measurement = combine([fast, slow], ("pod-b",))
    assert measurement.request_rate == 80
    assert measurement.average_ms == 20 and measurement.p95_ms == 37.5
    assert measurement.unreadable == ("pod-b",)
    assert combine([], ()).latency("p95") is None


def test_stale_quantile_after_a_scale_up_does_not_overshoot() -> None:
    s = spec()
    first = decide(observe(900, rate=20, ready=1), s, 1, History(), now=0.0)
    assert first.direction == "up" and first.history.last_scale_up == 0.0
    # 20 s later p95 still remembers the overload, but the window's mean latency is fine.
    stale = Observation(latency_ms=800, request_rate=20, ready_replicas=2, window_seconds=5, average_ms=60)
    held = decide(stale, s, first.replicas, first.history, now=20.0)
    assert held.direction == "none" and "still settling" in held.reason
    # A fresh breach of the mean is acted on at once, settling or not.
    fresh = Observation(latency_ms=800, request_rate=40, ready_replicas=2, window_seconds=5, average_ms=500)
    assert decide(fresh, s, first.replicas, first.history, now=20.0).direction == "up"
    # After the settle time the quantile is trusted again.
    assert decide(stale, s, first.replicas, first.history, now=61.0).direction == "up"


def test_demand_counts_the_growing_queue() -> None:
    before = CounterSample(0.0, 100, 0, 0, None, pending=5)
    after = CounterSample(5.0, 150, 0, 0, None, pending=55)  # served 50, queue grew by 50
    assert window(before, after).arrivals == 100


def test_breach_with_known_capacity_sizes_for_demand_and_backlog() -> None:
    s = spec(scaleDownStabilizationSeconds=0)
    # 2 replicas of 10 req/s each are saturated; 45 req/s arrive and 60 wait.
    saturated = Observation(
        latency_ms=2000, request_rate=20, ready_replicas=2, window_seconds=5, busy=1.0, arrival_rate=45, pending=60
    )
    decision = decide(saturated, s, 2, History(capacity_per_replica=10.0), now=0.0)
    # (45 + 60 / 10 s) / (10 x 0.75) = 6.8 -> 7, not the x3 = 6 a latency ratio alone would allow.
    assert decision.replicas == 6, decision.reason  # bounded by 3x per step
    assert "45 req/s + 60 queued" in decision.reason
    # Next step: 6 replicas ready, still a fresh breach of the window mean: the 7th is added.
    still = Observation(
        latency_ms=2000,
        request_rate=60,
        ready_replicas=6,
        window_seconds=5,
        busy=1.0,
        arrival_rate=45,
        pending=60,
        average_ms=900,
    )
    assert decide(still, s, 6, decision.history, now=5.0).replicas == 7


def test_no_blind_step_while_replicas_are_still_starting() -> None:
    s = spec(scaleDownStabilizationSeconds=0)
    # 3 asked for, 1 ready; the queue the two starting ones will absorb is still there.
    breach = Observation(
        latency_ms=3000, request_rate=10, ready_replicas=1, window_seconds=1, busy=1.0, arrival_rate=10, pending=120
    )
    history = History(capacity_per_replica=10.0, last_scale_up=-100.0)
    decision = decide(breach, s, 3, history, now=0.0)
    assert decision.replicas == 3 and "still starting" in decision.reason, decision.reason
    # The same breach with every asked-for replica ready: one more, as before.
    assert decide(breach, s, 1, history, now=0.0).replicas > 1


def test_a_breach_that_demand_does_not_explain_adds_nothing_once_capacity_is_known() -> None:
    """Six ready replicas of 10 req/s, 22 req/s arriving, almost nothing queued, yet p95 is still
    high from the burst a minute ago: the sizing says 3, so no seventh replica."""
    s = spec(scaleDownStabilizationSeconds=300)
    stale = Observation(
        latency_ms=2129,
        request_rate=33,
        ready_replicas=6,
        window_seconds=1,
        busy=0.5,
        arrival_rate=22,
        pending=6,
        average_ms=450,
    )
    decision = decide(stale, s, 6, History(capacity_per_replica=10.0, last_scale_up=-100.0), now=0.0)
    assert decision.replicas == 6, decision.reason
    # Without a learned capacity the latency ratio is all there is: one more.
    unknown = Observation(latency_ms=2129, request_rate=33, ready_replicas=6, window_seconds=1, average_ms=450)
    assert decide(unknown, s, 6, History(last_scale_up=-100.0), now=0.0).replicas > 6


def test_windows_span_at_least_three_seconds_at_any_cadence() -> None:
    history: deque[CounterSample] = deque()
    assert baseline(history, 0.0) is None  # a pod's first sample only starts a window
    for at in (0.0, 1.0, 2.0, 3.0, 4.0):
        history.append(CounterSample(at, at * 10, 0, 0, None))
    assert baseline(history, 5.0).at == 2.0  # newest at least 3 s older
    assert baseline(history, 4.5).at == 1.0
    assert baseline(deque([CounterSample(0.0, 0, 0, 0, None)]), 1.0).at == 0.0  # too young: oldest


def test_a_source_without_demand_still_scales_on_a_breach() -> None:
    """Prometheus gives no arrival rate: a learned capacity must not read that as zero demand."""
    s = spec(scaleDownStabilizationSeconds=0)
    overloaded = Observation(latency_ms=12920, request_rate=9.9, ready_replicas=1, window_seconds=30, average_ms=9000)
    decision = decide(overloaded, s, 1, History(capacity_per_replica=10.0, last_scale_up=-100.0), now=0.0)
    assert decision.replicas > 1, decision.reason
