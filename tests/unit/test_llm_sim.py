"""The token-level simulator (bench/llm_sim.py): its engine on tiny traces with known outcomes."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import llm_sim  # noqa: E402
from llm_sim import Engine, Settings, TraceRequest  # noqa: E402

# Round numbers: a step takes 10 ms + 1 ms per running request + 0.1 ms per prompt token admitted.
ROUND = Engine(step_ms=10.0, step_ms_per_request=1.0, prefill_ms_per_token=0.1, token_overhead_ms=0.0, kv_tokens=1000)


def run(trace: list[TraceRequest], engine: Engine = ROUND, replicas: int = 1) -> llm_sim.Simulation:
    settings = Settings(engine=engine, jitter_s=0.0, ttft_ms=80.0, itl_ms=30.0)
    sim = llm_sim.Simulation(trace, "tiny", f"fixed-{replicas}", 0, settings)
    sim.run()
    return sim


def outcomes(sim: llm_sim.Simulation) -> list[tuple[float, float]]:
    """(TTFT ms, mean ITL ms) per request, in arrival order, to the microsecond."""
    return [(round(1000 * r.ttft, 3), round(1000 * r.itl, 3)) for r in sim.requests]


@pytest.mark.parametrize(
    ("name", "trace", "engine", "expected"),
    [
        (
            # 10 + 1 + 10 (prefill) = 21 ms to the first token, then steps of 11 ms.
            "one_request_alone",
            [TraceRequest(0.0, 100, 3)],
            ROUND,
            [(21.0, 11.0)],
        ),
        (
            # B arrives during A's first step and joins the next: 10 + 2 + 50 = 62 ms, which A's
            # second token also waits for (the prefill stalls the batch); then a 12 ms step.
            "a_prefill_stalls_the_running_request",
            [TraceRequest(0.0, 100, 3), TraceRequest(0.005, 500, 2)],
            ROUND,
            [(21.0, 37.0), (78.0, 12.0)],
        ),
        (
            # 103 + 502 tokens do not fit 600: B waits until A is done (43 ms), then 10 + 1 + 50.
            "the_kv_cache_budget_makes_a_request_wait",
            [TraceRequest(0.0, 100, 3), TraceRequest(0.005, 500, 2)],
            Engine(10.0, 1.0, 0.1, 0.0, kv_tokens=600),
            [(21.0, 11.0), (99.0, 11.0)],
        ),
        (
            # One generated token: no gap, ITL 0.
            "a_single_token_has_no_itl",
            [TraceRequest(0.0, 10, 1)],
            ROUND,
            [(12.0, 0.0)],
        ),
    ],
)
def test_engine(name: str, trace: list[TraceRequest], engine: Engine, expected: list[tuple[float, float]]) -> None:
    assert outcomes(run(trace, engine)) == expected, name


def test_least_loaded_routing_spreads_requests_over_replicas() -> None:
    sim = run([TraceRequest(0.0, 100, 3), TraceRequest(0.001, 100, 3)], replicas=2)
    assert outcomes(sim) == [(21.0, 11.0), (21.0, 11.0)]  # each alone on its replica
    assert {r.pod.uid for r in sim.requests if r.pod} == {0, 1}


def test_attainment_needs_both_targets_and_counts_gpu_seconds() -> None:
    # ttft 80 ms, ITL 30 ms: A meets both (21, 37 > 30: no), B: TTFT 78 <= 80, ITL 12: yes.
    sim = run([TraceRequest(0.0, 100, 3), TraceRequest(0.005, 500, 2)])
    assert (sim.result.requests, sim.result.within) == (2, 1)
    assert sim.result.gpu_seconds == 2.0  # one pod, sampled each second: at 0 and at 1, after the last token


def test_paired_seeds_share_arrivals_and_pod_starts() -> None:
    trace = llm_sim.load_trace("code")
    settings = Settings(limit_s=120.0)
    first = llm_sim.Simulation(trace, "code", "keda-waiting", 3, settings)
    second = llm_sim.Simulation(trace, "code", "clairvoyant", 3, settings)
    other = llm_sim.Simulation(trace, "code", "clairvoyant", 4, settings)
    assert [r.arrival for r in first.requests] == [r.arrival for r in second.requests]
    assert [r.arrival for r in first.requests] != [r.arrival for r in other.requests]
    assert first.start_rng.random() == second.start_rng.random()


def test_the_derived_traces_hold_every_request_of_the_source() -> None:
    code, conv = llm_sim.load_trace("code"), llm_sim.load_trace("conv")
    assert (len(code), len(conv)) == (8819, 19366)
    assert code[0] == TraceRequest(0.0, 4808, 10)
    assert all(a.at <= b.at for a, b in itertools.pairwise(conv))


def test_a_short_replay_runs_every_policy() -> None:
    trace = llm_sim.load_trace("conv")
    settings = Settings(limit_s=300.0)
    for policy in llm_sim.POLICIES:
        result = llm_sim.simulate(trace, "conv", policy, 0, settings)
        assert result.requests > 1000 and 0 < result.attainment <= 100, policy
        assert result.gpu_seconds >= len(result.replicas), policy
