"""Pure: one canary analysis, the canary side against the stable side over the same window.

Compute time per request (a pod's queue does not count) and the failure rate are compared. Too
little traffic is inconclusive (the rollout pauses, never fails); a burst of failures fails
fast (the rollout rolls back at once, whatever the window's size).
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

    def status(self, at: str) -> AnalysisStatus:
        """As status.rollout.lastAnalysis shows it."""
        return AnalysisStatus(
            result=self.result,
            reason=self.reason,
            message=self.message,
            canary=self.canary.figures(),
            stable=self.stable.figures(),
            at=at,
        )


def judge(canary: VersionCounters, stable: VersionCounters, analysis: CanaryAnalysis) -> Verdict:
    """One analysis: the canary side against the stable side over the same window."""

    def verdict(result: Result, reason: str, message: str) -> Verdict:
        return Verdict(result, reason, message, canary, stable)

    c, s = canary.figures(), stable.figures()
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
    compared = _compare_compute(c, s, analysis)
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
