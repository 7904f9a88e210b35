"""Token figures from pages rendered by the real prometheus_client: the families, bucket bounds and
labels Triton's vLLM backend, Triton core and the TensorRT-LLM backend export (their sources),
observed with known values; the percentiles are compared with the known distributions."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import shutil
import statistics
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.unit.fakes import FakeClock
from tritonop.api.spec import ModelDeployment
from tritonop.api.status import ModelDeploymentStatus
from tritonop.autoscale import metrics, tokens
from tritonop.autoscale.metrics import RECENT_SECONDS, PodMetricsReader
from tritonop.autoscale.runner import Autoscalers, AutoscalerState
from tritonop.autoscale.tokens import TokenSample, combine, parse, window
from tritonop.events import EventRecorder
from tritonop.facts import Facts
from tritonop.repository.report import RepositoryReport
from tritonop.status import compute_status

# vllm_backend src/utils/metrics.py (unchanged from 24.09 to 25.12).
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
E2E_BUCKETS = [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]
FIRST_RESPONSE_BUCKETS = [100, 500, 2000, 5000]  # Triton core's default (ms)
LABELS = ["model", "version"]


class VllmServer:
    """The families Triton's vLLM backend registers, in a registry of their own (one server)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(tokens.VLLM_TTFT, "TTFT", LABELS, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(tokens.VLLM_ITL, "ITL", LABELS, buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram(tokens.VLLM_E2E, "e2e", LABELS, buckets=E2E_BUCKETS, registry=r)
        self.prompt = Counter(tokens.VLLM_PROMPT_TOKENS, "prompt tokens", LABELS, registry=r)
        self.generation = Counter(tokens.VLLM_GENERATION_TOKENS, "generation tokens", LABELS, registry=r)

    def page(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, ttft_s: list[float], itl_s: list[float], model: str = "llm", version: str = "1") -> None:
        for value in ttft_s:
            self.ttft.labels(model, version).observe(value)
        for value in itl_s:
            self.itl.labels(model, version).observe(value)


def evenly(low: float, high: float, n: int) -> list[float]:
    """n values spread evenly over [low, high): a known uniform distribution."""
    return [low + (high - low) * (i + 0.5) / n for i in range(n)]


def true_percentile(values: list[float], percentile: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(percentile * 10) - 1]


def test_the_vllm_page_parses_and_percentiles_match_a_uniform_distribution() -> None:
    server = VllmServer()
    ttft = evenly(0.1, 0.25, 400)  # within one bucket: linear interpolation is exact
    itl = evenly(0.025, 0.075, 5000)  # two buckets of the same width
    server.serve(ttft, itl)
    assert "vllm:time_to_first_token_seconds_bucket" in server.page()  # the real family name
    before = TokenSample(at=0.0)
    now = parse(server.page(), "llm", at=10.0)
    figures = window(before, now)
    assert figures.ttft_source == tokens.VLLM_TTFT
    for p in (50, 90, 95, 99):
        got = figures.ttft_percentile(p)
        assert got is not None and not got.beyond_range
        assert got.ms == pytest.approx(true_percentile(ttft, p) * 1000, rel=0.01)
        itl_p = figures.itl_percentile(p)
        assert itl_p is not None
        assert itl_p.ms == pytest.approx(true_percentile(itl, p) * 1000, rel=0.01)
    assert figures.ttft is not None and figures.ttft.count == 400
    assert figures.ttft.sum == pytest.approx(sum(ttft) * 1000)


