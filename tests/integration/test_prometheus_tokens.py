"""The Prometheus source reads the TensorRT-LLM backend's token families, pod by pod, as the pod
reader does (tokens.py), through a real Prometheus (Debian's) and real PromQL.

The TensorRT-LLM backend itself cannot run here (it needs a GPU and an engine built for it), so
its /metrics page is the one stand-in: prometheus_client exporters on loopback with the families,
labels and kinds the backend's custom metrics reporter exports (the same page the pod reader's
unit test parses). One pod runs an older release (no `fraction` kind: used / max blocks), one
exports vLLM's families instead (pods differ while a version switch changes the image), and one
pod of another deployment must be left out."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from devcluster.cluster import free_port, wait_until
from tests.integration.conftest import prometheus_process
from tritonop.autoscale import tokens
from tritonop.autoscale.metrics import PrometheusReader

MODEL = "llm"
TICK = 0.25  # each exporter finishes one request every TICK seconds
WINDOW = 10  # the reader's window (s)


class Exporter:
    """One pod's /metrics page: TensorRT-LLM's families (or vLLM's), served on loopback."""

    def __init__(self, pod: str, vllm: bool = False) -> None:
        self.pod = pod
        self.vllm = vllm
        self.registry = CollectorRegistry()
        self.port = free_port()
        labels = ["model", "version"]
        if vllm:
            self.running = Gauge(tokens.VLLM_RUNNING, "running", labels, registry=self.registry)
            self.kv = Gauge("vllm:gpu_cache_usage_perc", "kv", labels, registry=self.registry)
            self.generation = Counter(tokens.VLLM_GENERATION_TOKENS, "generated", labels, registry=self.registry)
            self.prompt = Counter(tokens.VLLM_PROMPT_TOKENS, "prompt", labels, registry=self.registry)
        else:
            self.requests = Gauge(
                tokens.TRTLLM_REQUESTS, "requests", ["model", "request_type", "version"], registry=self.registry
            )
            self.blocks = Gauge(
                tokens.TRTLLM_KV_BLOCKS, "kv", ["kv_cache_block_type", "model", "version"], registry=self.registry
            )
            self.inputs, self.outputs = (
                Histogram(
                    family,
                    "tokens",
                    ["model", "response_metric_type", "version"],
                    buckets=[10, 50, 100, 500, 1000],
                    registry=self.registry,
                )
                for family in (tokens.TRTLLM_INPUT_TOKENS, tokens.TRTLLM_OUTPUT_TOKENS)
            )

    def serve(self) -> ThreadingHTTPServer:
        """The page in Prometheus' text format, whatever the scraper asks for, as Triton serves it
        (prometheus_client's own server would answer Prometheus in OpenMetrics, whose writer in
        this release turns `vllm:` into `vllm_`)."""
        registry = self.registry

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def trt(self, requests: dict[str, float], blocks: dict[str, float]) -> Exporter:
        for kind, value in requests.items():
            self.requests.labels(MODEL, kind, "1").set(value)
        for kind, value in blocks.items():
            self.blocks.labels(kind, MODEL, "1").set(value)
        return self

    def finish(self, prompt: int, generated: int) -> None:
        """One request finished: its token lengths counted as the backend counts them."""
        if self.vllm:
            self.prompt.labels(MODEL, "1").inc(prompt)
            self.generation.labels(MODEL, "1").inc(generated)
        else:
            self.inputs.labels(MODEL, "total_input_tokens", "1").observe(prompt)
            self.outputs.labels(MODEL, "total_output_tokens", "1").observe(generated)


@pytest.fixture
def exporters() -> Iterator[dict[str, Exporter]]:
    pods = {
        "trt-0": Exporter("trt-0").trt(
            {"active": 12, "max": 512, "scheduled": 9, "context": 2, "waiting": 3},
            {"max": 6239, "free": 3200, "used": 3039, "tokens_per": 64, "fraction": 0.4871},
        ),
        # An older TensorRT-LLM (before 25.04): no `fraction`, used / max blocks.
        "trt-1": Exporter("trt-1").trt({"active": 6, "scheduled": 5, "waiting": 1}, {"max": 6000, "used": 3000}),
        "vllm-0": Exporter("vllm-0", vllm=True),
        # Another deployment's pod serving a model of the same name: not in the reader's pods.
        "other-0": Exporter("other-0").trt({"scheduled": 100, "waiting": 50}, {"fraction": 0.99}),
    }
    pods["vllm-0"].running.labels(MODEL, "1").set(7)
    pods["vllm-0"].kv.labels(MODEL, "1").set(0.8)
    lengths = {"trt-0": (50, 100), "trt-1": (150, 300), "vllm-0": (25, 100), "other-0": (1000, 1000)}
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(TICK):
            for name, (prompt, generated) in lengths.items():
                pods[name].finish(prompt, generated)

    with ExitStack() as stack:
        for exporter in pods.values():
            stack.callback(exporter.serve().shutdown)
        worker = threading.Thread(target=traffic, daemon=True)
        worker.start()
        stack.callback(worker.join)
        stack.callback(stop.set)
        yield pods


def test_tensorrt_llm_token_families_come_through_prometheus_pod_by_pod(
    exporters: dict[str, Exporter], tmp_path: Path
) -> None:
    scrape = [
        {
            "job_name": "triton",
            "static_configs": [
                {"targets": [f"127.0.0.1:{e.port}"], "labels": {"pod": name}} for name, e in exporters.items()
            ],
        }
    ]
    with prometheus_process(tmp_path, scrape) as prometheus:

        def scraped_enough() -> bool:
            """Every pod scraped over more than the reader's window."""
            query = f"min(count_over_time(up[{WINDOW + 4}s]))"
            with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?query={urllib.parse.quote(query)}") as page:
                result = json.loads(page.read())["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= (WINDOW + 4) / 2 - 1

        wait_until("Prometheus has scraped every exporter for a window", scraped_enough, timeout=90)

        async def read() -> tokens.TokenWindow | None:
            reader = PrometheusReader(prometheus.url, window_seconds=WINDOW)
            reader.read_tokens = True
            try:
                pods = {f"10.0.0.{i}": (name, "1") for i, name in enumerate(("trt-0", "trt-1", "vllm-0"))}
                return (await reader.measure(pods, MODEL)).tokens
            finally:
                await reader.close()

        window = asyncio.run(read())
    assert window is not None
    print(f"\nthrough Prometheus: {window}")
    # Gauges: each pod's own family (trt-0 and trt-1 TensorRT-LLM's, vllm-0 vLLM's); other-0 left out.
    assert (window.running, window.waiting, window.concurrency) == (9 + 5 + 7, 3 + 1, 9 + 5 + 7 + 3 + 1)
    assert window.kv_cache_usage == pytest.approx((0.4871 + 3000 / 6000 + 0.8) / 3)
    assert window.kv_cache_usage_max == pytest.approx(0.8)
    # Token rates: TensorRT-LLM's finished requests' lengths, vLLM's counters, per second.
    assert window.prompt_tokens_per_second == pytest.approx((50 + 150 + 25) / TICK, rel=0.15)
    assert window.generation_tokens_per_second == pytest.approx((100 + 300 + 100) / TICK, rel=0.15)
    assert window.ttft is None and window.itl is None  # no TTFT or ITL family on these pages
