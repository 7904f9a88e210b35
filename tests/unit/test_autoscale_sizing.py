"""The target drives sizing (queueing.py), the lead time and the forecast (forecast.py), and what
is kept across restarts (runner.learned_status / learned_history): pure, table-tested."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
from typing import Any

import pytest

from tritonop.api.spec import AutoscalingSpec, ModelDeployment
from tritonop.autoscale.forecast import (
    DAY,
    DAY_BUCKET,
    DEFAULT_LEAD_SECONDS,
    ERROR_PRIOR,
    FAST_SECONDS,
    MIN_ERROR_SAMPLES,
    WARM_UP_SECONDS,
    Forecast,
    LeadTime,
    Profile,
    reading_noise_excess,
)
from tritonop.autoscale.policy import (
    FIRST_VARIABILITY_BUSY,
    LEARNING_UTILISATION,
    VARIABILITY_BUSY,
    VARIABILITY_SAMPLES,
    VARIABILITY_SETTLE_SECONDS,
    History,
    Observation,
    decide,
    learn,
)
from tritonop.autoscale.queueing import (
    MAX_UTILISATION,
    MIN_UTILISATION,
    allowed_utilisation,
    burst_allowance,
    latency_ms,
    variability_sample,
    wait_ms,
)
from tritonop.autoscale.runner import Autoscalers, lead_from_startup, learned_history, learned_status
from tritonop.events import EventRecorder
from tritonop.facts import AutoscaleFacts
from tritonop.status import _latency_condition

# Traffic watched past the warm-up, forecasts that have been right: no headroom, no reserve.
QUIET = Forecast(errors=(0.0,) * MIN_ERROR_SAMPLES, watched_since=-WARM_UP_SECONDS)


def spec(**overrides: Any) -> AutoscalingSpec:
    base = {"minReplicas": 1, "maxReplicas": 40, "targetLatencyMs": 400, "scaleDownStabilizationSeconds": 0}
    return AutoscalingSpec.model_validate({**base, **overrides})


def observed(demand: float, ready: int, latency: float = 150.0) -> Observation:
    """Pods of 10 req/s (100 ms per request), demand all served."""
    return Observation(
        latency_ms=latency,
        request_rate=demand,
        ready_replicas=ready,
        window_seconds=3,
        average_ms=latency,
        busy=demand / ready / 10.0,
        arrival_rate=demand,
        longest_queue=0.0,
        service_ms=100.0,
    )


LEARNED = History(capacity_per_replica=10.0, service_ms=100.0, variability=0.3, forecast=QUIET)


# -- the target sets the busy fraction ------------------------------------------------------


@pytest.mark.parametrize("metric", ["p95", "p99", "average", "queue"])
def test_a_looser_target_allows_busier_replicas(metric: str) -> None:
    fractions = [allowed_utilisation(metric, t, 100.0, 10.0, 0.3).rho for t in (150, 250, 400, 1000, 5000)]
    assert fractions == sorted(fractions) and fractions[0] < fractions[-1]
    assert fractions[-1] == MAX_UTILISATION


@pytest.mark.parametrize(
    ("metric", "target", "variability"),
    [
        ("p95", 400, 0.3),
        ("p95", 250, 1.0),
        ("average", 200, 0.5),
        ("queue", 20, 0.5),
        ("p95", 1000, 2.0),
        ("p99", 400, 0.5),
        ("p99", 1000, 2.0),
    ],
)
def test_the_allowed_fraction_meets_the_target_exactly(metric: str, target: float, variability: float) -> None:
    """At the fraction found the model's latency is the target (bisection), and a little busier breaks it."""
    rho = allowed_utilisation(metric, target, 100.0, 10.0, variability).rho
    assert MIN_UTILISATION < rho < MAX_UTILISATION
    assert latency_ms(metric, rho, 100.0, variability, 10.0) == pytest.approx(target, rel=1e-3)
    assert latency_ms(metric, rho + 0.01, 100.0, variability, 10.0) > target


