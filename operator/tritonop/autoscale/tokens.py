"""Pure: token-level figures of a generative (streaming) model, from Triton's /metrics page.

For a decoupled model served by Triton's vLLM or TensorRT-LLM backend, Triton's request metrics
say little: a request lasts as long as its output is long, and the backend takes requests off
Triton's queue at once. What tells whether users are served well is the time to the first token
(TTFT) and the time between tokens (ITL). This module reads the families the backends really
export (names, labels and units checked in their sources; see docs/llm.md):

- Triton's vLLM backend (24.08 and later; `REPORT_CUSTOM_METRICS: true` in config.pbtxt), labels
  {model, version}: histograms `vllm:time_to_first_token_seconds`,
  `vllm:time_per_output_token_seconds` (fed with vLLM's inter-token latencies) and
  `vllm:e2e_request_latency_seconds`; counters `vllm:prompt_tokens_total` and
  `vllm:generation_tokens_total`. It exports no running/waiting/KV-cache gauges in any release
  (an open pull request adds `vllm:num_requests_running`, `vllm:num_requests_waiting` and
  `vllm:gpu_cache_usage_perc`, vLLM's own names: read when present).
- Triton core (24.11 / 2.52 and later, with `--metrics-config histogram_latencies=true`), labels
  {model, version}: histogram `nv_inference_first_response_histogram_ms`, for every backend
  (whole milliseconds; default buckets 100, 500, 2000, 5000, set per model with
  `model_metrics` in config.pbtxt).
- Triton's TensorRT-LLM backend, labels {model, version} and a kind label: gauges
  `nv_trt_llm_request_metrics` (request_type active, scheduled, waiting = active - scheduled, ...),
  `nv_trt_llm_kv_cache_block_metrics` (kv_cache_block_type fraction, used, max, ...), and
  histograms `nv_llm_input_token_len` / `nv_llm_output_token_len` (tokens per finished request,
  25.02 and later; `fraction` 25.04 and later).
  No TTFT or ITL histogram of its own: TTFT comes from Triton core's first-response histogram,
  ITL is not measured.

A window is the difference of two scrapes of one pod, taken per series (a series that went away,
as an unloaded version does, is left out; one whose counts went down restarted and counts from
zero), then summed over the deployment's pods. Percentiles interpolate linearly within a bucket
as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tritonop.promtext import samples

# -- the families ----------------------------------------------------------------------------
VLLM_TTFT = "vllm:time_to_first_token_seconds"
VLLM_ITL = "vllm:time_per_output_token_seconds"
VLLM_E2E = "vllm:e2e_request_latency_seconds"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens"  # vllm:prompt_tokens_total (promtext takes `_total` off)
VLLM_GENERATION_TOKENS = "vllm:generation_tokens"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_USAGE = ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")  # a fraction, 1 = full
TRITON_FIRST_RESPONSE = "nv_inference_first_response_histogram_ms"
TRTLLM_REQUESTS = "nv_trt_llm_request_metrics"
TRTLLM_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
TRTLLM_INPUT_TOKENS = "nv_llm_input_token_len"
TRTLLM_OUTPUT_TOKENS = "nv_llm_output_token_len"

HISTOGRAMS_MS = {  # family -> factor to milliseconds (token counts: 1)
    VLLM_TTFT: 1000.0,
    VLLM_ITL: 1000.0,
    VLLM_E2E: 1000.0,
    TRITON_FIRST_RESPONSE: 1.0,
    TRTLLM_INPUT_TOKENS: 1.0,
    TRTLLM_OUTPUT_TOKENS: 1.0,
}
COUNTERS = (VLLM_PROMPT_TOKENS, VLLM_GENERATION_TOKENS)
GAUGES = (VLLM_RUNNING, VLLM_WAITING, *VLLM_KV_USAGE, TRTLLM_REQUESTS, TRTLLM_KV_BLOCKS)
SUFFIXES = ("_bucket", "_sum", "_count")
NAMES = (*(f"{family}{suffix}" for family in HISTOGRAMS_MS for suffix in SUFFIXES), *COUNTERS, *GAUGES)

Series = tuple[tuple[str, str], ...]  # a series' labels, `le` left out, sorted


# -- histograms ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts: counts[i] observations were <= bounds[i]; the last bound is +Inf."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float = 0.0

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def since(self, earlier: Histogram | None) -> Histogram:
        """The observations made after `earlier` (itself when it restarted or is new)."""
        if earlier is None or earlier.bounds != self.bounds:
            return self
        if any(now < before for now, before in zip(self.counts, earlier.counts, strict=True)):
            return self  # the counts began again (a restarted server or a reloaded model)
        counts = tuple(now - before for now, before in zip(self.counts, earlier.counts, strict=True))
        return Histogram(self.bounds, counts, self.sum - earlier.sum)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1) as Prometheus' histogram_quantile computes it: linear
        within the bucket the rank falls in, the first bucket starting at 0; in the +Inf bucket,
        the highest finite bound. None: no observations, or no +Inf bucket."""
        if len(self.bounds) < 2 or not math.isinf(self.bounds[-1]):
            return None
        counts = monotonic(self.counts)
        observations = counts[-1]
        if observations <= 0:
            return None
        rank = q * observations
        b = next(i for i, count in enumerate(counts) if count >= rank)
        if b == len(self.bounds) - 1:
            return self.bounds[-2]
        if b == 0 and self.bounds[0] <= 0:
            return self.bounds[0]
        start = 0.0 if b == 0 else self.bounds[b - 1]
        below = 0.0 if b == 0 else counts[b - 1]
        in_bucket = counts[b] - below
        if in_bucket <= 0:  # q = 0 on an empty first bucket
            return start
        return start + (self.bounds[b] - start) * ((rank - below) / in_bucket)

    def beyond_range(self, q: float) -> bool:
        """The q-quantile lies above the highest finite bound: quantile() is a lower bound."""
        counts = monotonic(self.counts)
        return bool(counts) and counts[-1] > 0 and len(counts) >= 2 and counts[-2] < q * counts[-1]

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def monotonic(counts: tuple[float, ...]) -> tuple[float, ...]:
    """Cumulative counts made non-decreasing, as Prometheus does: buckets scraped at slightly
    different moments may disagree by a few observations."""
    fixed: list[float] = []
    for count in counts:
        fixed.append(max(count, fixed[-1]) if fixed else count)
    return tuple(fixed)


