"""The autoscaling simulator (bench/autoscale_sim.py), its traces and the shared reference rules."""

from __future__ import annotations

import ast
import statistics
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import autoscale_sim as sim  # noqa: E402
import traces  # noqa: E402
from reference_policies import HpaQueueRule, KpaRule, queue_ms_since, replicas_for  # noqa: E402

from tritonop.autoscale import policy, runner  # noqa: E402


def test_paired_seeds_give_identical_arrivals() -> None:
    trace = traces.step()
    assert traces.arrivals(trace, 3) == traces.arrivals(trace, 3)
    assert traces.arrivals(trace, 3) != traces.arrivals(trace, 4)
    first = sim.simulate(trace, "knative", 3)
    second = sim.simulate(trace, "clairvoyant", 3)
    assert first.sent == second.sent == len(traces.arrivals(trace, 3))


@pytest.mark.parametrize("name", ["tritonop", "knative", "hpa-queue"])
def test_every_request_is_answered_or_failed(name: str) -> None:
    trace = traces.step()
    result = sim.simulate(trace, name, 1)
    assert result.sent == len(traces.arrivals(trace, 1))
    assert result.answered + result.failed == result.sent
    assert result.within <= result.answered
    assert len(result.replicas) == trace.seconds


def test_constant_load_under_capacity_with_fixed_replicas_meets_the_target() -> None:
    trace = traces.constant(5.0, seconds=120)  # 5 req/s on 3 replicas of 10 req/s each
    results = [sim.simulate(trace, "fixed-3", seed) for seed in range(3)]
    assert all(r.replica_seconds == 3 * 120 and r.direction_changes == 0 for r in results)
    assert min(r.attainment for r in results) >= 99.5
    assert sum(r.failed for r in results) == 0


def test_clairvoyant_is_at_least_as_good_as_reactive_ideal_on_the_step_trace() -> None:
    trace = traces.step()
    clairvoyant = [sim.simulate(trace, "clairvoyant", seed) for seed in range(3)]
    reactive = [sim.simulate(trace, "reactive-ideal", seed) for seed in range(3)]
    assert statistics.fmean(r.attainment for r in clairvoyant) >= statistics.fmean(r.attainment for r in reactive)
    assert statistics.fmean(r.attainment for r in clairvoyant) >= 97.0


def test_tritonop_runs_the_operators_code_and_patches_nothing() -> None:
    real_decide, real_cap = vars(runner)["decide"], policy.MAX_UP_FACTOR
    result = sim.simulate(traces.step(), "tritonop+nocap+period1", 0)
    assert result.decisions, "the real decide() was called"
    assert any(d.direction == "up" for _, _, _, d in result.decisions)
    assert max(result.replicas) > 1
    assert vars(runner)["decide"] is real_decide is policy.decide
    assert real_cap == policy.MAX_UP_FACTOR == 3.0


def test_the_simulator_imports_no_private_name_and_assigns_none_into_the_operator() -> None:
    source = (BENCH / "autoscale_sim.py").read_text()
    tree = ast.parse(source)
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tritonop")
        for alias in node.names
    ]
    assert imported and not [name for name in imported if name.startswith("_")]
    operator_modules = {"runner", "policy", "metrics"}
    assigned = [
        ast.unparse(target)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute | ast.Subscript) and ast.unparse(target).split(".")[0] in operator_modules
    ]
    assert assigned == [] and "vars(runner)" not in source and "monkeypatch" not in source


def test_one_run_takes_well_under_a_few_seconds() -> None:
    started = time.monotonic()
    sim.simulate(traces.step(), "tritonop", 0)
    assert time.monotonic() - started < 3.0


def test_unknown_policy_or_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        sim.parse_policy("hpa")
    with pytest.raises(ValueError, match="unknown variant"):
        sim.parse_policy("tritonop+faster")
    assert sim.parse_policy("tritonop+p95win10+nodrain")[1] == sim.Variant(summary_window_s=10.0, nodrain=True)


def test_suite_traces_are_4_to_10_minutes_at_3_to_30_requests_per_second() -> None:
    for name in traces.SUITE:
        trace = traces.get(name)
        assert 240 <= trace.seconds <= 600, name
        assert min(trace.rates) >= 3.0 and max(trace.rates) <= 30.0, name


def test_csv_trace(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("second,rate\n0,4\n2,8\n3,1.5\n")
    trace = traces.get(str(path))
    assert trace.name == "mine" and trace.rates == (4.0, 4.0, 8.0, 1.5)
    path.write_text("t,r\n0,1\n")
    with pytest.raises(ValueError, match="second,rate"):
        traces.load_csv(path)


def test_hpa_rule_scales_by_ratio_capped_and_holds_scale_down() -> None:
    rule = HpaQueueRule(target_ms=300, max_replicas=8)
    assert rule.decide(0, 3000.0, 1) == 5  # 10x over target: at most max(2x, +4)
    assert rule.decide(15, None, 5) == 5  # no requests: no change
    assert rule.decide(30, 30.0, 5) == 5  # far below: held by the 300 s window's earlier 5
    assert rule.decide(400, 30.0, 5) == 1


def test_kpa_rule_panics_on_a_burst_and_never_scales_down_while_panicking() -> None:
    rule = KpaRule(max_replicas=8)
    assert rule.decide(0, 0.5, 1, 1) == 1
    assert rule.decide(2, 6.0, 1, 1) >= 2  # panic window wants >= 2x the ready replicas
    assert rule.decide(4, 0.0, 5, 5) == 5  # panicking: never down


def test_queue_time_since_last_call_counts_new_pods_from_zero() -> None:
    previous: dict[str, tuple[float, float]] = {}
    assert queue_ms_since(previous, {"a": (1_000_000.0, 10.0)}) == 100.0
    assert queue_ms_since(previous, {"a": (1_000_000.0, 10.0)}) is None
    assert queue_ms_since(previous, {"a": (1_200_000.0, 12.0), "b": (0.0, 2.0)}) == 50.0


def test_replicas_for_keeps_each_replica_under_85_percent() -> None:
    assert replicas_for(8.5, 10.0) == 1
    assert replicas_for(8.6, 10.0) == 2
    assert replicas_for(0.0, 10.0) == 1
