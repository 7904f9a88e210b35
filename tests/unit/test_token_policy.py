"""Sizing for tokens (autoscale/token_policy.py): pure, table-tested."""

from __future__ import annotations

import dataclasses

import pytest

from tritonop.autoscale.forecast import MIN_ERROR_SAMPLES, WARM_UP_SECONDS, Forecast
from tritonop.autoscale.token_policy import (
    MAX_UTILISATION,
    MIN_UTILISATION,
    MIN_WINDOWS,
    Allowed,
    StepModel,
    TokenHistory,
    TokenObservation,
    TokenTargets,
    allowed_utilisation,
    decide,
    kv_fill,
    size,
)

A, B, C = 15.0, 1.84, 0.01  # model_repo/tokens as measured (bench/README.md, llm_sim.py)
TARGETS = TokenTargets(ttft_ms=500, itl_ms=50, percentile=95, min_replicas=1, max_replicas=8)
QUIET = Forecast(errors=(0.0,) * MIN_ERROR_SAMPLES, watched_since=-WARM_UP_SECONDS)
# A forecast that missed by 6 Poisson sigmas (code's bursts): the whole scale-down window holds.
BURSTY = dataclasses.replace(QUIET, errors=(6.0,) * MIN_ERROR_SAMPLES)
# One that missed by 1 sigma (conv's smooth traffic): half the window (1 / ERROR_PRIOR's 2).
STEADY = dataclasses.replace(QUIET, errors=(1.0,) * MIN_ERROR_SAMPLES)


def exact_model(windows: int = 40) -> StepModel:
    """Windows an engine with step = A + B x batch + C x prefill would show, at varied loads."""
    model = StepModel()
    for i in range(windows):
        itl = 20.0 + 3.0 * (i % 10)  # ms
        prompt = 0.5 + 0.4 * (i % 7)  # prompt tokens/ms per replica
        generation = (1.0 - A / itl - C * prompt) / B  # what fills the rest of the time
        model = model.observe(float(i), 1.0 / itl, generation, prompt)
    return model


def test_the_step_model_learns_the_engine_from_its_windows() -> None:
    assert exact_model().solve() == pytest.approx((A, B, C), rel=0.05)  # the ridge prior pulls a little


def test_without_windows_the_step_model_is_its_prior() -> None:
    assert StepModel().solve() == pytest.approx((20.0, 1.0, 0.05))


@pytest.mark.parametrize(
    ("name", "targets", "prompt", "expected"),
    [
        # ITL: 1.5 x 15 ms idle; 1 - 22.5 / 50. TTFT: 1 - 22.5 / (500/2 - 10): looser, not the limit.
        ("the_itl_target_limits", TARGETS, 1000, Allowed(0.55, "itl")),
        (
            "a_looser_itl_target_allows_busier_replicas",
            dataclasses.replace(TARGETS, itl_ms=100),
            1000,
            Allowed(0.775, "itl"),
        ),
        # 10,000-token prompts: 100 ms of prefill; 1 - 22.5 / (250 - 100) = 0.85 < ITL's 0.8875.
        (
            "long_prompts_make_the_ttft_target_limit",
            dataclasses.replace(TARGETS, itl_ms=200),
            10_000,
            Allowed(0.85, "ttft"),
        ),
        ("no_targets_run_replicas_at_the_most", TokenTargets(None, None), 1000, Allowed(MAX_UTILISATION, "none")),
        (
            "an_itl_target_below_an_idle_replica_is_unreachable",
            dataclasses.replace(TARGETS, itl_ms=20),
            1000,
            Allowed(MIN_UTILISATION, "itl", "ITL p95 20ms <= 22ms idle"),
        ),
        (
            # TTFT idle: 2 x (1.5 x 15 + 10) = 65 ms.
            "a_ttft_target_below_an_idle_replica_is_unreachable",
            dataclasses.replace(TARGETS, ttft_ms=60),
            1000,
            Allowed(MIN_UTILISATION, "ttft", "TTFT p95 60ms <= 65ms idle"),
        ),
    ],
)
def test_allowed_utilisation(name: str, targets: TokenTargets, prompt: float, expected: Allowed) -> None:
    got = allowed_utilisation(targets, A, C, prompt, itl_ratio=1.5, ttft_ratio=2.0)
    assert dataclasses.replace(got, rho=round(got.rho, 4)) == expected, name