def test_p95_is_stricter_than_average_for_the_same_target() -> None:
    p95 = allowed_utilisation("p95", 400, 100.0, 10.0, 0.5).rho
    average = allowed_utilisation("average", 400, 100.0, 10.0, 0.5).rho
    assert p95 < average


def test_p99_is_stricter_than_p95_for_the_same_target() -> None:
    """The 99th percentile of the wait is the 95th's, times ln(100 rho) / ln(20 rho): at 400 ms, a
    100 ms model with Poisson arrivals (V = 1/2) may run about 59% busy for p95 and 39% for p99."""
    p95 = allowed_utilisation("p95", 400, 100.0, 10.0, 0.5).rho
    p99 = allowed_utilisation("p99", 400, 100.0, 10.0, 0.5).rho
    assert p95 == pytest.approx(0.59, abs=0.01) and p99 == pytest.approx(0.39, abs=0.01)
    assert wait_ms("p99", 0.5, 0.5, 10.0) == pytest.approx(100.0 * math.log(50.0))


def test_mm1_mean_wait_is_kingman_with_v_one() -> None:
    # M/M/1 at rho 0.5 and 100 ms service: mean wait rho/(1-rho) x S = 100 ms.
    assert wait_ms("average", 0.5, 1.0, 10.0) == pytest.approx(100.0)
    assert variability_sample(100.0, 0.5, 10.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("metric", "target"), [("p95", 50), ("p95", 100), ("average", 80)])
def test_a_target_at_or_below_the_service_time_is_unreachable(metric: str, target: float) -> None:
    util = allowed_utilisation(metric, target, 100.0, 10.0, 0.3)
    assert not util.reachable and util.floor_ms == 100.0
    # sized for 1.5x the service time instead: a finite, moderate fraction, not MIN (not max replicas)
    assert util.rho == allowed_utilisation(metric, 150.0, 100.0, 10.0, 0.3).rho > MIN_UTILISATION


def test_the_queue_metric_has_no_service_floor() -> None:
    assert allowed_utilisation("queue", 5, 100.0, 10.0, 0.5).reachable


def test_burst_allowance_follows_the_target_and_the_lead_time() -> None:
    # A backlog grows for the lead time plus the reaction time (5 s): 4.9 s of budget over 15 s.
    assert burst_allowance("p95", 5000, 100.0, 10.0) == pytest.approx(1 + 4.9 / 15)
    assert burst_allowance("p95", 400, 100.0, 300.0) == pytest.approx(1 + 0.3 / 305)
    assert burst_allowance("p95", 50, 100.0, 10.0) == 1.0


# -- decide(): the target drives replicas ---------------------------------------------------


def test_the_issue_example_targets_now_give_different_replicas() -> None:
    """Capacity 10 req/s, demand 30 req/s, 150 ms observed: before, 50/400/5000 ms all gave 4."""
    replicas = {}
    for target in (150, 400, 1000, 5000):
        decision = decide(observed(30, 4), spec(targetLatencyMs=target), 4, LEARNED, now=0.0)
        replicas[target] = decision.replicas
        assert decision.unreachable is None
    assert replicas[150] > replicas[400] >= replicas[1000] >= replicas[5000]
    assert replicas[5000] == math.ceil(30 / (10 * MAX_UTILISATION))  # 4: each replica 95% busy
    assert replicas[150] >= 10  # 50 ms of queueing budget for a 100 ms model: mostly idle replicas


def test_an_unreachable_target_is_said_and_not_chased_to_max() -> None:
    decision = decide(observed(30, 4), spec(targetLatencyMs=50), 4, LEARNED, now=0.0)
    assert decision.unreachable is not None
    assert "target 50ms" in decision.unreachable and "p95 100ms" in decision.unreachable
    best = decide(observed(30, 4), spec(targetLatencyMs=150), 4, LEARNED, now=0.0)
    assert decision.replicas == best.replicas < 40