def merged(histograms: Iterable[Histogram]) -> Histogram | None:
    """The sum of several histograms (pods, versions) on the bounds they all have (the +Inf
    bucket at least): each cumulative count there is exact."""
    items = list(histograms)
    if not items:
        return None
    common = set(items[0].bounds)
    for item in items[1:]:
        common &= set(item.bounds)
    bounds = tuple(sorted(common))
    counts = tuple(sum(item.counts[item.bounds.index(bound)] for item in items) for bound in bounds)
    return Histogram(bounds, counts, sum(item.sum for item in items))


# -- one scrape ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gauges:
    """What the backend says about now (None: it does not export it)."""

    running: float | None = None  # requests being generated
    waiting: float | None = None  # requests held back (no KV-cache room or batch slot yet)
    kv_cache_usage: float | None = None  # fraction of the KV cache in use, 0..1


@dataclass(frozen=True)
class TokenSample:
    """One pod's token families for one model, at one moment."""

    at: float
    histograms: Mapping[str, Mapping[Series, Histogram]] = field(default_factory=dict)  # bounds in ms
    counters: Mapping[str, Mapping[Series, float]] = field(default_factory=dict)
    gauges: Gauges = field(default_factory=Gauges)

    @property
    def empty(self) -> bool:
        return not self.histograms and not self.counters and self.gauges == Gauges()