@pytest.mark.parametrize(
    ("name", "targets", "caches", "step_ms", "expected"),
    [
        # work: 1.84 x 2 + 0.01 x 10 = 3.78 replicas of engine time, at 55% busy: 6.9 -> 7.
        ("work_decides", TARGETS, 0.0, None, 7),
        ("a_looser_itl_target_costs_fewer", dataclasses.replace(TARGETS, itl_ms=100), 0.0, None, 5),
        # 5 caches in use, each kept 60% full: 8.3 -> 9.
        ("the_kv_cache_decides", TARGETS, 5.0, None, 9),
        # Measured at 20 ms steps: 9 replicas run 42% busy, steps of 25.9 ms hold each cache
        # 1.29x longer (72% full); 11 replicas: 22.9 ms, 52%.
        ("slower_steps_hold_the_caches_longer", TARGETS, 5.0, 20.0, 11),
        # Measured at 40 ms steps: 7 replicas step in 32.6 ms, 58% full.
        ("faster_steps_free_the_caches_sooner", TARGETS, 5.0, 40.0, 7),
    ],
)
def test_size(name: str, targets: TokenTargets, caches: float, step_ms: float | None, expected: int) -> None:
    replicas, _, _ = size(targets, (A, B, C), 2000, 10_000, 1000, 1.5, 2.0, caches, 0.6, step_ms)
    assert replicas == expected, name


@pytest.mark.parametrize(
    ("name", "running", "usage", "expected"),
    [
        ("a_cache_of_100_requests_fills_to_83", 25.0, 0.25, 0.835),
        ("a_cache_of_9_requests_fills_to_half", 3.0, 0.33, 0.5),
        ("nothing_running_assumes_16", 0.0, 0.0, 0.5875),
    ],
)
def test_kv_fill(name: str, running: float, usage: float, expected: float) -> None:
    assert round(kv_fill(running, usage), 4) == expected, name


LEARNED = TokenHistory(
    model=exact_model(),
    itl_ratios=(1.2,) * 5,
    ttft_ratios=(2.0,) * 5,
    rates=(4.0, 8000.0, 800.0, 0.4),
    rates_at=0.0,
    forecast=QUIET,
)