def test_a_skewed_distribution_lands_in_the_right_bucket_and_close_to_the_truth() -> None:
    rng = random.Random(4)
    server = VllmServer()
    ttft = [rng.lognormvariate(math.log(0.3), 0.6) for _ in range(20000)]
    server.serve(ttft, [])
    figures = window(TokenSample(0.0), parse(server.page(), "llm", 5.0))
    bounds = [0.0, *TTFT_BUCKETS, math.inf]
    for p in (50, 90, 95, 99):
        truth = true_percentile(ttft, p)
        got = figures.ttft_percentile(p)
        assert got is not None
        low = max(b for b in bounds if b <= truth)
        high = min(b for b in bounds if b > truth)
        assert low * 1000 <= got.ms <= high * 1000, (p, truth, got)
        if p < 99:  # narrow buckets (0.25 s wide here): close; p99 falls in the 1-2.5 s bucket
            assert got.ms == pytest.approx(truth * 1000, rel=0.12)


def test_a_window_holds_only_what_was_observed_between_its_scrapes() -> None:
    server = VllmServer()
    server.serve(evenly(2.5, 5.0, 100), evenly(0.3, 0.4, 1000))  # a slow minute
    first = parse(server.page(), "llm", at=100.0)
    fast_ttft, fast_itl = evenly(0.04, 0.06, 300), evenly(0.01, 0.025, 3000)
    server.serve(fast_ttft, fast_itl)
    server.prompt.labels("llm", "1").inc(300 * 128)
    server.generation.labels("llm", "1").inc(3300)
    figures = window(first, parse(server.page(), "llm", at=110.0))
    ttft95, itl95 = figures.ttft_percentile(95), figures.itl_percentile(95)
    assert ttft95 is not None and ttft95.ms == pytest.approx(true_percentile(fast_ttft, 95) * 1000, rel=0.01)
    assert itl95 is not None and itl95.ms == pytest.approx(true_percentile(fast_itl, 95) * 1000, rel=0.01)
    assert figures.prompt_tokens_per_second == pytest.approx(300 * 128 / 10)
    assert figures.generation_tokens_per_second == pytest.approx(330)
    assert figures.ttft is not None and figures.ttft.count == 300


def test_a_restarted_server_counts_from_zero() -> None:
    old = VllmServer()
    old.serve(evenly(0.5, 0.75, 1000), [])
    old.generation.labels("llm", "1").inc(50000)
    before = parse(old.page(), "llm", at=0.0)
    new = VllmServer()  # the pod's server restarted: every count began again
    fresh = evenly(0.08, 0.1, 40)
    new.serve(fresh, [])
    new.generation.labels("llm", "1").inc(400)
    figures = window(before, parse(new.page(), "llm", at=4.0))
    assert figures.ttft is not None and figures.ttft.count == 40
    p95 = figures.ttft_percentile(95)
    assert p95 is not None and p95.ms == pytest.approx(true_percentile(fresh, 95) * 1000, rel=0.01)
    assert figures.generation_tokens_per_second == pytest.approx(100)


def test_versions_are_series_of_their_own_an_unloaded_one_drops_out() -> None:
    server = VllmServer()
    server.serve(evenly(0.25, 0.5, 500), [], version="1")
    before = parse(server.page(), "llm", at=0.0)
    server.ttft.remove("llm", "1")  # version 1 unloaded: its series goes away
    served = evenly(0.02, 0.04, 200)
    server.serve(served, [], version="2")
    server.serve(evenly(5.0, 7.5, 50), [], model="other")  # another model on the same server
    figures = window(before, parse(server.page(), "llm", at=3.0))
    assert figures.ttft is not None and figures.ttft.count == 200
    p50 = figures.ttft_percentile(50)
    assert p50 is not None and p50.ms == pytest.approx(true_percentile(served, 50) * 1000, rel=0.01)


def test_pods_are_merged_into_one_distribution() -> None:
    a, b = VllmServer(), VllmServer()
    slow, fast = evenly(0.5, 0.75, 100), evenly(0.04, 0.06, 900)
    a.serve(slow, [])
    b.serve(fast, [])
    windows = [window(TokenSample(0.0), parse(s.page(), "llm", 3.0)) for s in (a, b)]
    both = combine(windows)
    assert both is not None and both.pods == 2
    for p in (50, 89, 95):
        got = both.ttft_percentile(p)
        assert got is not None
        assert got.ms == pytest.approx(true_percentile(slow + fast, p) * 1000, rel=0.02)