def test_unreachable_target_condition() -> None:
    md = ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "n", "uid": "u", "generation": 2},
            "spec": {
                "model": {"repository": "file:///r"},
                "autoscaling": {"maxReplicas": 4, "targetLatencyMs": 50},
            },
        }
    )
    facts = AutoscaleFacts(120.0, 120.0, 110.0, 5.0, 3.0, 50, "p95", unreachable="target 50ms is below ...")
    condition = _latency_condition(md, facts, md.status)
    assert (condition.status, condition.reason) == ("False", "TargetBelowServiceTime")
    assert "p95 120ms, target 50ms" in condition.message


def test_spare_replicas_unset_derives_headroom_set_is_a_floor() -> None:
    quiet = decide(observed(5, 1), spec(), 1, LEARNED, now=0.0)
    assert quiet.replicas == 1  # right forecasts, 5 req/s: one replica
    floor = decide(observed(5, 1), spec(spareReplicas=3), 1, LEARNED, now=0.0)
    assert floor.replicas == 3


def test_while_the_bursts_are_unknown_a_reserve_is_kept_that_a_looser_target_needs_less_of() -> None:
    # Pods start in 10 s; the traffic has been watched for a minute.
    new = dataclasses.replace(LEARNED, forecast=dataclasses.replace(QUIET, watched_since=0.0), lead=LeadTime((10.0,)))
    early = decide(observed(5, 1), spec(), 1, new, now=60.0)
    assert early.replicas == 3 and "while learning the bursts" in early.reason  # 0.5 + 3 / 1.5
    loose = decide(observed(5, 1), spec(targetLatencyMs=10000), 1, new, now=60.0)
    assert loose.replicas < early.replicas  # a 10 s target lets a burst wait in the queue
    later = decide(observed(5, 1), spec(), 1, new, now=WARM_UP_SECONDS + 1)
    assert later.replicas == 1  # watched long enough: the forecast's own error decides


# 28 req/s on 4 replicas of 10 req/s, 70% busy, arriving as fast as served: a steady window.
STEADY = Observation(
    latency_ms=200.0,
    request_rate=28.0,
    ready_replicas=4,
    window_seconds=3,
    busy=0.7,
    arrival_rate=28.0,
    queue_ms=70.0,  # Kingman with V = 0.3: 0.7/0.3 x 0.3 x 100 ms
    service_ms=100.0,
)


def test_variability_is_learned_from_steady_windows_only() -> None:
    steady = STEADY
    history = History(capacity_per_replica=10.0, variability=None)
    assert decide(steady, spec(), 4, history, 0.0).history.variability == pytest.approx(0.3)
    growing = Observation(**{**steady.__dict__, "arrival_rate": 40.0})  # a queue building: a transient
    assert decide(growing, spec(), 4, history, 0.0).history.variability is None


def test_the_windows_that_catch_a_burst_count_as_the_waits_they_cause() -> None:
    """V is the mean of the recent samples: one window in five waiting 900 ms is a fifth of the
    requests waiting that long, so V is the mean of four 0.3s and a 3.86 (a median said 0.3 and
    sized bursty traffic as if it were smooth); the oldest samples leave after VARIABILITY_SAMPLES."""
    steady = STEADY
    burst = dataclasses.replace(steady, queue_ms=900.0)
    assert variability_sample(900.0, 0.7, 10.0) == pytest.approx(3.86, abs=0.01)
    history = History(capacity_per_replica=10.0)
    for second in range(40):
        window = burst if second % 5 == 4 else steady  # one window in five
        history = learn(window, spec(), history, float(second), current=4)
    assert history.variability == pytest.approx((4 * 0.3 + variability_sample(900.0, 0.7, 10.0)) / 5)
    assert len(history.variability_samples) == 40
    for second in range(40, 40 + VARIABILITY_SAMPLES):
        history = learn(steady, spec(), history, float(second), current=4)
    assert history.variability == pytest.approx(0.3)
    assert len(history.variability_samples) == VARIABILITY_SAMPLES