def _bound(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def parse(text: str, model: str, at: float) -> TokenSample:
    """The token families of `model` on one /metrics page (every version of it)."""
    buckets: dict[str, dict[Series, dict[float, float]]] = {}
    sums: dict[str, dict[Series, float]] = {}
    counters: dict[str, dict[Series, float]] = {}
    gauge_values: dict[str, dict[Series, float]] = {}
    for name, labels, value in samples(text, NAMES):
        if labels.get("model") != model:
            continue
        if name.endswith("_bucket"):
            le = labels.pop("le", None)
            if le is not None:
                family = name.removesuffix("_bucket")
                buckets.setdefault(family, {}).setdefault(tuple(sorted(labels.items())), {})[_bound(le)] = value
        elif name.endswith("_sum"):
            sums.setdefault(name.removesuffix("_sum"), {})[tuple(sorted(labels.items()))] = value
        elif name in COUNTERS:
            counters.setdefault(name, {})[tuple(sorted(labels.items()))] = value
        elif name in GAUGES:
            gauge_values.setdefault(name, {})[tuple(sorted(labels.items()))] = value
    histograms: dict[str, dict[Series, Histogram]] = {}
    for family, by_series in buckets.items():
        factor = HISTOGRAMS_MS[family]
        for series, by_bound in by_series.items():
            bounds = tuple(sorted(by_bound))
            histograms.setdefault(family, {})[series] = Histogram(
                tuple(bound * factor for bound in bounds),
                tuple(by_bound[bound] for bound in bounds),
                sums.get(family, {}).get(series, 0.0) * factor,
            )
    return TokenSample(at, histograms, counters, _gauges(gauge_values))


def _gauges(values: Mapping[str, Mapping[Series, float]]) -> Gauges:
    def total(name: str) -> float | None:
        return sum(values[name].values()) if name in values else None

    def of_kind(name: str, label: str, kind: str) -> float | None:
        found = [v for series, v in values.get(name, {}).items() if (label, kind) in series]
        return sum(found) if found else None

    kv = [v for name in VLLM_KV_USAGE for v in values.get(name, {}).values()]
    running, waiting = total(VLLM_RUNNING), total(VLLM_WAITING)
    if running is None:  # TensorRT-LLM: scheduled this iteration; waiting = active - scheduled
        running = of_kind(TRTLLM_REQUESTS, "request_type", "scheduled")
    if waiting is None:
        waiting = of_kind(TRTLLM_REQUESTS, "request_type", "waiting")
    if not kv and (fraction := of_kind(TRTLLM_KV_BLOCKS, "kv_cache_block_type", "fraction")) is not None:
        kv = [fraction]
    if not kv:  # TensorRT-LLM before 25.04: used / max blocks
        used, most = (of_kind(TRTLLM_KV_BLOCKS, "kv_cache_block_type", kind) for kind in ("used", "max"))
        if used is not None and most:
            kv = [used / most]
    return Gauges(running, waiting, max(kv) if kv else None)


# -- a window ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Percentile:
    ms: float
    beyond_range: bool = False  # above the histogram's highest finite bound: `ms` is a lower bound


@dataclass(frozen=True)
class TokenWindow:
    """A deployment's token figures between two scrapes of each pod."""

    seconds: float
    ttft: Histogram | None = None  # ms
    ttft_source: str | None = None  # the family TTFT came from
    itl: Histogram | None = None  # ms
    prompt_tokens_per_second: float | None = None
    generation_tokens_per_second: float | None = None
    # Requests in progress: the backend's gauges (running + waiting) at the window's end, else
    # Little's law on the requests that finished in the window (their summed durations over the
    # window's length: vLLM's end-to-end histogram). Summed over pods.
    concurrency: float | None = None
    running: float | None = None  # gauges at the window's end, summed over pods
    waiting: float | None = None
    kv_cache_usage: float | None = None  # mean over the pods that report it
    kv_cache_usage_max: float | None = None  # the fullest pod
    pods: int = 1
    # Requests/s reaching the pods over this same window, from Triton's request counters (the pod
    # reader sets it; None: the source has none, and the request-level rate stands in).
    arrival_rate: float | None = None

    def ttft_percentile(self, percentile: float) -> Percentile | None:
        return _percentile(self.ttft, percentile)

    def itl_percentile(self, percentile: float) -> Percentile | None:
        return _percentile(self.itl, percentile)


def _percentile(histogram: Histogram | None, percentile: float) -> Percentile | None:
    if histogram is None:
        return None
    q = percentile / 100
    value = histogram.quantile(q)
    return None if value is None else Percentile(value, histogram.beyond_range(q))


def _family_since(now: TokenSample, before: TokenSample, family: str) -> Histogram | None:
    series = now.histograms.get(family)
    if not series:
        return None
    earlier = before.histograms.get(family, {})
    return merged(histogram.since(earlier.get(key)) for key, histogram in series.items())


def _counter_since(now: TokenSample, before: TokenSample, name: str) -> float | None:
    series = now.counters.get(name)
    if series is None:
        return None
    earlier = before.counters.get(name, {})
    total = 0.0
    for key, value in series.items():
        previous = earlier.get(key)
        total += value if previous is None or value < previous else value - previous
    return total


def window(before: TokenSample, now: TokenSample) -> TokenWindow:
    """One pod's token figures between two of its scrapes."""
    seconds = max(now.at - before.at, 1e-6)
    ttft, source = _family_since(now, before, VLLM_TTFT), VLLM_TTFT
    if ttft is None:
        ttft, source = _family_since(now, before, TRITON_FIRST_RESPONSE), TRITON_FIRST_RESPONSE
    prompt = _counter_since(now, before, VLLM_PROMPT_TOKENS)
    generation = _counter_since(now, before, VLLM_GENERATION_TOKENS)
    if prompt is None and (inputs := _family_since(now, before, TRTLLM_INPUT_TOKENS)) is not None:
        prompt = inputs.sum  # tokens of the requests that finished in the window
    if generation is None and (outputs := _family_since(now, before, TRTLLM_OUTPUT_TOKENS)) is not None:
        generation = outputs.sum
    gauges = now.gauges
    concurrency = None
    if gauges.running is not None:
        concurrency = gauges.running + (gauges.waiting or 0.0)
    elif (e2e := _family_since(now, before, VLLM_E2E)) is not None:
        concurrency = e2e.sum / 1000 / seconds
    return TokenWindow(
        seconds=seconds,
        ttft=ttft,
        ttft_source=source if ttft is not None else None,
        itl=_family_since(now, before, VLLM_ITL),
        prompt_tokens_per_second=None if prompt is None else prompt / seconds,
        generation_tokens_per_second=None if generation is None else generation / seconds,
        concurrency=concurrency,
        running=gauges.running,
        waiting=gauges.waiting,
        kv_cache_usage=gauges.kv_cache_usage,
        kv_cache_usage_max=gauges.kv_cache_usage,
    )


def combine(windows: list[TokenWindow]) -> TokenWindow | None:
    """The deployment's figures over its pods' windows (None: no pod exports a token family)."""
    if not windows:
        return None

    def total(values: Iterable[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    kv = [w.kv_cache_usage for w in windows if w.kv_cache_usage is not None]
    sources = {w.ttft_source for w in windows if w.ttft_source is not None}
    # Pods may differ while a version switch changes the model's config: TTFT comes from one
    # family, the finer one (vLLM's) where any pod has it.
    source = VLLM_TTFT if VLLM_TTFT in sources else next(iter(sources), None)
    return TokenWindow(
        seconds=max(w.seconds for w in windows),
        ttft=merged(w.ttft for w in windows if w.ttft is not None and w.ttft_source == source),
        ttft_source=source,
        itl=merged(w.itl for w in windows if w.itl is not None),
        prompt_tokens_per_second=total(w.prompt_tokens_per_second for w in windows),
        generation_tokens_per_second=total(w.generation_tokens_per_second for w in windows),
        concurrency=total(w.concurrency for w in windows),
        running=total(w.running for w in windows),
        waiting=total(w.waiting for w in windows),
        kv_cache_usage=sum(kv) / len(kv) if kv else None,
        kv_cache_usage_max=max(kv) if kv else None,
        pods=len(windows),
        arrival_rate=total(w.arrival_rate for w in windows),
    )