def test_beyond_the_highest_bucket_the_bound_is_given_and_said_to_be_a_lower_bound() -> None:
    server = VllmServer()
    server.serve([12.0] * 10 + [0.05] * 90, [])  # 10% of first tokens after 12 s
    figures = window(TokenSample(0.0), parse(server.page(), "llm", 1.0))
    p95 = figures.ttft_percentile(95)
    assert p95 is not None and p95.ms == 10000 and p95.beyond_range  # histogram_quantile gives the bound
    p50 = figures.ttft_percentile(50)
    assert p50 is not None and not p50.beyond_range and p50.ms < 100


def test_no_observations_no_percentile() -> None:
    server = VllmServer()
    server.ttft.labels("llm", "1")  # created, nothing observed yet (as at model load)
    figures = window(TokenSample(0.0), parse(server.page(), "llm", 1.0))
    assert figures.ttft is not None and figures.ttft_percentile(95) is None
    assert window(TokenSample(0.0), parse("", "llm", 1.0)).ttft is None


def test_triton_core_first_response_histogram_when_the_backend_has_no_ttft() -> None:
    """TensorRT-LLM or any decoupled python model on Triton 24.11+: TTFT from Triton core's
    nv_inference_first_response_histogram_ms (milliseconds), ITL not measured."""
    registry = CollectorRegistry()
    first = Histogram(
        tokens.TRITON_FIRST_RESPONSE, "first response", LABELS, buckets=FIRST_RESPONSE_BUCKETS, registry=registry
    )
    observed = evenly(100, 500, 800)
    for value in observed:
        first.labels("llm", "1").observe(math.floor(value))  # Triton observes whole milliseconds
    figures = window(TokenSample(0.0), parse(generate_latest(registry).decode(), "llm", 2.0))
    assert figures.ttft_source == tokens.TRITON_FIRST_RESPONSE and figures.itl is None
    p95 = figures.ttft_percentile(95)
    assert p95 is not None and p95.ms == pytest.approx(true_percentile(observed, 95), rel=0.01)


def test_vllm_ttft_is_preferred_to_the_coarse_first_response_histogram() -> None:
    server = VllmServer()
    server.serve(evenly(0.04, 0.06, 100), [])
    first = Histogram(
        tokens.TRITON_FIRST_RESPONSE, "first", LABELS, buckets=FIRST_RESPONSE_BUCKETS, registry=server.registry
    )
    first.labels("llm", "1").observe(3000)
    figures = window(TokenSample(0.0), parse(server.page(), "llm", 2.0))
    assert figures.ttft_source == tokens.VLLM_TTFT
    p95 = figures.ttft_percentile(95)
    assert p95 is not None and p95.ms < 60


def test_tensorrt_llm_gauges_and_token_counts() -> None:
    """nv_trt_llm_* gauges as the TensorRT-LLM backend's custom metrics reporter labels them."""
    registry = CollectorRegistry()
    requests = Gauge(tokens.TRTLLM_REQUESTS, "requests", ["model", "request_type", "version"], registry=registry)
    blocks = Gauge(tokens.TRTLLM_KV_BLOCKS, "kv", ["kv_cache_block_type", "model", "version"], registry=registry)
    outputs = Histogram(
        tokens.TRTLLM_OUTPUT_TOKENS,
        "output",
        ["model", "response_metric_type", "version"],
        buckets=[10, 50, 100, 500, 1000],
        registry=registry,
    )
    for kind, value in {"active": 12, "max": 512, "scheduled": 9, "context": 2, "waiting": 3}.items():
        requests.labels("llm", kind, "1").set(value)
    for kind, value in {"max": 6239, "free": 3200, "used": 3039, "tokens_per": 64, "fraction": 0.4871}.items():
        blocks.labels(kind, "llm", "1").set(value)
    before = parse(generate_latest(registry).decode(), "llm", 0.0)
    for length in (120, 80, 300):
        outputs.labels("llm", "total_output_tokens", "1").observe(length)
    figures = window(before, parse(generate_latest(registry).decode(), "llm", 5.0))
    assert (figures.running, figures.waiting, figures.concurrency) == (9, 3, 12)
    assert figures.kv_cache_usage == pytest.approx(0.4871)
    assert figures.generation_tokens_per_second == pytest.approx(500 / 5)
    assert figures.ttft is None and figures.itl is None
    blocks.remove("fraction", "llm", "1")  # before 25.04: no fraction, used / max
    figures = window(before, parse(generate_latest(registry).decode(), "llm", 5.0))
    assert figures.kv_cache_usage == pytest.approx(3039 / 6239)


