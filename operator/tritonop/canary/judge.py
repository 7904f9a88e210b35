"""Pure: one canary analysis, the canary side against the stable side over the same window.

Compute time per request (a pod's queue does not count) and the failure rate are compared. Too
little traffic is inconclusive (the rollout pauses, never fails); a burst of failures fails
fast (the rollout rolls back at once, whatever the window's size). A streaming model is judged
on what its users feel instead of compute time (which the vLLM backend leaves near zero and
which tracks output length): time to first token and inter-token latency at the token
percentile, each side's own over the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tritonop.api.spec import CanaryAnalysis
from tritonop.api.status import AnalysisStatus, SideFigures
from tritonop.canary.counters import VersionCounters

Result = Literal["Passed", "Failed", "Inconclusive", "FastFailed"]


@dataclass(frozen=True)
class Verdict:
    result: Result
    reason: str
    message: str
    canary: VersionCounters
    stable: VersionCounters
    quantile: float = 0.95  # the token percentile (streaming models)

    def status(self, at: str) -> AnalysisStatus:
        """As status.rollout.lastAnalysis shows it."""
        return AnalysisStatus(
            result=self.result,
            reason=self.reason,
            message=self.message,
            canary=self.canary.figures(self.quantile),
            stable=self.stable.figures(self.quantile),
            at=at,
        )


def judge(
    canary: VersionCounters, stable: VersionCounters, analysis: CanaryAnalysis, quantile: float = 0.95
) -> Verdict:
    """One analysis: the canary side against the stable side over the same window (quantile:
    the token percentile, for a streaming model)."""

    def verdict(result: Result, reason: str, message: str) -> Verdict:
        return Verdict(result, reason, message, canary, stable, quantile)

    c, s = canary.figures(quantile), stable.figures(quantile)
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
    streaming = canary.streams and stable.streams
    compared = _compare_tokens(c, s, analysis, quantile) if streaming else _compare_compute(c, s, analysis)
    if compared is not None:
        return verdict(*compared)
    return verdict("Passed", "Healthy", f"errors {error_rate:.1f}% over {c.requests:,} requests")


def _compare_compute(c: SideFigures, s: SideFigures, analysis: CanaryAnalysis) -> tuple[Result, str, str] | None:
    """Errors within bounds: the compute time per request decides (None: a side did not measure it)."""
    if c.compute_ms is None or not s.compute_ms:
        return None
    increase = 100.0 * (c.compute_ms - s.compute_ms) / s.compute_ms
    figures = f"compute {c.compute_ms:g} ms vs {s.compute_ms:g} ms ({increase:+.0f}%) over {c.requests:,} requests"
    if increase > analysis.max_latency_increase_percent:
        return (
            "Failed",
            "LatencyRegression",
            f"{figures} (maxLatencyIncreasePercent {analysis.max_latency_increase_percent})",
        )
    return "Passed", "Healthy", figures


def _compare_tokens(
    c: SideFigures, s: SideFigures, analysis: CanaryAnalysis, quantile: float
) -> tuple[Result, str, str]:
    """Errors within bounds, a streaming model: TTFT and ITL at the token percentile decide, each
    measured on both sides (a figure one side lacks is left out)."""
    label = f"p{100 * quantile:g}"
    figures: list[str] = []
    worst: tuple[float, str] | None = None
    for name, reason, canary_ms, stable_ms in (
        ("TTFT", "TimeToFirstTokenRegression", c.time_to_first_token_ms, s.time_to_first_token_ms),
        ("ITL", "InterTokenLatencyRegression", c.inter_token_latency_ms, s.inter_token_latency_ms),
    ):
        if canary_ms is None or not stable_ms:
            continue
        increase = 100.0 * (canary_ms - stable_ms) / stable_ms
        figure = f"{label} {name} {canary_ms:g} ms vs {stable_ms:g} ms ({increase:+.0f}%)"
        figures.append(figure)
        if increase > analysis.max_latency_increase_percent and (worst is None or increase > worst[0]):
            worst = (increase, reason)
    said = f"{', '.join(figures)} over {c.requests:,} streams"
    if worst is not None:  # the reason names the worst regression; the message gives both figures
        return "Failed", worst[1], f"{said} (maxLatencyIncreasePercent {analysis.max_latency_increase_percent})"
    return "Passed", "Healthy", said
