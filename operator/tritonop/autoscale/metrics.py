"""Latency measurements from Triton's own metrics (the autoscaler's I/O edge).

Per pod, window deltas of the cumulative counters give average request and queue latency and
the request rate; p95 and p99 come from Triton's summary quantiles (`summary_latencies=true`, which
the operator's Deployment turns on). Pods are scraped directly at their IPs, or, with a
Prometheus URL, the same numbers are queried from Prometheus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote

import aiohttp

from tritonop.autoscale.tokens import (
    HISTOGRAMS_MS,
    TRITON_FIRST_RESPONSE,
    TRTLLM_INPUT_TOKENS,
    TRTLLM_KV_BLOCKS,
    TRTLLM_OUTPUT_TOKENS,
    TRTLLM_REQUESTS,
    VLLM_E2E,
    VLLM_GENERATION_TOKENS,
    VLLM_ITL,
    VLLM_KV_USAGE,
    VLLM_PROMPT_TOKENS,
    VLLM_RUNNING,
    VLLM_TTFT,
    VLLM_WAITING,
    Histogram,
    TokenSample,
    TokenWindow,
)
from tritonop.autoscale.tokens import combine as combine_tokens
from tritonop.autoscale.tokens import parse as parse_tokens
from tritonop.autoscale.tokens import window as tokens_between
from tritonop.names import GRPC_MAX_CONNECTION_AGE_SECONDS, METRICS_PORT
from tritonop.promtext import samples

SCRAPE_TIMEOUT_SECONDS = 3.0
P95, P99 = "0.95", "0.99"  # Triton's default summary quantiles include both
SUMMARY = "nv_inference_request_summary_us"  # its p95 and p99 quantiles


@dataclass(frozen=True)
class CounterSample:
    """Cumulative counters of one model on one server, at one moment."""

    at: float
    success: float
    duration_us: float
    queue_us: float
    p95_us: float | None  # from the summary; None until the server has served something
    compute_us: float = 0.0  # nv_inference_compute_infer_duration_us: per request, so a batch counts n times
    executions: float = 0.0  # nv_inference_exec_count: batches executed
    pending: float = 0.0  # nv_inference_pending_request_count: requests waiting right now (a gauge)
    tokens: TokenSample | None = None  # a streaming model's token families (when asked for)
    p99_us: float | None = None  # the summary's 0.99 quantile


@dataclass(frozen=True)
class WindowStats:
    """One pod's numbers over the window between two samples."""

    requests: float
    seconds: float
    average_ms: float | None
    queue_ms: float | None
    p95_ms: float | None
    busy: float | None = None  # fraction of the window the model instance spent executing
    arrivals: float = 0.0  # requests that arrived in the window: served + growth of the queue
    pending: float = 0.0  # requests waiting at the end of the window
    service_ms: float | None = None  # mean compute time per request (its batch's execution)
    p99_ms: float | None = None


@dataclass(frozen=True)
class Measurement:
    """The deployment's numbers over all measured pods."""

    request_rate: float
    average_ms: float | None
    queue_ms: float | None
    p95_ms: float | None
    window_seconds: float
    measured_pods: int
    unreadable: tuple[str, ...]  # pods whose metrics could not be read (reported, never assumed idle)
    busy: float | None = None  # mean busy fraction of the measured pods' model instances
    # requests/s arriving (served + queue growth): demand, not capacity. None: this source does
    # not measure it (Prometheus), and the policy must not read that as "no demand".
    arrival_rate: float | None = None
    pending: float = 0.0  # requests waiting in the servers' queues now
    # requests waiting on the most loaded pod now (Triton queues per pod). None: not measured.
    longest_queue: float | None = None
    service_ms: float | None = None  # mean compute time per request: the latency floor of one idle replica
    # A streaming model's TTFT, ITL and token figures over the pods' token windows (None: not
    # asked for, not exported, or not measured by this source).
    tokens: TokenWindow | None = None
    # The same over the pods' last RECENT_SECONDS (the pod reader only: a Prometheus scraping every
    # 15-30 s has no such window). token_policy sizes from it too while it is over target.
    recent_tokens: TokenWindow | None = None
    # Ready pods that got no request for IDLE_SECONDS while measured (clients pinned elsewhere).
    idle_pods: int = 0
    p99_ms: float | None = None

    def latency(self, metric: str) -> float | None:
        return {"p95": self.p95_ms, "p99": self.p99_ms, "average": self.average_ms, "queue": self.queue_ms}[metric]