def test_vllm_gauges_when_present_and_littles_law_when_not() -> None:
    server = VllmServer()
    running = Gauge(tokens.VLLM_RUNNING, "running", LABELS, registry=server.registry)
    waiting = Gauge(tokens.VLLM_WAITING, "waiting", LABELS, registry=server.registry)
    kv = Gauge("vllm:gpu_cache_usage_perc", "kv", LABELS, registry=server.registry)
    running.labels("llm", "1").set(24)
    waiting.labels("llm", "1").set(6)
    kv.labels("llm", "1").set(0.93)
    figures = window(TokenSample(0.0), parse(server.page(), "llm", 1.0))
    assert (figures.running, figures.waiting, figures.concurrency, figures.kv_cache_usage) == (24, 6, 30, 0.93)
    # The releases export no gauge: requests in progress from the finished ones' durations.
    plain = VllmServer()
    before = parse(plain.page(), "llm", 0.0)
    for _ in range(20):
        plain.e2e.labels("llm", "1").observe(4.0)  # 20 requests of 4 s finished in 10 s: 8 in progress
    figures = window(before, parse(plain.page(), "llm", 10.0))
    assert figures.running is None and figures.concurrency == pytest.approx(8.0)


def test_combined_gauges_and_rates_over_pods() -> None:
    pods = []
    for kv, generated in ((0.5, 1000), (0.9, 3000)):
        server = VllmServer()
        Gauge("vllm:gpu_cache_usage_perc", "kv", LABELS, registry=server.registry).labels("llm", "1").set(kv)
        server.generation.labels("llm", "1").inc(generated)
        pods.append(window(TokenSample(0.0), parse(server.page(), "llm", 10.0)))
    both = combine(pods)
    assert both is not None
    assert both.kv_cache_usage == pytest.approx(0.7) and both.kv_cache_usage_max == pytest.approx(0.9)
    assert both.generation_tokens_per_second == pytest.approx(400)
    assert combine([]) is None


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_percentiles_are_prometheus_histogram_quantile(tmp_path: Path) -> None:
    """The same numbers as Prometheus' own histogram_quantile over increase(), evaluated by
    `promtool test rules` (which compares exactly), on bucket layouts of the three families."""
    rng = random.Random(11)
    layouts = [TTFT_BUCKETS, ITL_BUCKETS, [float(b) for b in FIRST_RESPONSE_BUCKETS], E2E_BUCKETS]
    series, checks = [], []
    for i in range(40):
        bounds = [*layouts[i % len(layouts)], math.inf]
        before = sorted(rng.randint(0, 50) for _ in bounds)
        added = sorted(rng.choice([0, 0, rng.randint(0, 300)]) for _ in bounds)
        if i % 7 == 3:
            added[-3] += 5  # a bucket scraped a moment later than the next one: not monotonic
        after = [b + a for b, a in zip(before, added, strict=True)]
        q = rng.choice([0.5, 0.9, 0.95, 0.99, 0.999])
        earlier = tokens.Histogram(tuple(bounds), tuple(map(float, before)))
        value = tokens.Histogram(tuple(bounds), tuple(map(float, after))).since(earlier).quantile(q)
        if value is None:
            continue
        for bound, b, a in zip(bounds, before, after, strict=True):
            le = "+Inf" if math.isinf(bound) else repr(bound)
            series.append({"series": f'h{i}_bucket{{le="{le}"}}', "values": f"{b} {a}"})
        checks.append(
            {
                "expr": f"histogram_quantile({q}, increase(h{i}_bucket[1m]))",
                "eval_time": "1m",
                "exp_samples": [{"labels": "{}", "value": value}],
            }
        )
    assert len(checks) >= 30
    test = {"tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]}
    path = tmp_path / "quantiles_test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


class PagesReader(PodMetricsReader):
    """The operator's pod reader, with each pod's page from a prometheus_client registry."""

    def __init__(self, servers: dict[str, VllmServer]) -> None:
        super().__init__()
        self.servers = servers

    async def _page(self, ip: str) -> str:
        return self.servers[ip].page()


def test_the_pod_reader_windows_tokens_from_the_oldest_sample_kept() -> None:
    servers = {"10.0.0.1": VllmServer(), "10.0.0.2": VllmServer()}
    pods = {"uid-1": ("llm-1", "10.0.0.1"), "uid-2": ("llm-2", "10.0.0.2")}
    reader = PagesReader(servers)
    assert asyncio.run(reader.measure(pods, "llm")).tokens is None  # not asked for
    reader.read_tokens = True
    assert asyncio.run(reader.measure(pods, "llm")).tokens is None  # the first read only starts a window
    served = []
    for second in range(5):
        batch = evenly(0.1 + 0.03 * second, 0.13 + 0.03 * second, 50)  # 100..250 ms in all: one bucket
        servers["10.0.0.1" if second % 2 else "10.0.0.2"].serve(batch, evenly(0.03, 0.04, 100))
        served += batch
        measured = asyncio.run(reader.measure(pods, "llm"))
    assert measured.tokens is not None and measured.tokens.pods == 2
    assert measured.tokens.ttft is not None and measured.tokens.ttft.count == len(served)  # all 5 reads
    p90 = measured.tokens.ttft_percentile(90)
    assert p90 is not None and p90.ms == pytest.approx(true_percentile(served, 90) * 1000, rel=0.02)


def test_the_pod_reader_also_windows_the_last_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The short window (RECENT_SECONDS) starts at the newest sample at least that
    old: a burst of slow first tokens in the last seconds shows there, diluted in the long one;
    each window carries the request rate over its own stretch."""
    now = [100.0]
    monkeypatch.setattr(metrics, "time", SimpleNamespace(monotonic=lambda: now[0]))
    server = VllmServer()
    success = Counter("nv_inference_request_success", "ok", LABELS, registry=server.registry)
    reader = PagesReader({"10.0.0.1": server})
    reader.read_tokens = True
    pods = {"uid-1": ("llm-1", "10.0.0.1")}
    asyncio.run(reader.measure(pods, "llm"))  # starts both windows
    for second in range(1, 11):
        now[0] = 100.0 + second
        slow = second > 10 - RECENT_SECONDS  # the last RECENT_SECONDS reads
        server.serve(evenly(1.0, 2.0, 20) if slow else evenly(0.1, 0.2, 20), evenly(0.03, 0.04, 50))
        success.labels("llm", "1").inc(30 if slow else 10)  # Triton's requests, 30/s in the burst
        measured = asyncio.run(reader.measure(pods, "llm"))
        if second < RECENT_SECONDS:
            assert measured.recent_tokens is None, second  # no sample that old yet
    assert measured.tokens is not None and measured.tokens.ttft is not None
    assert measured.tokens.ttft.count == 200  # all ten reads
    recent = measured.recent_tokens
    assert recent is not None and recent.ttft is not None and recent.ttft.count == 20 * RECENT_SECONDS
    p90 = recent.ttft_percentile(90)
    assert p90 is not None and 1000 < p90.ms <= 2500  # only the slow ones (bucket bounds: 1 and 2.5 s)
    # The request rate over each window's own stretch (not the request-level 3 s window).
    assert measured.tokens.arrival_rate == pytest.approx((10 * 5 + 30 * 5) / 10)
    assert recent.arrival_rate == pytest.approx(30)


def test_the_autoscaler_hands_ttft_and_itl_to_status() -> None:
    """Autoscalers.scale (the runner) with tokenLatency: the reader reads the token families and
    the facts carry TTFT and ITL at the spec's percentile, judged in LatencyWithinTarget."""
    server = VllmServer()
    body = {
        "metadata": {"name": "llm", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "model": {"repository": "file:///r"},
            "autoscaling": {
                "maxReplicas": 2,
                "targetLatencyMs": 60000,
                "tokenLatency": {"percentile": 90, "timeToFirstTokenMs": 300, "interTokenLatencyMs": 30},
            },
        },
    }
    md = ModelDeployment.from_body(body)
    pod = {
        "metadata": {"name": "llm-0", "uid": "p0"},
        "status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    clock = FakeClock()
    autoscalers = Autoscalers(clock=clock)
    held = SimpleNamespace(autoscaler=None)
    events = EventRecorder(logging.LoggerAdapter(logging.getLogger("test")), "ns/llm")
    # Triton's own request figures: 3 s requests, p95 from its summary (`summary_latencies=true`).
    success = Counter("nv_inference_request_success", "ok", LABELS, registry=server.registry)
    duration = Counter("nv_inference_request_duration_us", "duration", LABELS, registry=server.registry)
    summary = Gauge("nv_inference_request_summary_us", "p95", [*LABELS, "quantile"], registry=server.registry)
    summary.labels("llm", "1", "0.95").set(3_000_000)
    reported = []
    for _ in range(5):
        held.autoscaler = held.autoscaler or AutoscalerState(PagesReader({"10.0.0.9": server}), "pods", 1.0)
        server.serve(evenly(0.1, 0.25, 40), evenly(0.025, 0.05, 400))
        server.e2e.labels("llm", "1").observe(3.0)
        success.labels("llm", "1").inc()
        duration.labels("llm", "1").inc(3_000_000)
        scaling = asyncio.run(autoscalers.scale(md, [pod], None, events, held))
        if scaling.facts is not None:  # status gets the figures when they change (every 5 s at most)
            reported.append(scaling.facts)
        clock.advance(1.0)
    assert isinstance(held.autoscaler.reader, PodMetricsReader) and held.autoscaler.reader.read_tokens
    # Sized by token_policy from TTFT and ITL (not from the 3 s requests against 60 s): ITL p90 at
    # 1.6x its target, before the step model is learned, scales by that ratio (to maxReplicas 2).
    assert held.autoscaler.token_history is not None
    assert held.autoscaler.replicas == 2
    scaled = [e.message for e in events.events if e.reason == "Scaled"]
    assert scaled and "x the target, model not learned" in scaled[0], scaled
    assert reported and reported[-1].tokens is not None
    facts = reported[-1].tokens
    assert facts.ttft is not None and facts.ttft.ms == pytest.approx(235, rel=0.01)  # p90 of 100..250 ms
    assert facts.itl is not None and facts.itl.ms == pytest.approx(47.5, rel=0.01)  # p90 of 25..50 ms
    status = compute_status(
        md,
        Facts(1, RepositoryReport(readable=True), None, (), autoscale=reported[-1]),
        ModelDeploymentStatus(),
        "2026-01-01T00:00:00Z",
    )
    condition = status.condition("LatencyWithinTarget")
    assert condition is not None and (condition.status, condition.reason) == ("False", "AboveTarget")
    assert "p95 3000ms, target 60000ms" in condition.message
    assert "ITL p90 48ms, target 30ms" in condition.message and "TTFT p90 235ms, target 300ms" in condition.message
    assert status.token_latency is not None and status.token_latency.time_to_first_token_ms == 235
