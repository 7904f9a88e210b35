"""The autoscaling decision is a pure function: table-tested."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonop.api.spec import AutoscalingSpec
from tritonop.autoscale.forecast import MIN_ERROR_SAMPLES, WARM_UP_SECONDS, Forecast
from tritonop.autoscale.metrics import (
    IDLE_SECONDS,
    CounterSample,
    WindowStats,
    baseline,
    combine,
    idle,
    parse_sample,
    window,
)
from tritonop.autoscale.policy import History, Observation, _window, decide


def spec(**overrides: Any) -> AutoscalingSpec:
    base = {
        "minReplicas": 1,
        "maxReplicas": 10,
        "targetLatencyMs": 400,
        "scaleDownStabilizationSeconds": 0,
        "spareReplicas": 0,
    }
    return AutoscalingSpec.model_validate({**base, **overrides})


def dataclasses_replace(observation: Observation, **changes: Any) -> Observation:
    from dataclasses import replace

    return replace(observation, **changes)


def load(demand: float, ready: int, longest: float = 0.0, latency: float = 150.0) -> Observation:
    """Pods of 10 req/s each (100 ms per request): demand arrives, they serve what they can."""
    served = min(demand, 10.0 * ready)
    return Observation(
        latency_ms=latency,
        request_rate=served,
        ready_replicas=ready,
        window_seconds=3,
        average_ms=latency,
        busy=served / ready / 10.0,
        arrival_rate=demand,
        pending=longest * ready,
        longest_queue=longest,
    )


def latency_only(latency: float, ready: int = 2) -> Observation:
    """No capacity to learn: idle execution counters (busy under 20%)."""
    return Observation(latency_ms=latency, request_rate=1.0, ready_replicas=ready, window_seconds=3, busy=0.05)


# A learned deployment: 100 ms per request, a variability that lets a 400 ms p95 target run each
# replica 85% busy (test_autoscale_sizing.py covers how the target sets that fraction), and
# forecasts that have been right (no headroom for their error).
LEARNED: dict[str, Any] = {
    "service_ms": 100.0,
    "variability": 0.159,
    "forecast": Forecast(errors=(0.0,) * MIN_ERROR_SAMPLES, watched_since=-WARM_UP_SECONDS),
}
KNOWN = History(capacity_per_replica=10.0, **LEARNED)


def past(recommendation: tuple[float, int], capacity: float, **fields: Any) -> History:
    """A history holding one earlier recommendation (a candidate for both windows' extremes)."""
    return History((recommendation,), (recommendation,), capacity, **{**LEARNED, **fields})


PROMETHEUS = Observation(latency_ms=900, request_rate=10, ready_replicas=1, window_seconds=30, busy=1.0, pending=20)
CASES: list[tuple[str, Observation, int, History, dict[str, Any], int, str]] = [
    # name, observation, current replicas, history, spec overrides, expected replicas, direction
    ("steady: every replica at most 85% busy", load(30, 4), 4, KNOWN, {}, 4, "none"),
    ("demand past 85% busy: one more", load(9, 1), 1, KNOWN, {}, 2, "up"),
    ("no multiplicative cap: overload goes to what drains it", load(30, 1), 1, KNOWN, {}, 10, "up"),
    ("longest queue drains on its own pod within 5 s", load(20, 4, longest=30), 4, KNOWN, {}, 5, "up"),
    ("a backlog no pod can drain in time: max", load(20, 4, longest=60), 4, KNOWN, {}, 10, "up"),
    ("spare replicas at low load", load(5, 1), 1, KNOWN, {"spareReplicas": 3}, 3, "up"),
    ("spare shrinks as load grows", load(28, 4), 4, KNOWN, {"spareReplicas": 3}, 4, "none"),
    ("never above max, spare or not", load(5, 1), 1, KNOWN, {"spareReplicas": 3, "maxReplicas": 2}, 2, "up"),
    ("surplus: halve it", load(10, 8), 8, KNOWN, {}, 5, "down"),
    (
        "surplus within the window: held",
        load(10, 8),
        8,
        past((-10.0, 8), 10.0),
        {"scaleDownStabilizationSeconds": 30},
        8,
        "none",
    ),
    (
        "surplus after the window, step paced",
        load(10, 8),
        8,
        past((-40.0, 8), 10.0, last_scale_down=-5.0),
        {"scaleDownStabilizationSeconds": 30},
        8,
        "none",
    ),
    (
        "surplus after the window and the pace: halve",
        load(10, 8),
        8,
        past((-40.0, 8), 10.0, last_scale_down=-15.0),
        {"scaleDownStabilizationSeconds": 30},
        5,
        "down",
    ),
    ("served rate only (Prometheus): queue counts as demand", PROMETHEUS, 1, KNOWN, {}, 10, "up"),
    ("no capacity known: latency ratio, at most 3x", latency_only(1500), 2, History(), {}, 6, "up"),
    (
        "no capacity known, metric queue: the queue time, not the end-to-end latency",
        dataclasses_replace(latency_only(1500), queue_ms=5.0),
        2,
        History(),
        {"metric": "queue", "targetLatencyMs": 50},
        1,
        "down",
    ),
    ("no capacity known: small breach adds one", latency_only(450), 2, History(), {}, 3, "up"),
    (
        "no capacity known, no execution counters: near target holds",
        dataclasses_replace(latency_only(300), busy=None),
        2,
        History(),
        {},
        2,
        "none",
    ),
    # Replicas too idle to learn capacity from (a tight target keeps the latency near it however
    # many there are): kept, they would stay for good.
    ("no capacity known: near target with idle replicas steps down", latency_only(300), 8, History(), {}, 7, "down"),
    ("no capacity known: far below steps down", latency_only(100), 4, History(), {}, 3, "down"),
    ("no ready pods holds", Observation(None, 0.0, 0, 3), 3, KNOWN, {}, 3, "none"),
    ("no traffic: min replicas", Observation(None, 0.0, 2, 3, busy=0.0, arrival_rate=0.0), 3, KNOWN, {}, 2, "down"),
]


@pytest.mark.parametrize(
    ("case", "obs", "current", "history", "overrides", "expected", "direction"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    case: str,
    obs: Observation,
    current: int,
    history: History,
    overrides: dict[str, Any],
    expected: int,
    direction: str,
) -> None:
    decision = decide(obs, spec(**overrides), current, history, now=0.0)
    assert (decision.replicas, decision.direction) == (expected, direction), decision.reason


def test_scale_down_is_held_then_halves_the_surplus_step_by_step() -> None:
    s = spec(scaleDownStabilizationSeconds=30)
    history, replicas = past((-1.0, 8), 10.0), 8
    timeline: list[int] = []
    for t in range(0, 80):  # 10 req/s on 8 replicas: 2 are enough
        decision = decide(load(10, replicas), s, replicas, history, now=float(t))
        history, replicas = decision.history, decision.replicas
        timeline.append(replicas)
    assert timeline[:29] == [8] * 29  # the window still remembers 8
    assert sorted(set(timeline), reverse=True) == [8, 5, 3, 2]  # half the surplus each step
    assert timeline.index(3) - timeline.index(5) >= 10  # one step per third of the window


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    s = spec(scaleUpStabilizationSeconds=20)
    history = past((95.0, 2), 10.0)
    decision = decide(load(30, 2), s, 2, history, now=100.0)
    assert decision.replicas == 2 and decision.recommendation == 10
    later = decide(load(30, 2), s, 2, decision.history, now=120.0)
    assert later.replicas == 10


def test_steady_noisy_load_does_not_flap() -> None:
    s = spec(scaleDownStabilizationSeconds=30, spareReplicas=1)
    history, replicas, directions = past((-1.0, 3), 10.0), 3, []
    for t in range(0, 600):
        demand = 15.0 + (2.0 if t % 3 else -2.0)  # noisy around 15 req/s
        decision = decide(load(demand, replicas), s, replicas, history, now=float(t))
        history, replicas = decision.history, decision.replicas
        directions.append(decision.direction)
    assert set(directions) == {"none"}, replicas


def test_capacity_is_learned_from_busy_time() -> None:
    # 4 replicas serving 120 req/s while busy 60% of the time: each could serve 50 req/s.
    busy = Observation(latency_ms=30, request_rate=120, ready_replicas=4, window_seconds=5, busy=0.6)
    decision = decide(busy, spec(), 4, History(forecast=LEARNED["forecast"]), now=0.0)
    assert decision.history.capacity_per_replica == pytest.approx(50.0)
    # 20 ms per request (from the capacity) and the prior variability: a 400 ms p95 allows 85%
    # busy; 120 req/s at 85% of 50 req/s per replica: 3 are enough; half the surplus (1) goes.
    assert decision.replicas == 3
    idle = Observation(latency_ms=30, request_rate=5, ready_replicas=4, window_seconds=5, busy=0.05)
    assert decide(idle, spec(), 4, History(), now=0.0).history.capacity_per_replica is None


def test_capacity_is_learned_near_target_without_execution_counters() -> None:
    s = spec(targetLatencyMs=100)
    near = Observation(latency_ms=95, request_rate=200, ready_replicas=4, window_seconds=5)
    decision = decide(near, s, 4, History(), now=0.0)
    assert decision.history.capacity_per_replica == pytest.approx(50.0)
    # Overloaded (a queue building up): the replicas serve all they can, which is their capacity.
    over = Observation(latency_ms=900, request_rate=160, ready_replicas=4, window_seconds=5)
    over_decision = decide(over, s, 4, History(), now=0.0)
    assert over_decision.history.capacity_per_replica == pytest.approx(40.0)
    smoothed = decide(near, s, 4, over_decision.history, now=5.0)
    assert smoothed.history.capacity_per_replica == pytest.approx(0.7 * 40 + 0.3 * 50)


def test_a_stale_p95_adds_nothing_once_capacity_is_known() -> None:
    """p95 from Triton's 60 s summary still remembers a burst; demand and queues say 3 suffice."""
    stale = dataclasses_replace(load(22, 6, longest=1), latency_ms=2129.0)
    decision = decide(stale, spec(scaleDownStabilizationSeconds=300), 6, past((-10.0, 6), 10.0), now=0.0)
    assert decision.replicas == 6 and decision.direction == "none", decision.reason


def test_min_and_max_changes_apply_at_once() -> None:
    assert decide(load(10, 2), spec(minReplicas=5), 2, KNOWN, 0.0).replicas == 5
    assert decide(load(10, 6), spec(maxReplicas=3), 6, past((0.0, 6), 10.0), 0.0).replicas == 3


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
nv_inference_request_summary_us{model="m",version="1",quantile="0.99"} 52000
nv_inference_request_summary_us{model="m",version="2",quantile="0.99"} 58000
nv_inference_request_summary_us{model="other",version="1",quantile="0.99"} 999000
nv_inference_request_summary_us_count{model="m",version="1"} 100
nv_inference_request_summary_us_sum{model="m",version="1"} 3000000
"""


def test_metrics_window_deltas() -> None:
    sample = parse_sample(METRICS, "m", at=10.0)
    assert (sample.success, sample.duration_us, sample.queue_us, sample.p95_us) == (150, 4.5e6, 1.5e6, 41000)
    assert sample.p99_us == 58000  # the highest of the model's versions
    busy = window(
        CounterSample(0.0, 0, 0, 0, None, compute_us=0, executions=0),
        # 100 requests in 25 batches of 4, 20 ms each: compute counted per request = 100 x 20 ms.
        CounterSample(10.0, 100, 0, 0, None, compute_us=100 * 20_000, executions=25),
    )
    assert busy.busy == pytest.approx(25 * 0.020 / 10)
    earlier = CounterSample(at=5.0, success=50, duration_us=1.5e6, queue_us=0.5e6, p95_us=None)
    stats = window(earlier, sample)
    assert stats == WindowStats(
        requests=100,
        seconds=5.0,
        average_ms=30.0,
        queue_ms=10.0,
        p95_ms=41.0,
        arrivals=100.0,
        pending=0.0,
        service_ms=0.0,
        p99_ms=58.0,
    )
    restarted = window(CounterSample(5.0, 1000, 9e9, 9e9, None), sample)
    assert restarted.requests == 150 and restarted.average_ms == 30.0
    idle = window(sample, sample)
    assert idle.average_ms is None and idle.requests == 0


def test_combine_weights_by_requests_and_reports_unreadable_pods() -> None:
    fast = WindowStats(requests=300, seconds=5, average_ms=10, queue_ms=1, p95_ms=20, p99_ms=30)
    slow = WindowStats(requests=100, seconds=5, average_ms=50, queue_ms=20, p95_ms=90, p99_ms=110)
    measurement = combine([fast, slow], ("pod-b",))
    assert measurement.request_rate == 80
    assert measurement.average_ms == 20 and measurement.p95_ms == 37.5
    assert measurement.latency("p99") == measurement.p99_ms == 50
    assert measurement.unreadable == ("pod-b",)
    assert combine([], ()).latency("p95") is None


def test_demand_counts_the_growing_queue() -> None:
    before = CounterSample(0.0, 100, 0, 0, None, pending=5)
    after = CounterSample(5.0, 150, 0, 0, None, pending=55)  # served 50, queue grew by 50
    assert window(before, after).arrivals == 100


def test_windows_span_at_least_three_seconds_at_any_cadence() -> None:
    history: deque[CounterSample] = deque()
    assert baseline(history, 0.0) is None  # a pod's first sample only starts a window
    for at in (0.0, 1.0, 2.0, 3.0, 4.0):
        history.append(CounterSample(at, at * 10, 0, 0, None))
    assert baseline(history, 5.0).at == 2.0  # newest at least 3 s older
    assert baseline(history, 4.5).at == 1.0
    assert baseline(deque([CounterSample(0.0, 0, 0, 0, None)]), 1.0).at == 0.0  # too young: oldest


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.1, 30.0), st.integers(1, 12)), min_size=1, max_size=80),
    st.integers(0, 60),
    st.integers(0, 120),
)
def test_window_candidates_give_the_same_extremes_as_every_recommendation(
    steps: list[tuple[float, int]], up_seconds: int, down_seconds: int
) -> None:
    """The candidates kept are enough: each window's min/max equals the one over all recent
    recommendations (the whole list the policy kept before)."""
    up: tuple[tuple[float, int], ...] = ()
    down: tuple[tuple[float, int], ...] = ()
    every: list[tuple[float, int]] = []
    now = 0.0
    for gap, raw in steps:
        now += gap
        every.append((now, raw))
        up = _window(up, now, raw, up_seconds, keep=lambda r, raw=raw: r < raw)
        down = _window(down, now, raw, down_seconds, keep=lambda r, raw=raw: r > raw)
        assert up[0][1] == min(r for t, r in every if now - t <= up_seconds)
        assert down[0][1] == max(r for t, r in every if now - t <= down_seconds)


def test_a_pod_is_idle_once_measured_fifteen_seconds_without_a_request() -> None:
    from collections import deque

    def sample(at: float, success: float, pending: float = 0.0) -> CounterSample:
        return CounterSample(at, success, 0.0, 0.0, None, pending=pending)

    # Longer than a gRPC channel's maximum age (10 s + 10% jitter) plus endpoints' propagation:
    # a new pod's gRPC clients reach it only when their channels reconnect.
    assert IDLE_SECONDS == 15.0
    quiet = deque([sample(0.0, 40), sample(5.0, 40)])
    assert idle(quiet, sample(15.0, 40))
    assert not idle(quiet, sample(12.0, 40))  # too short a look: its gRPC clients may not have reconnected yet
    assert not idle(quiet, sample(15.0, 41))  # one request: it is reached
    assert not idle(quiet, sample(15.0, 40, pending=2))  # requests waiting: it is reached
    assert not idle(deque(), sample(15.0, 0))