def parse_sample(text: str, model: str, at: float) -> CounterSample:
    totals = {
        "nv_inference_request_success": 0.0,
        "nv_inference_request_duration_us": 0.0,
        "nv_inference_queue_duration_us": 0.0,
        "nv_inference_compute_infer_duration_us": 0.0,
        "nv_inference_exec_count": 0.0,
        "nv_inference_pending_request_count": 0.0,
    }
    quantiles: dict[str, float] = {}  # the highest over the model's versions
    for name, labels, value in samples(text, (*totals, SUMMARY)):
        if labels.get("model") != model:
            continue
        if name in totals:
            totals[name] += value
        elif (quantile := labels.get("quantile")) in (P95, P99) and value == value:  # NaN: the window is empty
            quantiles[quantile] = max(quantiles.get(quantile, 0.0), value)
    return CounterSample(
        at=at,
        success=totals["nv_inference_request_success"],
        duration_us=totals["nv_inference_request_duration_us"],
        queue_us=totals["nv_inference_queue_duration_us"],
        p95_us=quantiles.get(P95),
        compute_us=totals["nv_inference_compute_infer_duration_us"],
        executions=totals["nv_inference_exec_count"],
        pending=totals["nv_inference_pending_request_count"],
        p99_us=quantiles.get(P99),
    )


def window(previous: CounterSample, current: CounterSample) -> WindowStats:
    seconds = max(current.at - previous.at, 1e-6)
    requests = current.success - previous.success
    if requests < 0:  # the server restarted: counters began again
        requests = current.success
        previous = CounterSample(previous.at, 0.0, 0.0, 0.0, None)
    arrivals = max(0.0, requests + current.pending - previous.pending)
    if requests <= 0:
        return WindowStats(0.0, seconds, None, None, None, busy=0.0, arrivals=arrivals, pending=current.pending)
    executions = current.executions - previous.executions
    busy = None
    if executions > 0:
        # compute time is counted once per request of a batch: scale by batches/requests.
        busy_us = (current.compute_us - previous.compute_us) * executions / requests
        busy = busy_us / (seconds * 1e6)
    return WindowStats(
        requests=requests,
        seconds=seconds,
        average_ms=(current.duration_us - previous.duration_us) / requests / 1000,
        queue_ms=(current.queue_us - previous.queue_us) / requests / 1000,
        p95_ms=current.p95_us / 1000 if current.p95_us is not None else None,
        busy=busy,
        arrivals=arrivals,
        pending=current.pending,
        service_ms=(current.compute_us - previous.compute_us) / requests / 1000,
        p99_ms=current.p99_us / 1000 if current.p99_us is not None else None,
    )


def combine(stats: list[WindowStats], unreadable: tuple[str, ...]) -> Measurement:
    """Request-weighted means over pods (p95, p99: the weighted mean of per-pod quantiles)."""
    total = sum(s.requests for s in stats)
    seconds = max((s.seconds for s in stats), default=0.0)
    rate = sum(s.requests / s.seconds for s in stats if s.seconds > 0)

    def weighted(values: list[tuple[float, float | None]]) -> float | None:
        pairs = [(w, v) for w, v in values if v is not None and w > 0]
        weight = sum(w for w, _ in pairs)
        return sum(w * v for w, v in pairs) / weight if weight else None

    return Measurement(
        request_rate=rate,
        average_ms=weighted([(s.requests, s.average_ms) for s in stats]) if total else None,
        queue_ms=weighted([(s.requests, s.queue_ms) for s in stats]) if total else None,
        p95_ms=weighted([(s.requests, s.p95_ms) for s in stats]) if total else None,
        window_seconds=seconds,
        measured_pods=len(stats),
        unreadable=unreadable,
        busy=weighted([(s.seconds, s.busy) for s in stats]),
        arrival_rate=sum(s.arrivals / s.seconds for s in stats if s.seconds > 0),
        pending=sum(s.pending for s in stats),
        longest_queue=max((s.pending for s in stats), default=0.0),
        service_ms=weighted([(s.requests, s.service_ms) for s in stats]) if total else None,
        p99_ms=weighted([(s.requests, s.p99_ms) for s in stats]) if total else None,
    )


NOTHING_MEASURED = combine([], ())