def test_a_tight_p99_target_at_low_load_does_not_hold_replicas_too_idle_to_learn_v() -> None:
    """The prior (V = 1) allows 13% busy for p99 at 400 ms: at a steady 5 req/s of a 10 req/s
    model that was 4 replicas, each 12.5% busy, below the busy fraction V is learned at, for as long
    as the load stayed low (8, maxReplicas, in the simulator, with the warm-up reserve). Until V is
    learned, replicas run at least LEARNING_UTILISATION busy, and the first V comes from windows
    that busy."""
    p99 = spec(metric="p99", maxReplicas=8)
    unlearned = History(capacity_per_replica=10.0, service_ms=100.0, forecast=QUIET)
    assert allowed_utilisation("p99", 400, 100.0, 10.0, 1.0).rho == pytest.approx(0.13, abs=0.01)
    decision = decide(observed(5.0, 5), p99, 5, unlearned, 0.0)
    assert decision.utilisation == LEARNING_UTILISATION and decision.recommendation == 3
    # 5 req/s over 3 pods: 17% busy, steady, queueing as V = 0.5 (25 requests in 5 s): learned at once.
    window = dataclasses.replace(observed(5.0, 3), window_seconds=5, queue_ms=1000 * 0.5 / 10.0 * (1 / 6) / (5 / 6))
    learned = decide(window, p99, 3, unlearned, 0.0).history
    assert learned.variability == pytest.approx(0.5)
    # Once V is known, windows under VARIABILITY_BUSY's floor teach nothing more, and the target's
    # own fraction applies (p99 at 400 ms with V = 0.5: about 39% busy, 2 replicas for 5 req/s).
    assert FIRST_VARIABILITY_BUSY < 5 / 30 < VARIABILITY_BUSY[0]
    assert learn(window, p99, learned, 1.0, current=3).variability_samples == learned.variability_samples
    after = decide(observed(5.0, 3), p99, 3, learned, 1.0)
    assert after.utilisation == pytest.approx(0.39, abs=0.01) and after.recommendation == 2


def test_the_backlog_draining_after_a_scale_up_teaches_no_variability() -> None:
    """Served keeps up with arrivals while new pods drain the overload's queue: it looks steady,
    with the overload's queue times. Those windows are left out."""
    draining = dataclasses.replace(STEADY, latency_ms=900.0, arrival_rate=27.0, queue_ms=800.0)
    scaled = History(capacity_per_replica=10.0, last_scale_up=100.0)
    assert learn(draining, spec(), scaled, 105.0, current=4).variability_samples == ()
    assert learn(draining, spec(), scaled, 130.0, current=4).variability_samples != ()  # settled: learned again


def test_no_variability_is_learned_while_asked_for_pods_start_and_the_target_is_missed() -> None:
    """With starts of minutes, pods asked for serve long after the scale-up: meanwhile the ready
    ones hold the shortfall's backlog (seconds of queue at a busy fraction under 97%, served close
    to arriving), and the windows as it drains onto the new pods look steady. Kingman's V would
    read 4 (its bound) from them and size every replica near-idle for minutes after. Those windows
    and the settle time after the last of them are left out, and nothing more: pods starting
    while the target holds (the warm-up reserve, a planned scale-up) still teach V."""
    backlog = dataclasses.replace(STEADY, average_ms=11_000.0, latency_ms=11_000.0, busy=0.92, queue_ms=10_900.0)
    history = History(capacity_per_replica=10.0)
    starting = learn(backlog, spec(), history, 200.0, current=8)
    assert starting.variability_samples == () and starting.last_short == 200.0
    # All 8 ready now, the backlog draining onto them: still the shortfall's queue times.
    draining = dataclasses.replace(backlog, ready_replicas=8, busy=0.4, average_ms=1_000.0, queue_ms=900.0)
    assert learn(draining, spec(), starting, 210.0, current=8).variability_samples == ()
    settled = learn(STEADY, spec(), starting, 200.0 + VARIABILITY_SETTLE_SECONDS, current=4)
    assert len(settled.variability_samples) == 1 and settled.variability is not None
    # Pods starting with the target met: a steady window, learned.
    assert learn(STEADY, spec(), history, 200.0, current=8).variability == pytest.approx(0.3)
    # The same backlog with every pod asked for Ready is not a shortfall of starting pods.
    assert learn(backlog, spec(), history, 200.0, current=4).last_short == float("-inf")
    # `metric: queue` bounds the queue time: that is the mean held against its target.
    queue = spec(metric="queue", targetLatencyMs=100)
    waits = dataclasses.replace(STEADY, average_ms=170.0, queue_ms=70.0)
    assert learn(waits, queue, history, 200.0, current=8).last_short == float("-inf")
    assert learn(dataclasses.replace(waits, queue_ms=130.0), queue, history, 200.0, current=8).last_short == 200.0


