"""A streaming model's canary is judged on time to first token and inter-token latency, each
side's own, from the per-version histograms the vLLM backend exports."""

from __future__ import annotations

import pytest

from tritonop.api.spec import CanaryAnalysis
from tritonop.autoscale.tokens import Histogram
from tritonop.canary.counters import VersionCounters, parse_version_counters
from tritonop.canary.judge import judge

ANALYSIS = CanaryAnalysis.model_validate(
    {"minRequests": 100, "maxLatencyIncreasePercent": 20, "maxErrorRatePercent": 1, "fastFailErrors": 20}
)
BOUNDS = (50.0, 100.0, 200.0, 400.0, 800.0, float("inf"))  # ms


def histogram(*in_bucket: float) -> Histogram:
    """Cumulative counts from per-bucket counts."""
    counts, total = [], 0.0
    for n in in_bucket:
        total += n
        counts.append(total)
    return Histogram(BOUNDS, tuple(counts))


def side(requests: int, ttft: Histogram | None, itl: Histogram | None, errors: int = 0) -> VersionCounters:
    # The vLLM backend's compute counters stay near zero: they must not decide anything.
    return VersionCounters(success=requests - errors, failure=errors, compute_us=1.0, ttft=ttft, itl=itl)


FAST = histogram(0, 100, 0, 0, 0, 0)  # p95 95 ms
SLOW = histogram(0, 0, 100, 0, 0, 0)  # p95 195 ms


@pytest.mark.parametrize(
    ("canary", "stable", "result", "reason"),
    [
        pytest.param(side(200, FAST, FAST), side(600, FAST, FAST), "Passed", "Healthy", id="same-tokens"),
        pytest.param(
            side(200, FAST, SLOW), side(600, FAST, FAST), "Failed", "InterTokenLatencyRegression", id="slower-itl"
        ),
        pytest.param(
            side(200, SLOW, FAST), side(600, FAST, FAST), "Failed", "TimeToFirstTokenRegression", id="slower-ttft"
        ),
        pytest.param(
            side(200, FAST, FAST, errors=5), side(600, FAST, FAST), "Failed", "ErrorRegression", id="errors-first"
        ),
        pytest.param(side(50, SLOW, SLOW), side(600, FAST, FAST), "Inconclusive", "InsufficientTraffic", id="few"),
        # Only TTFT exported (Triton core's first-response histogram, TensorRT-LLM): judged on it.
        pytest.param(side(200, SLOW, None), side(600, FAST, None), "Failed", "TimeToFirstTokenRegression", id="ttft"),
    ],
)
def test_judge_on_tokens(canary: VersionCounters, stable: VersionCounters, result: str, reason: str) -> None:
    verdict = judge(canary, stable, ANALYSIS)
    assert (verdict.result, verdict.reason) == (result, reason), verdict.message


def test_the_message_and_status_give_both_figures_at_the_token_percentile() -> None:
    verdict = judge(side(200, FAST, SLOW), side(600, FAST, FAST), ANALYSIS, quantile=0.5)
    assert verdict.message == (
        "p50 TTFT 75 ms vs 75 ms (+0%), p50 ITL 150 ms vs 75 ms (+100%) over 200 streams (maxLatencyIncreasePercent 20)"
    )
    figures = verdict.status("2026-12-05T00:00:00Z").canary
    assert (figures.time_to_first_token_ms, figures.inter_token_latency_ms) == (75.0, 150.0)
    healthy = judge(side(200, FAST, FAST), side(600, FAST, FAST), ANALYSIS)
    assert healthy.message == "p95 TTFT 97.5 ms vs 97.5 ms (+0%), p95 ITL 97.5 ms vs 97.5 ms (+0%) over 200 streams"


def test_a_window_subtracts_and_adds_the_histograms() -> None:
    before = side(100, histogram(0, 100, 0, 0, 0, 0), None)
    after = side(300, histogram(0, 100, 200, 0, 0, 0), None)
    window = after - before
    assert window.ttft == histogram(0, 0, 200, 0, 0, 0)
    both = window + window
    assert both.ttft == histogram(0, 0, 400, 0, 0, 0) and both.requests == 400


PAGE = """# TYPE nv_inference_request_success counter
nv_inference_request_success{model="llm",version="1"} 40
nv_inference_request_success{model="llm",version="2"} 10
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{model="llm",version="1",le="0.1"} 30
vllm:time_to_first_token_seconds_bucket{model="llm",version="1",le="0.5"} 40
vllm:time_to_first_token_seconds_bucket{model="llm",version="1",le="+Inf"} 40
vllm:time_to_first_token_seconds_sum{model="llm",version="1"} 3.1
vllm:time_to_first_token_seconds_count{model="llm",version="1"} 40
vllm:time_to_first_token_seconds_bucket{model="llm",version="2",le="0.1"} 0
vllm:time_to_first_token_seconds_bucket{model="llm",version="2",le="0.5"} 10
vllm:time_to_first_token_seconds_bucket{model="llm",version="2",le="+Inf"} 10
vllm:time_to_first_token_seconds_sum{model="llm",version="2"} 2.5
vllm:time_to_first_token_seconds_count{model="llm",version="2"} 10
"""


def test_per_version_token_histograms_are_read_from_the_page() -> None:
    parsed = parse_version_counters(PAGE, "llm")
    assert parsed[1].ttft == Histogram((100.0, 500.0, float("inf")), (30.0, 40.0, 40.0), 3100.0)
    assert parsed[2].ttft == Histogram((100.0, 500.0, float("inf")), (0.0, 10.0, 10.0), 2500.0)
    assert parsed[1].itl is None and parsed[2].streams