# Rates and demand from windows at least this long, whatever the evaluation cadence: over 1 s a
# queue's drain and the counters' timing make demand swing by a third.
MIN_WINDOW_SECONDS = 3.0
SAMPLES_KEPT = 16
# The short token window (the newest sample at least this old): long enough for a few steps and
# first tokens of every pod, short enough to see a burst that a 16 s window averages away.
RECENT_SECONDS = 5.0
# A pod measured this long with no request at all gets none: its clients are elsewhere. Longer
# than a new pod takes to reach clients that pick a pod per request (endpoints, ~2 s) and gRPC
# clients, whose channels reconnect at their maximum age (10 s + 10% jitter, names.py); within
# the SAMPLES_KEPT samples a pod keeps at the default cadence (1 s).
IDLE_SECONDS = GRPC_MAX_CONNECTION_AGE_SECONDS * 1.1 + 4.0


def idle(history: deque[CounterSample], current: CounterSample) -> bool:
    """No request arrived at this pod over its kept samples, at least IDLE_SECONDS of them."""
    if not history or current.at - history[0].at < IDLE_SECONDS:
        return False
    first = history[0]
    return current.success == first.success and current.pending == 0 and first.pending == 0


def token_window(
    history: deque[CounterSample], current: CounterSample, seconds: float | None = None
) -> TokenWindow | None:
    """A pod's token window: from its oldest kept sample with tokens read (about SAMPLES_KEPT
    evaluations back, 16 s at the default cadence), so that a percentile rests on more than a few
    seconds of tokens; with `seconds`, from the newest at least that much older (the short window).
    With the pod's request arrival rate over the same stretch. None: nothing to start from, or the
    page has no token family."""
    if current.tokens is None or current.tokens.empty:
        return None
    kept = [sample for sample in history if sample.tokens is not None]
    if seconds is not None:
        kept = [sample for sample in kept if current.at - sample.at >= seconds][-1:]
    if not kept:
        return None
    start = kept[0]
    assert start.tokens is not None
    tokens = tokens_between(start.tokens, current.tokens)
    # The request rate over the same stretch (the request windows are MIN_WINDOW_SECONDS: a rate
    # that short is noise the token policy's forecast would plan headroom for).
    requests = window(start, current)
    return dataclasses.replace(tokens, arrival_rate=requests.arrivals / requests.seconds)


def baseline(history: deque[CounterSample], at: float) -> CounterSample | None:
    """The sample a window ending at `at` starts from: the newest at least MIN_WINDOW_SECONDS
    older, else the oldest there is (None for a pod's first sample: it only starts a window)."""
    for sample in reversed(history):
        if at - sample.at >= MIN_WINDOW_SECONDS:
            return sample
    return history[0] if history else None