# -- lead time ------------------------------------------------------------------------------


def test_lead_time_is_measured_from_the_write_to_serving() -> None:
    lead = LeadTime()
    assert lead.seconds == DEFAULT_LEAD_SECONDS
    lead = lead.observe(now=100.0, ready=2, replicas_before=2, replicas_after=4)
    lead = lead.observe(now=150.0, ready=3, replicas_before=4, replicas_after=4)
    assert lead.samples == ()
    lead = lead.observe(now=190.0, ready=4, replicas_before=4, replicas_after=4)
    assert lead.samples == (90.0,) and lead.seconds == 90.0 and lead.pending == ()


def test_a_scale_down_before_the_pod_serves_cancels_its_measurement() -> None:
    lead = LeadTime().observe(now=0.0, ready=2, replicas_before=2, replicas_after=5)
    lead = lead.observe(now=10.0, ready=2, replicas_before=5, replicas_after=3)
    assert lead.pending == ()


def test_decide_measures_the_lead_and_plans_for_it() -> None:
    history = LEARNED
    first = decide(observed(40, 2), spec(), 2, history, now=0.0)
    assert first.direction == "up"
    replicas = first.replicas
    # 120 s later every asked-for pod serves
    later = decide(observed(40, replicas), spec(), replicas, first.history, now=120.0)
    assert later.history.lead.samples == (120.0,)


# -- the forecast -----------------------------------------------------------------------------


def day_rate(second: float) -> float:
    """10 req/s at night, 30 at 13:00, a smooth daily rise and fall."""
    return 20.0 - 10.0 * math.cos(2 * math.pi * ((second % DAY) - 3600.0) / DAY)


def test_the_daily_profile_anticipates_tomorrows_rise() -> None:
    profile = Profile.empty(DAY, DAY_BUCKET)
    for second in range(0, DAY + DAY_BUCKET, 60):
        profile = profile.observe(float(second), day_rate(second))
    assert profile.known == DAY // DAY_BUCKET
    morning = DAY + 6 * 3600.0  # rising: the next hour is higher than now
    ratio = profile.peak_ratio(morning, 3600.0)
    assert ratio == pytest.approx(day_rate(morning + 3600) / day_rate(morning), rel=0.03)
    evening = DAY + 20 * 3600.0  # falling: the peak of the horizon is now
    assert profile.peak_ratio(evening, 3600.0) == pytest.approx(1.0, abs=0.01)


def test_an_unseen_profile_says_nothing() -> None:
    assert Profile.empty(DAY, DAY_BUCKET).peak_ratio(0.0, 600.0) is None


def test_the_forecast_uses_the_profile_once_learned_and_the_trend_before() -> None:
    forecast = Forecast()
    for second in range(0, 2 * DAY, 10):
        forecast = forecast.observe(float(second), float(second), day_rate(second), lead=300.0)
    morning = 2 * DAY + 6 * 3600.0
    for second in range(int(morning) - 600, int(morning), 10):
        forecast = forecast.observe(float(second), float(second), day_rate(second), lead=300.0)
    peak, source = forecast.peak(morning, 1800.0)
    assert source == "daily profile"
    assert peak == pytest.approx(day_rate(morning + 1800), rel=0.05)
    ramp = Forecast()
    for second in range(0, 300):
        ramp = ramp.observe(float(second), None, 5.0 + 0.1 * second, lead=60.0)
    rising, source = ramp.peak(None, 60.0)
    assert source == "trend" and rising > 5.0 + 0.1 * 300  # projected past today's level