def observed(ready: int = 4, generation: float = 800.0, **changes: float) -> TokenObservation:
    """4 req/s of 2,000 prompt and 200 generated tokens over `ready` replicas of the exact engine."""
    per_replica = generation / ready / 1000
    itl_mean = A / (1 - B * per_replica - C * 8000 / ready / 1000)
    base = TokenObservation(
        window_seconds=15,
        ready_replicas=ready,
        arrival_rate=generation / 200,
        prompt_tokens_per_second=generation * 10,
        generation_tokens_per_second=generation,
        ttft_ms=2.0 * (1.5 * itl_mean + C * 2000),
        itl_ms=1.2 * itl_mean,
        itl_mean_ms=itl_mean,
        running=generation * itl_mean / 1000,
        waiting=0.0,
        kv_cache_usage=0.1,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "observation", "targets", "current", "history", "now", "expected"),
    [
        (
            # ITL 1.2 x 15 / 50: 64% busy; 1.84 x 0.8 + 0.01 x 8 = 1.55 replicas of work -> 3.
            "a_learned_engine_is_sized_from_its_work",
            observed(ready=2),
            TARGETS,
            2,
            LEARNED,
            1000.0,
            (3, "up", None),
        ),
        (
            "a_looser_itl_target_needs_fewer",
            observed(ready=2),
            dataclasses.replace(TARGETS, itl_ms=100),
            2,
            LEARNED,
            1000.0,
            (2, "none", None),
        ),
        (
            "an_unreachable_itl_target_is_reported_and_capped",
            observed(ready=2),
            dataclasses.replace(TARGETS, itl_ms=15),
            2,
            LEARNED,
            1000.0,
            (8, "up", "ITL p95 15ms <= 18ms idle"),
        ),
        (
            "twice_the_tokens_twice_the_replicas",
            observed(ready=4, generation=1600.0),
            TARGETS,
            4,
            dataclasses.replace(LEARNED, rates=(8.0, 16000.0, 1600.0, 0.8)),
            1000.0,
            (5, "up", None),
        ),
        (
            # Bursty traffic: the scale-down window (300 s) still holds the 8 recommended 100 s ago.
            "a_scale_down_waits_for_the_window",
            observed(ready=8),
            TARGETS,
            8,
            dataclasses.replace(LEARNED, recommendations=((900.0, 8),), forecast=BURSTY),
            1000.0,
            (8, "none", None),
        ),
        (
            # Past the window: half of the surplus (8 -> 3 wanted) at once.
            "after_the_window_half_the_surplus_goes",
            observed(ready=8),
            TARGETS,
            8,
            dataclasses.replace(LEARNED, recommendations=((600.0, 8),), forecast=BURSTY),
            1000.0,
            (5, "down", None),
        ),
        (
            # Steady traffic, forecast within 1 sigma: the window holds for 150 s, so the 8 of
            # 100 s ago still hold...
            "a_confident_forecast_shortens_the_window",
            observed(ready=8),
            TARGETS,
            8,
            dataclasses.replace(LEARNED, recommendations=((900.0, 8),), forecast=STEADY),
            1000.0,
            (8, "none", None),
        ),
        (
            # ...and those of 200 s ago no longer do.
            "a_confident_forecast_gives_replicas_back_sooner",
            observed(ready=8),
            TARGETS,
            8,
            dataclasses.replace(LEARNED, recommendations=((800.0, 8),), forecast=STEADY),
            1000.0,
            (5, "down", None),
        ),
        (
            # An exact forecast shortens it to MIN_HOLD_FRACTION (60 s), never to nothing.
            "never_shorter_than_a_fifth_of_the_window",
            observed(ready=8),
            TARGETS,
            8,
            dataclasses.replace(LEARNED, recommendations=((945.0, 8),), forecast=QUIET),
            1000.0,
            (8, "none", None),
        ),
        (
            # Before enough forecasts were checked the error is the prior: the whole window.
            "an_unchecked_forecast_keeps_the_whole_window",
            observed(ready=8),
            TARGETS,
            8,
            dataclasses.replace(
                LEARNED, recommendations=((750.0, 8),), forecast=Forecast(watched_since=-WARM_UP_SECONDS)
            ),
            1000.0,
            (8, "none", None),
        ),
        (
            # 0.95 x 2 caches for 4 running, 6 more waiting: 4.75 caches, kept half full at the
            # shorter steps of more replicas (at most 2x shorter): 5.
            "requests_waiting_in_full_caches_count_as_kv_demand",
            observed(ready=2, waiting=6.0, kv_cache_usage=0.95, running=4.0),
            dataclasses.replace(TARGETS, itl_ms=1000, ttft_ms=100_000),
            2,
            dataclasses.replace(LEARNED, rates=(4.0, 8000.0, 800.0, 0.0)),
            1000.0,
            (5, "up", None),
        ),
        (
            # Fewer than MIN_WINDOWS learned: the targets themselves; ITL 1.6x its target on 2
            # replicas -> 4 (HPA-style, at most 2x).
            "before_the_engine_is_learned_the_targets_decide",
            observed(ready=2, itl_ms=80.0),
            TARGETS,
            2,
            TokenHistory(),
            1000.0,
            (4, "up", None),
        ),
        (
            # Requests waiting with the caches full: demand not served, one replica more.
            "before_the_engine_is_learned_requests_waiting_in_full_caches_add_one",
            observed(ready=4, waiting=3.0, kv_cache_usage=0.95),
            TARGETS,
            4,
            TokenHistory(),
            1000.0,
            (5, "up", None),
        ),
        (
            # One request waiting for the next step, the caches 10% full: no demand unserved, and
            # within target, nothing changes (it used to add a replica, held for a whole window).
            "before_the_engine_is_learned_a_request_waiting_for_the_next_step_adds_none",
            observed(ready=4, waiting=1.0),
            TARGETS,
            4,
            TokenHistory(),
            1000.0,
            (4, "none", None),
        ),
        (
            # A light load on 1 replica, far below the targets, nothing learned and the bursts not
            # watched yet: the warm-up reserve, at the prior's costs (0.1 + 0.05 replicas of work
            # + 3 / 1.15), not one replica fewer.
            "before_the_engine_is_learned_the_warm_up_reserve_holds",
            observed(ready=1, generation=100.0),
            TARGETS,
            1,
            TokenHistory(),
            1000.0,
            (3, "up", None),
        ),
        (
            # The same with spareReplicas 1 in the spec: 0.15 + 1 / 1.15, rounded up.
            "before_the_engine_is_learned_spare_replicas_set_in_the_spec_is_the_floor",
            observed(ready=1, generation=100.0),
            dataclasses.replace(TARGETS, spare_replicas=1),
            1,
            TokenHistory(),
            1000.0,
            (2, "up", None),
        ),
        (
            # Watched past the warm-up and still not learned (too idle): no reserve, the targets
            # alone (far below them: one fewer, down to minReplicas).
            "before_the_engine_is_learned_after_the_warm_up_no_reserve",
            observed(ready=2, generation=100.0),
            TARGETS,
            2,
            TokenHistory(forecast=QUIET),
            1000.0,
            (1, "down", None),
        ),
        (
            # The 15 s window is within target (3 replicas of work), but its last 5 s ran twice the
            # tokens with ITL over target: sized from those (as twice_the_tokens: 5).
            "a_burst_over_target_in_the_short_window_is_sized_from_it",
            observed(ready=4, recent=observed(ready=4, generation=1600.0)),  # type: ignore[arg-type]
            TARGETS,
            4,
            LEARNED,
            1000.0,
            (5, "up", None),
        ),
        (
            # More tokens in the last 5 s, but within both targets: the 15 s window decides alone.
            "a_short_window_within_target_changes_nothing",
            observed(ready=4, recent=observed(ready=4, generation=1000.0)),  # type: ignore[arg-type]
            TARGETS,
            4,
            LEARNED,
            1000.0,
            (3, "down", None),
        ),
        (
            "without_a_short_window_the_same_load_is_sized_from_the_long_one",
            observed(ready=4),
            TARGETS,
            4,
            LEARNED,
            1000.0,
            (3, "down", None),
        ),
        (
            # ITL at 0.59x its target, 5 requests per replica: nothing learned yet, none to give back.
            "before_the_engine_is_learned_busy_replicas_within_target_are_kept",
            observed(ready=4),
            TARGETS,
            4,
            TokenHistory(),
            1000.0,
            (4, "none", None),
        ),
        (
            # 0.4 requests per replica: too few to learn the engine from, so one fewer (then halved
            # surplus: 4 -> 3), or those replicas were never given back.
            "before_the_engine_is_learned_replicas_too_idle_to_learn_from_are_given_back",
            observed(ready=4, generation=100.0),
            TARGETS,
            4,
            TokenHistory(),
            1000.0,
            (3, "down", None),
        ),
        (
            # No traffic before the engine was ever learned: back towards minReplicas.
            "before_the_engine_is_learned_no_traffic_goes_back_to_min",
            TokenObservation(
                window_seconds=15,
                ready_replicas=4,
                arrival_rate=0.0,
                prompt_tokens_per_second=0.0,
                generation_tokens_per_second=0.0,
            ),
            TARGETS,
            4,
            TokenHistory(),
            1000.0,
            (2, "down", None),
        ),
    ],
)
def test_decide(
    name: str,
    observation: TokenObservation,
    targets: TokenTargets,
    current: int,
    history: TokenHistory,
    now: float,
    expected: tuple[int, str, str | None],
) -> None:
    decision = decide(observation, targets, current, history, now)
    assert (decision.replicas, decision.direction, decision.unreachable) == expected, (name, decision.reason)


