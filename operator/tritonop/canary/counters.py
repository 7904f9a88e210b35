"""Pure: Triton's per-version counters, read from a /metrics page and taken over a window.

Triton labels every metric with {model, version}, so one server's page tells the canary
version's traffic from the stable version's. An analysis window is the difference of two reads
of the cumulative counters: the canary version on the canary pods, the stable version on the
others.

A streaming model (Triton's vLLM backend, or any decoupled model exporting its families) also
has per-version time-to-first-token and inter-token-latency histograms (autoscale/tokens.py reads
the families): taken over the same window, they are what the canary is judged on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tritonop.api.status import SideFigures
from tritonop.autoscale.tokens import Histogram, Series, merged
from tritonop.autoscale.tokens import parse as parse_tokens
from tritonop.promtext import samples

# A version's token histograms: the backend's own TTFT where it has one, else Triton core's
# first-response histogram (24.11+); ITL only the vLLM backend measures.
TTFT_FAMILIES = ("vllm:time_to_first_token_seconds", "nv_inference_first_response_histogram_ms")
ITL_FAMILIES = ("vllm:time_per_output_token_seconds",)


@dataclass(frozen=True)
class VersionCounters:
    """Triton's cumulative counters of one model version on one server."""

    success: float = 0.0
    failure: float = 0.0
    compute_us: float = 0.0  # nv_inference_compute_infer_duration_us
    ttft: Histogram | None = None  # a streaming model's time to first token (ms)
    itl: Histogram | None = None  # and its inter-token latency (ms)

    def __sub__(self, other: VersionCounters) -> VersionCounters:
        # A server restart resets its counters: a negative delta counts as a fresh start.
        if self.success < other.success or self.failure < other.failure:
            return self
        return VersionCounters(
            self.success - other.success,
            self.failure - other.failure,
            self.compute_us - other.compute_us,
            self.ttft.since(other.ttft) if self.ttft is not None else None,
            self.itl.since(other.itl) if self.itl is not None else None,
        )

    def __add__(self, other: VersionCounters) -> VersionCounters:
        return VersionCounters(
            self.success + other.success,
            self.failure + other.failure,
            self.compute_us + other.compute_us,
            merged(h for h in (self.ttft, other.ttft) if h is not None),
            merged(h for h in (self.itl, other.itl) if h is not None),
        )

    @property
    def streams(self) -> bool:
        """Token figures were measured: the model streams, and they are what it is judged on."""
        return any(h is not None and h.count > 0 for h in (self.ttft, self.itl))

    def token_ms(self, quantile: float) -> tuple[float | None, float | None]:
        """(TTFT, ITL) at this quantile over the window (None: not measured)."""

        def at(histogram: Histogram | None) -> float | None:
            return histogram.quantile(quantile) if histogram is not None else None

        return at(self.ttft), at(self.itl)

    @property
    def requests(self) -> float:
        return self.success + self.failure

    def figures(self, quantile: float = 0.95) -> SideFigures:
        compute = self.compute_us / self.success / 1000.0 if self.success else None
        ttft, itl = self.token_ms(quantile)
        return SideFigures.model_validate(
            {
                "requests": round(self.requests),
                "errors": round(self.failure),
                "computeMs": None if compute is None else round(compute, 2),
                "timeToFirstTokenMs": None if ttft is None else round(ttft, 1),
                "interTokenLatencyMs": None if itl is None else round(itl, 2),
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
    tokens = parse_tokens(text, model, 0.0)
    ttft = _by_version(tokens.histograms, TTFT_FAMILIES)
    itl = _by_version(tokens.histograms, ITL_FAMILIES)
    return {
        version: VersionCounters(**values, ttft=ttft.get(version), itl=itl.get(version))
        for version, values in found.items()
    }


def _by_version(
    histograms: Mapping[str, Mapping[Series, Histogram]], families: tuple[str, ...]
) -> dict[int, Histogram]:
    """The first of these families the page has, one histogram per version (series merged)."""
    for family in families:
        if family in histograms:
            grouped: dict[int, list[Histogram]] = {}
            for series, histogram in histograms[family].items():
                version = dict(series).get("version", "")
                if version.isdigit():
                    grouped.setdefault(int(version), []).append(histogram)
            return {v: h for v, items in grouped.items() if (h := merged(items)) is not None}
    return {}


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