def test_recurring_bursts_are_planned_for_and_a_one_off_step_is_not() -> None:
    def run(rate: Any) -> Forecast:
        forecast = Forecast()
        for second in range(0, 900):
            forecast = forecast.observe(float(second), None, rate(second), lead=10.0)
        return forecast

    bursts = run(lambda s: 24.0 if s % 60 < 12 else 6.0)
    step = run(lambda s: 30.0 if s >= 100 else 5.0)
    assert bursts.error > ERROR_PRIOR
    assert step.error < 1.0
    # at the base of the bursts: headroom towards the bursts' level, never past it
    base = bursts.headroom(6.0, lead=10.0)
    assert 6.0 + base <= bursts.recent_peak and base > 6.0


def poisson_readings(lead: float, window: float | None, seed: int) -> Forecast:
    """An hour of steady 20 req/s, each reading the count of a 3 s window (seeded Poisson)."""
    rng = random.Random(seed)
    forecast = Forecast()
    for second in range(0, 3600, 3):
        count, arrival = 0, rng.expovariate(20.0)
        while arrival < 3.0:
            count, arrival = count + 1, arrival + rng.expovariate(20.0)
        forecast = forecast.observe(float(second), None, count / 3.0, lead=lead, reading_seconds=window)
    return forecast


def test_a_long_lead_time_plans_for_a_moment_s_noise_not_the_largest_of_its_readings() -> None:
    def mean_error(lead: float, window: float | None) -> float:
        return sum(poisson_readings(lead, window, seed).error for seed in range(3)) / 3

    short = mean_error(10.0, 3.0)
    assert mean_error(10.0, None) == short  # a horizon of FAST_SECONDS keeps all its noise
    # The highest 3 s reading over 300 s holds far more noise than over 10 s ...
    assert mean_error(300.0, None) > 1.3 * short
    # ... which the shortfalls no longer count: the same headroom at either lead time.
    assert mean_error(300.0, 3.0) == pytest.approx(short, rel=0.25)


def test_the_recent_peak_caps_a_long_lead_time_s_headroom_less_the_noise_of_its_readings() -> None:
    # 20 req/s planned, the highest 3 s reading of the last minutes 30 req/s, a large error.
    forecast = Forecast(errors=(5.0,) * MIN_ERROR_SAMPLES, recent_peak=30.0, reading_seconds=3.0)
    assert forecast.headroom(20.0, lead=10.0) == pytest.approx(10.0)  # the recent peak
    noise = reading_noise_excess(300.0, 3.0) * math.sqrt(20.0)
    assert forecast.headroom(20.0, lead=300.0) == pytest.approx(10.0 - noise)
    assert dataclasses.replace(forecast, reading_seconds=None).headroom(20.0, lead=300.0) == 10.0


@pytest.mark.parametrize(
    ("horizon", "window", "expected"),
    [
        (FAST_SECONDS, 3.0, 0.0),
        (5.0, 3.0, 0.0),  # shorter than the level's own averaging: nothing comes off
        (300.0, None, 0.0),  # the readings' window unknown: nothing comes off
        (300.0, 3.0, 0.902),  # 100 readings' largest (2.50 sigma) less 3.3's (0.94), / sqrt(3)
        (90.0, 3.0, 0.637),
        (300.0, 16.0, 0.460),  # token readings: fewer, each less noisy
    ],
)
def test_the_noise_taken_off_grows_with_the_readings_a_horizon_holds(
    horizon: float, window: float | None, expected: float
) -> None:
    assert reading_noise_excess(horizon, window) == pytest.approx(expected, abs=1e-3)


def test_everything_is_bounded() -> None:
    forecast = Forecast()
    for second in range(0, 20_000, 3):
        forecast = forecast.observe(float(second), float(second), 10.0 + (second % 7), lead=600.0)
    assert len(forecast.pending) <= 32 and len(forecast.errors) <= 64
    assert len(forecast.daily.values) == 288 and len(forecast.weekly.values) == 168


