"""Pure: Triton's per-version counters, read from a /metrics page and taken over a window.

Triton labels every metric with {model, version}, so one server's page tells the canary
version's traffic from the stable version's. An analysis window is the difference of two reads
of the cumulative counters: the canary version on the canary pods, the stable version on the
others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tritonop.api.status import SideFigures
from tritonop.promtext import samples


@dataclass(frozen=True)
class VersionCounters:
    """Triton's cumulative counters of one model version on one server."""

    success: float = 0.0
    failure: float = 0.0
    compute_us: float = 0.0  # nv_inference_compute_infer_duration_us

    def __sub__(self, other: VersionCounters) -> VersionCounters:
        # A server restart resets its counters: a negative delta counts as a fresh start.
        if self.success < other.success or self.failure < other.failure:
            return self
        return VersionCounters(
            self.success - other.success, self.failure - other.failure, self.compute_us - other.compute_us
        )

    def __add__(self, other: VersionCounters) -> VersionCounters:
        return VersionCounters(
            self.success + other.success, self.failure + other.failure, self.compute_us + other.compute_us
        )

    @property
    def requests(self) -> float:
        return self.success + self.failure

    def figures(self) -> SideFigures:
        compute = self.compute_us / self.success / 1000.0 if self.success else None
        return SideFigures.model_validate(
            {
                "requests": round(self.requests),
                "errors": round(self.failure),
                "computeMs": None if compute is None else round(compute, 2),
            }
        )


Counters = dict[str, dict[int, VersionCounters]]  # pod name -> version -> counters
Sides = tuple[VersionCounters, VersionCounters]  # (canary side, stable side) over one window


def parse_version_counters(text: str, model: str) -> dict[int, VersionCounters]:
    """One server's /metrics text -> counters by version of `model`."""
    names = {
        "nv_inference_request_success": "success",
        "nv_inference_request_failure": "failure",
        "nv_inference_compute_infer_duration_us": "compute_us",
    }
    found: dict[int, dict[str, float]] = {}
    for name, labels, value in samples(text, names):
        version = labels.get("version", "")
        if labels.get("model") != model or not version.isdigit():
            continue
        values = found.setdefault(int(version), {})
        values[names[name]] = values.get(names[name], 0.0) + value
    return {version: VersionCounters(**values) for version, values in found.items()}


def window_sides(
    baseline: Mapping[str, Mapping[int, VersionCounters]],
    current: Mapping[str, Mapping[int, VersionCounters]],
    canary_pods: Iterable[str],
    canary_version: int,
    stable_version: int,
) -> Sides:
    """Counters since the baseline: the canary version on canary pods, the stable version on
    the others (pods missing from the baseline joined since: their whole counters count)."""
    canary_set = set(canary_pods)
    canary, stable = VersionCounters(), VersionCounters()
    for pod, versions in current.items():
        side_version = canary_version if pod in canary_set else stable_version
        now = versions.get(side_version, VersionCounters())
        then = baseline.get(pod, {}).get(side_version, VersionCounters())
        delta = now - then
        if pod in canary_set:
            canary = canary + delta
        else:
            stable = stable + delta
    return canary, stable