def test_the_step_model_needs_busy_windows_before_sizing() -> None:
    history = TokenHistory()
    for second in range(MIN_WINDOWS - 1):
        history = decide(observed(ready=2), TARGETS, 2, history, float(second)).history
    assert history.model.windows == MIN_WINDOWS - 1
    idle = observed(ready=2, generation=10.0)  # a batch well under MIN_BATCH_FOR_MODEL
    assert decide(idle, TARGETS, 2, history, 10.0).history.model.windows == MIN_WINDOWS - 1
    assert decide(observed(ready=2), TARGETS, 2, history, 10.0).history.model.windows == MIN_WINDOWS


def test_spare_replicas_set_in_the_spec_replace_the_warm_up_reserve() -> None:
    warming = dataclasses.replace(LEARNED, forecast=dataclasses.replace(QUIET, watched_since=0.0))
    light = observed(ready=1, generation=100.0)
    reserve = decide(light, TARGETS, 1, warming, 60.0)
    assert reserve.replicas > 1 and "spare while learning the bursts" in reserve.reason
    none = decide(light, dataclasses.replace(TARGETS, spare_replicas=0), 1, warming, 60.0)
    assert none.replicas == 1 and "spare" not in none.reason
    floor = decide(light, dataclasses.replace(TARGETS, spare_replicas=2), 1, LEARNED, 60.0)
    assert floor.replicas == 2 and "; 2 spare" in floor.reason  # a light load + 2 / (1 + load), rounded up