# -- kept across restarts -------------------------------------------------------------------


def test_the_learned_memory_survives_a_restart_through_status() -> None:
    forecast = Forecast()
    for second in range(0, DAY + 600, 30):
        forecast = forecast.observe(float(second), float(second), day_rate(second), lead=60.0)
    history = History(
        capacity_per_replica=10.0,
        service_ms=100.0,
        variability=0.25,
        lead=LeadTime((70.0, 95.0)),
        forecast=forecast,
    )
    status = learned_status(history, 0.8)
    body = status.model_dump(by_alias=True, exclude_none=True)
    assert len(body["dailyProfile"]) == 288 and body["podStartSeconds"] == [70, 95]
    restored = learned_history(type(status).model_validate(body))
    assert restored.capacity_per_replica == 10.0 and restored.variability == 0.25
    assert restored.lead.seconds == 95.0
    assert restored.forecast.daily.known == forecast.daily.known
    assert restored.forecast.error == pytest.approx(forecast.error, abs=1e-3)
    assert learned_history(None) == History()


def test_before_its_own_scale_up_the_lead_time_is_the_pod_starts_status_measured() -> None:
    """A large model's first pods took minutes (status.startup): that, not the 30 s default, is
    planned for until the autoscaler times a scale-up of its own."""
    md = ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "n", "uid": "u"},
            "spec": {
                "model": {"repository": "file:///r"},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetLatencyMs": 400},
            },
            "status": {
                "startup": {
                    "pod": "m-0",
                    "readyAt": "2026-12-04T10:00:00Z",
                    "totalSeconds": 150,
                    "loadSeconds": 120,
                    "readySeconds": 1,
                    "recentTotalSeconds": [150, 95],
                }
            },
        }
    )
    assert md.status.startup is not None
    lead = lead_from_startup(md.status.startup)
    assert lead.seconds == 151.0 and lead.seconds > DEFAULT_LEAD_SECONDS  # + the controllers' second

    class Memory:
        autoscaler = None

    held = Memory()
    events = EventRecorder(logging.LoggerAdapter(logging.getLogger("test"), {}), "n/m")
    asyncio.run(Autoscalers().scale(md, [], None, events, held))
    assert held.autoscaler is not None and held.autoscaler.history.lead.seconds == 151.0
    asyncio.run(held.autoscaler.reader.close())


# -- replicas that clients do not reach ------------------------------------------------------


def test_a_scale_up_is_held_while_ready_replicas_get_no_request_and_the_others_are_short() -> None:
    # 4 ready, 2 of them idle for 10 s (pinned gRPC connections), 30 req/s on the other two.
    pinned = dataclasses.replace(observed(30, 4), idle_replicas=2, busy=0.75)
    held = decide(pinned, spec(), 4, LEARNED, now=0.0)
    assert (held.replicas, held.direction) == (4, "none")
    assert held.unused is not None and "2 of 4 ready replica(s) got no request in 15s" in held.unused
    assert "gRPC" in held.unused and held.unused in held.reason
    # The same load spread over every replica: scaled up as before.
    spread = decide(observed(30, 4), spec(), 4, LEARNED, now=0.0)
    assert spread.replicas > 4 and spread.unused is None


@pytest.mark.parametrize(
    ("idle", "demand", "held"),
    [
        (0, 30.0, False),  # every replica gets traffic
        (2, 8.0, False),  # idle replicas, but the others are not short: nothing to hold
        (2, 30.0, True),
        (4, 30.0, False),  # nothing measured as used: no conclusion
    ],
)
def test_unused_replicas_hold_only_a_scale_up_they_would_not_serve(idle: int, demand: float, held: bool) -> None:
    observation = dataclasses.replace(observed(demand, 4), idle_replicas=idle)
    decision = decide(observation, spec(spareReplicas=0), 4, LEARNED, now=0.0)
    assert (decision.unused is not None) == held