class PodMetricsReader:
    """Scrapes each ready pod's metrics port and keeps its recent samples."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[CounterSample]] = {}  # by pod uid
        self.session: aiohttp.ClientSession | None = None
        self.read_tokens = False  # also read the token families (spec.autoscaling.tokenLatency)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _page(self, ip: str) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS))
        async with self.session.get(f"http://{ip}:{METRICS_PORT}/metrics") as response:
            response.raise_for_status()
            return await response.text()

    async def _scrape(self, ip: str, model: str) -> CounterSample:
        text = await self._page(ip)
        at = time.monotonic()
        sample = parse_sample(text, model, at)
        if self.read_tokens:
            sample = dataclasses.replace(sample, tokens=parse_tokens(text, model, at))
        return sample

    async def measure(self, pods: dict[str, tuple[str, str]], model: str) -> Measurement:
        """pods: uid -> (name, ip) of ready pods. The first sample of a pod only starts its window."""
        if not pods:  # nothing serves yet (every second while pods start or stay Pending)
            self.samples.clear()
            return NOTHING_MEASURED
        results = await asyncio.gather(*(self._scrape(ip, model) for _, ip in pods.values()), return_exceptions=True)
        stats: list[WindowStats] = []
        token_windows: list[TokenWindow] = []
        recent_windows: list[TokenWindow] = []
        unreadable: list[str] = []
        idle_pods = 0
        for (uid, (name, _)), result in zip(pods.items(), results, strict=True):
            if isinstance(result, BaseException):
                unreadable.append(name)
                continue
            history = self.samples.setdefault(uid, deque(maxlen=SAMPLES_KEPT))
            idle_pods += idle(history, result)
            start = baseline(history, result.at)
            if (token_stats := token_window(history, result)) is not None:
                token_windows.append(token_stats)
            if (recent := token_window(history, result, RECENT_SECONDS)) is not None:
                recent_windows.append(recent)
            history.append(result)
            if start is not None:
                stats.append(window(start, result))
        for uid in list(self.samples):
            if uid not in pods:
                del self.samples[uid]
        measured = dataclasses.replace(combine(stats, tuple(sorted(unreadable))), idle_pods=idle_pods)
        if not token_windows:
            return measured
        return dataclasses.replace(
            measured, tokens=combine_tokens(token_windows), recent_tokens=combine_tokens(recent_windows)
        )


class PrometheusReader:
    """The same measurement from a Prometheus that scrapes the Triton pods."""

    def __init__(self, url: str, window_seconds: int = 30) -> None:
        self.url = url.rstrip("/")
        self.window = window_seconds
        self.session: aiohttp.ClientSession | None = None
        self.read_tokens = False  # also query the token families (spec.autoscaling.tokenLatency)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: (labels, value), NaN values (no data in the window) left out."""
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS))
        async with self.session.get(f"{self.url}/api/v1/query?query={quote(promql)}") as response:
            response.raise_for_status()
            body = json.loads(await response.text())
        series = []
        for item in body.get("data", {}).get("result", []):
            value = float(item["value"][1])
            if value == value:
                series.append((dict(item.get("metric", {})), value))
        return series

    async def _query(self, promql: str) -> float | None:
        series = await self._vector(promql)
        return series[0][1] if series else None

    async def measure(self, pods: dict[str, tuple[str, str]], model: str) -> Measurement:
        names = "|".join(name for name, _ in pods.values()) or "none"
        selector = f'model="{model}",pod=~"{names}"'
        w = f"{self.window}s"
        rate_q = f"sum(rate(nv_inference_request_success{{{selector}}}[{w}]))"
        avg_q = (
            f"sum(rate(nv_inference_request_duration_us{{{selector}}}[{w}])) / "
            f"sum(rate(nv_inference_request_success{{{selector}}}[{w}])) / 1000"
        )
        queue_q = (
            f"sum(rate(nv_inference_queue_duration_us{{{selector}}}[{w}])) / "
            f"sum(rate(nv_inference_request_success{{{selector}}}[{w}])) / 1000"
        )
        p95_q, p99_q = (f'max({SUMMARY}{{{selector},quantile="{q}"}}) / 1000' for q in (P95, P99))
        # Busy fraction per pod: compute time counts once per request of a batch, so scale it by
        # batches per request.
        busy_q = (
            f"sum(rate(nv_inference_compute_infer_duration_us{{{selector}}}[{w}])) / 1e6 * "
            f"sum(rate(nv_inference_exec_count{{{selector}}}[{w}])) / "
            f"sum(rate(nv_inference_request_success{{{selector}}}[{w}])) / {max(1, len(pods))}"
        )
        service_q = (
            f"sum(rate(nv_inference_compute_infer_duration_us{{{selector}}}[{w}])) / "
            f"sum(rate(nv_inference_request_success{{{selector}}}[{w}])) / 1000"
        )
        pending_q = f"sum(nv_inference_pending_request_count{{{selector}}})"
        longest_q = f"max(nv_inference_pending_request_count{{{selector}}})"
        queries = (rate_q, avg_q, queue_q, p95_q, busy_q, pending_q, longest_q, service_q, p99_q)
        measured = asyncio.gather(*(self._query(q) for q in queries))
        if self.read_tokens and pods:  # the token queries alongside, not one round trip later
            results, tokens = await asyncio.gather(measured, self._tokens(selector, len(pods)))
        else:
            results, tokens = await measured, None
        rate, average, queue, p95, busy, pending, longest, service, p99 = results
        return Measurement(
            request_rate=rate or 0.0,
            average_ms=average,
            queue_ms=queue,
            p95_ms=p95 if rate else None,
            window_seconds=float(self.window),
            measured_pods=len(pods),
            unreadable=(),
            busy=busy if rate else None,
            # Demand is not measured here (served rate only): the policy adds the queue's drain.
            arrival_rate=None,
            pending=pending or 0.0,
            longest_queue=longest,
            service_ms=service if rate else None,
            tokens=tokens,
            p99_ms=p99 if rate else None,
        )

    async def _histogram(self, family: str, selector: str) -> Histogram | None:
        """The family's observations over the window, summed over the pods: increase() of each
        bucket (Prometheus handles counter resets), bounds in ms."""
        w = f"{self.window}s"
        buckets, total = await asyncio.gather(
            self._vector(f"sum by (le) (increase({family}_bucket{{{selector}}}[{w}]))"),
            self._query(f"sum(increase({family}_sum{{{selector}}}[{w}]))"),
        )
        factor = HISTOGRAMS_MS[family]
        counts = sorted((float(labels["le"]) * factor, value) for labels, value in buckets if "le" in labels)
        if not counts or not math.isinf(counts[-1][0]):
            return None
        return Histogram(tuple(b for b, _ in counts), tuple(c for _, c in counts), (total or 0.0) * factor)

    async def _tokens(self, selector: str, pods: int) -> TokenWindow | None:
        """A streaming model's token window from Prometheus, as the pod reader reads it (tokens.py):
        the vLLM backend's families and Triton core's first-response histogram; for each pod that
        has no vLLM series, the TensorRT-LLM backend's request and KV-cache block gauges and its
        token-length histograms (`or on (pod)`). None: no family has data."""
        w = f"{self.window}s"

        def of(family: str, kind: tuple[str, str] | None = None) -> str:
            match = "" if kind is None else f',{kind[0]}="{kind[1]}"'
            return f"{family}{{{selector}{match}}}"

        def per_pod(*choices: str) -> str:
            """Each pod's series of the first choice it exports (pods may run different images
            while a switch rolls out)."""
            return " or on (pod) ".join(f"({choice})" for choice in choices)

        def blocks(kind: str) -> str:
            return f"sum by (pod) ({of(TRTLLM_KV_BLOCKS, ('kv_cache_block_type', kind))})"

        kv_q = per_pod(  # the fraction of each pod's KV cache in use
            f'{{__name__=~"{"|".join(VLLM_KV_USAGE)}",{selector}}}',
            of(TRTLLM_KV_BLOCKS, ("kv_cache_block_type", "fraction")),  # TensorRT-LLM 25.04 and later
            f"{blocks('used')} / {blocks('max')}",
        )
        prompt_q = per_pod(  # TensorRT-LLM: the token lengths of the requests that finished
            f"rate({of(VLLM_PROMPT_TOKENS + '_total')}[{w}])", f"rate({of(TRTLLM_INPUT_TOKENS + '_sum')}[{w}])"
        )
        generation_q = per_pod(
            f"rate({of(VLLM_GENERATION_TOKENS + '_total')}[{w}])", f"rate({of(TRTLLM_OUTPUT_TOKENS + '_sum')}[{w}])"
        )
        running_q = per_pod(of(VLLM_RUNNING), of(TRTLLM_REQUESTS, ("request_type", "scheduled")))
        waiting_q = per_pod(of(VLLM_WAITING), of(TRTLLM_REQUESTS, ("request_type", "waiting")))
        histograms = (VLLM_TTFT, TRITON_FIRST_RESPONSE, VLLM_ITL)
        scalars = (
            f"sum({prompt_q})",
            f"sum({generation_q})",
            f"sum({running_q})",
            f"sum({waiting_q})",
            f"avg({kv_q})",
            f"max({kv_q})",
            f"sum(rate({of(VLLM_E2E + '_sum')}[{w}]))",  # seconds in requests per second: concurrency
        )
        found = await asyncio.gather(
            *(self._histogram(family, selector) for family in histograms), *(self._query(q) for q in scalars)
        )
        vllm_ttft, first_response, itl = cast(list[Histogram | None], found[:3])
        prompt, generation, running, waiting, kv_mean, kv_max, in_requests = cast(list[float | None], found[3:])
        ttft, source = (vllm_ttft, VLLM_TTFT) if vllm_ttft is not None else (first_response, TRITON_FIRST_RESPONSE)
        if ttft is None and itl is None and prompt is None and generation is None and running is None:
            return None
        concurrency = running + (waiting or 0.0) if running is not None else in_requests
        return TokenWindow(
            seconds=float(self.window),
            ttft=ttft,
            ttft_source=source if ttft is not None else None,
            itl=itl,
            prompt_tokens_per_second=prompt,
            generation_tokens_per_second=generation,
            concurrency=concurrency,
            running=running,
            waiting=waiting,
            kv_cache_usage=kv_mean,
            kv_cache_usage_max=kv_max,
            pods=pods,
        )
