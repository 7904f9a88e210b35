"""Generative models on the dev cluster with real Triton: what the operator checks before a
large language model loads, and a canary of a streaming model judged on its tokens."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self, TypeVar

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import urllib3
from kubernetes import client

from devcluster.cluster import DevCluster, wait_until
from loadgen import MODEL_REPO, write_model
from loadgen.service_clients import generate_stream
from loadgen.streams import OpenStreams
from tests.integration.conftest import OperatorProcess, PrometheusProcess
from tests.integration.helpers import (
    apply_md,
    events_for,
    get_md,
    md_condition,
    md_pods,
    ready_ips,
    token_generator_repository,
    wait_for_condition,
)
from tritonop.autoscale.metrics import PrometheusReader
from tritonop.autoscale.tokens import VLLM_ITL, VLLM_TTFT, Histogram, merged
from tritonop.autoscale.tokens import parse as parse_tokens
from tritonop.names import GRPC_PORT, HTTP_PORT, METRICS_PORT

pytestmark = pytest.mark.integration
MODEL = "llm"
# Triton's vLLM backend: a decoupled model whose engine arguments are the version's model.json.
VLLM_CONFIG = """backend: "vllm"
model_transaction_policy { decoupled: true }
instance_group [ { count: 1, kind: KIND_MODEL } ]
"""


def vllm_repository(root: Path, tensor_parallel_size: int) -> Path:
    write_model(root, MODEL, VLLM_CONFIG, {})
    version = root / MODEL / "1"
    version.mkdir()
    engine = {"model": "facebook/opt-125m", "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": 0.5}
    (version / "model.json").write_text(json.dumps(engine))
    return root


def llm_spec(repository: Path, gpus: int) -> dict[str, object]:
    return {"model": {"name": MODEL, "repository": f"file://{repository}"}, "server": {"gpus": gpus}, "replicas": 1}


def test_a_parallelism_the_servers_cannot_give_is_said_before_anything_loads(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """model.json asks vLLM for tensor parallelism 2; each server has 1 GPU. vLLM would fail at
    start-up on the GPU node, after the image pull and the weights download: the operator says
    so from the files, naming both figures, and loads nothing."""
    repository = vllm_repository(tmp_path / "repo", tensor_parallel_size=2)
    apply_md(cluster, namespace, MODEL, llm_spec(repository, gpus=1))

    md = wait_for_condition(api, namespace, MODEL, "RepositoryValid", "False", "ParallelismMismatch")
    message = md_condition(md, "RepositoryValid")["message"]
    assert "tensor_parallel_size 2" in message and "spec.server.gpus is 1" in message, message
    assert md_condition(md, "Ready")["status"] == "False"
    wait_until(
        "a Warning event ParallelismMismatch",
        lambda: any(
            e.type == "Warning" and e.reason == "ParallelismMismatch" for e in events_for(core, namespace, MODEL)
        ),
        timeout=30,
    )
    # Nothing was asked to load: no load failed, no version is active.
    assert not any(e.reason == "LoadFailed" for e in events_for(core, namespace, MODEL))
    assert get_md(api, namespace, MODEL).get("status", {}).get("activeVersion") is None

    # Two GPUs per server: the files and the spec agree, the repository is valid again (this CPU
    # Triton has no vLLM backend, so the load itself then fails: that is Triton's to say).
    apply_md(cluster, namespace, MODEL, llm_spec(repository, gpus=2))
    md = wait_for_condition(api, namespace, MODEL, "RepositoryValid", "True")
    assert "ParallelismMismatch" not in md_condition(md, "RepositoryValid").get("reason", "")


TOKENS = "tokens"
T = TypeVar("T")
TOKENS_DIR = MODEL_REPO / "tokens"
CANARY = {
    "steps": [{"weight": 50, "pauseSeconds": 20}],
    "analysis": {"intervalSeconds": 10, "minRequests": 8, "maxLatencyIncreasePercent": 50, "failureLimit": 0},
}


class PodClients:
    """One client thread per pod while the block runs: streams finished, failures, and the model
    versions that answered (a stream's final response)."""

    def __init__(self, ips: list[str]) -> None:
        self.finished = 0
        self.failed: list[str] = []
        self.versions: Counter[str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self._stream, args=(ip,), daemon=True) for ip in ips]

    def __enter__(self) -> Self:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=60)

    def _stream(self, ip: str) -> None:
        raise NotImplementedError


class Streams(PodClients):
    """Streaming clients, one gRPC stream per pod (as gRPC clients pin to a connection), each
    keeping `depth` requests of 16 prompt tokens and 24 generated tokens in flight."""

    def __init__(self, ips: list[str], depth: int = 3) -> None:
        self.depth = depth
        super().__init__(ips)

    def _stream(self, ip: str) -> None:
        depth = self.depth
        client = grpcclient.InferenceServerClient(f"{ip}:{GRPC_PORT}")
        done: queue.Queue[str] = queue.Queue()

        def callback(result: object, error: object) -> None:
            if error is not None:
                with self.lock:
                    self.failed.append(f"{ip}: {error}")
                return
            response = result.get_response()  # type: ignore[attr-defined]
            if response.parameters["triton_final_response"].bool_param:
                with self.lock:
                    self.versions[response.model_version] += 1
                done.put(response.id)

        client.start_stream(callback=callback)
        sent, open_ids = 0, set()
        try:
            while not self.stop.is_set() or open_ids:
                while not self.stop.is_set() and len(open_ids) < depth:
                    inputs = []
                    for name, value in (("PROMPT_TOKENS", 16), ("MAX_TOKENS", 24)):
                        tensor = grpcclient.InferInput(name, [1], "INT32")
                        tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
                        inputs.append(tensor)
                    client.async_stream_infer(TOKENS, inputs, request_id=str(sent), enable_empty_final_response=True)
                    open_ids.add(str(sent))
                    sent += 1
                try:
                    open_ids.discard(done.get(timeout=30))
                except queue.Empty:
                    with self.lock:
                        self.failed.append(f"{ip}: {len(open_ids)} stream(s) unanswered for 30 s")
                    return
                with self.lock:
                    self.finished += 1
        finally:
            client.stop_stream()
            client.close()


class SseStreams(PodClients):
    """Triton's HTTP `generate_stream` (server-sent events, one per token), one keep-alive
    connection per pod, one request at a time, as the Service clients send it
    (`loadgen.service_clients.generate_stream`: a request fails on an error, a status other than
    200, or fewer tokens than asked for)."""

    def _stream(self, ip: str) -> None:
        pool = urllib3.HTTPConnectionPool(ip, HTTP_PORT, maxsize=1, block=True, retries=False, timeout=30)
        try:
            while not self.stop.is_set():
                try:
                    version = generate_stream(pool, TOKENS)
                except Exception as error:
                    with self.lock:
                        self.failed.append(f"{ip}: {error!r}")
                    return
                with self.lock:
                    self.finished += 1
                    self.versions[version] += 1
        finally:
            pool.close()


def token_generator(root: Path) -> dict[str, object]:
    """spec.model for version 1 of the token generator (model_repo/tokens), written at root."""
    files = {1: (TOKENS_DIR / "1" / "model.py").read_text()}
    repository = write_model(root, TOKENS, (TOKENS_DIR / "config.pbtxt").read_text(), files)
    return {"name": TOKENS, "repository": f"file://{repository}", "version": 1}


def test_a_slower_generator_is_rolled_back_on_its_token_latencies_with_no_failed_stream(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Two replicas of the token generator stream under load; version 2's decode steps take
    four times as long. Its canary (one of the two pods) has the same compute counters as ever
    (Triton's per-request compute time means nothing for a streaming model) but a worse ITL, and
    so a worse TTFT: the analysis says so and the pod switches back to version 1, and no stream
    fails on either pod."""
    repository = token_generator_repository(tmp_path / "repo")
    spec: dict[str, object] = {
        "model": {"name": TOKENS, "repository": f"file://{repository}", "version": 1},
        "replicas": 2,
        "rollout": {"strategy": "Canary", "canary": CANARY},
    }
    apply_md(cluster, namespace, TOKENS, spec)
    wait_for_condition(api, namespace, TOKENS, "Ready", "True", timeout=180)
    ips = ready_ips(core, namespace, TOKENS)
    assert len(ips) == 2

    with Streams(ips) as streams:
        wait_until("streams flowing", lambda: streams.finished >= 10, timeout=60)
        apply_md(cluster, namespace, TOKENS, {**spec, "model": {**spec["model"], "version": 2}})  # type: ignore[dict-item]
        wait_until(
            "the canary rolled back",
            lambda: (get_md(api, namespace, TOKENS)["status"].get("rollout") or {}).get("phase") == "RolledBack",
            timeout=180,
        )
        finished_at_rollback = streams.finished
        wait_until("more streams after the rollback", lambda: streams.finished >= finished_at_rollback + 10, 60)
    md = get_md(api, namespace, TOKENS)
    analysis = md["status"]["rollout"]["lastAnalysis"]
    print(f"\ncanary of a generator with 4x slower decode steps: {analysis['message']}; {streams.finished} streams")
    # A slower decode step delays the first token too (a new request waits for the step under
    # way, as in vLLM's continuous batching): the reason names the worse of the two, the message
    # gives both, and the ITL regression alone exceeds the 50% bound.
    assert analysis["reason"] in ("InterTokenLatencyRegression", "TimeToFirstTokenRegression"), analysis
    assert analysis["canary"]["interTokenLatencyMs"] > 1.5 * analysis["stable"]["interTokenLatencyMs"], analysis
    assert "ITL" in analysis["message"] and "TTFT" in analysis["message"], analysis
    assert analysis["canary"]["computeMs"] < 5  # Triton's compute figure says nothing here
    assert md_condition(md, "CanaryHealthy")["reason"] == analysis["reason"]
    assert streams.failed == []
    # Version 1 serves everywhere again; Ready says RolledBack until the spec changes.
    assert md["status"]["activeVersion"] == 1
    assert md_condition(md, "Ready")["reason"] == "RolledBack"


def test_a_streaming_model_switches_version_in_place_with_no_failed_stream(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The in-place switch for a decoupled model: two replicas of the token generator stream under
    load, over gRPC streams and over HTTP `generate_stream` (server-sent events on keep-alive
    connections), while the spec goes from version 1 to 2. Every pod ends on version 2 without a
    restart, both clients are then answered by version 2, and no stream fails or goes unanswered."""
    repository = token_generator_repository(tmp_path / "repo")
    spec: dict[str, object] = {
        "model": {"name": TOKENS, "repository": f"file://{repository}", "version": 1},
        "replicas": 2,
    }
    apply_md(cluster, namespace, TOKENS, spec)
    wait_for_condition(api, namespace, TOKENS, "Ready", "True", timeout=180)
    pods = {(pod.metadata.name, pod.metadata.uid) for pod in md_pods(core, namespace, TOKENS)}
    ips = ready_ips(core, namespace, TOKENS)
    assert len(ips) == 2

    with Streams(ips) as streams, SseStreams(ips) as events:
        wait_until("streams flowing", lambda: streams.finished >= 10 and events.finished >= 4, timeout=60)
        apply_md(cluster, namespace, TOKENS, {**spec, "model": {**spec["model"], "version": 2}})  # type: ignore[dict-item]

        def switched() -> bool:
            md = get_md(api, namespace, TOKENS)
            ready = md_condition(md, "Ready")
            return (
                md["status"].get("activeVersion") == 2
                and ready.get("status") == "True"
                and ready.get("observedGeneration") == md["metadata"]["generation"]
            )

        wait_until("every replica on version 2", switched, timeout=240)
        served_by_2, sse_by_2 = streams.versions["2"], events.versions["2"]
        wait_until(
            "streams answered by version 2",
            lambda: streams.versions["2"] >= served_by_2 + 10 and events.versions["2"] >= sse_by_2 + 4,
            timeout=60,
        )
    print(
        f"\nin-place switch of a streaming model 1 -> 2, streams by version: gRPC {dict(streams.versions)}, "
        f"HTTP generate_stream {dict(events.versions)}"
    )
    assert streams.failed == [] and events.failed == []
    assert streams.versions["1"] >= 10 and events.versions["1"] >= 4  # both ran on version 1 before the switch
    # The same pods (names and uids): the version changed inside the running servers.
    assert {(pod.metadata.name, pod.metadata.uid) for pod in md_pods(core, namespace, TOKENS)} == pods


def test_ttft_and_itl_targets_size_the_replicas_up_and_down_through_a_load_step(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The token generator with p95 targets TTFT 1000 ms and ITL 60 ms; load steps from 2 to 16
    streams/s of 24 tokens and back. One replica then runs ~15 requests per engine step and its
    ITL passes the target: the operator scales on the token figures (token_policy), and once the
    new replicas serve, the p95 TTFT and ITL are back within target, at the client and in status.
    When the step ends, token_policy sizes the base load for one replica again and the surplus
    goes: back to minReplicas with no request failed, the targets held throughout. (A removed
    pod's tritonserver closes the client's idle gRPC stream when it exits: noted, not failed.)

    The scale-down window is 30 s, not the 0 the API allows: with 0, token_policy follows every
    second's recommendation, which the simulator (the test model's engine, this load) shows
    flapping 1 <-> 3 under the steady 16 streams/s. What takes longest on the way down is the
    forecast's headroom after a step (the recent peak decays over 300 s): the simulator puts
    minReplicas 180-250 s after the step ends."""
    targets = {"percentile": 95, "timeToFirstTokenMs": 1000, "interTokenLatencyMs": 60}
    spec = {
        "model": token_generator(tmp_path / "repo"),
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetLatencyMs": 60000,
            "spareReplicas": 0,  # no warm-up reserve: the step has to be met by sizing on tokens
            "scaleDownStabilizationSeconds": 30,
            "tokenLatency": targets,
        },
    }
    apply_md(cluster, namespace, TOKENS, spec)
    wait_for_condition(api, namespace, TOKENS, "Ready", "True", timeout=180)

    def scaled() -> list[str]:
        return [e.message for e in events_for(core, namespace, TOKENS) if e.reason == "Scaled"]

    with OpenStreams(lambda: ready_ips(core, namespace, TOKENS), TOKENS, rate=2) as streams:
        wait_until(
            "token figures in status", lambda: bool(get_md(api, namespace, TOKENS)["status"].get("tokenLatency")), 60
        )
        streams.rate = 16
        wait_until("scaled up", lambda: len(ready_ips(core, namespace, TOKENS)) >= 2, timeout=120)
        md = get_md(api, namespace, TOKENS)
        scaled_up = scaled()
        settled = time.monotonic()
        wait_until("30 s of load on the new replicas", lambda: time.monotonic() - settled >= 30, timeout=40)
        ttft, itl = streams.p95(since=settled + 10)
        status = get_md(api, namespace, TOKENS)["status"]["tokenLatency"]
        peak = len(ready_ips(core, namespace, TOKENS))

        streams.rate = 2  # the step ends: the base load again
        ended = time.monotonic()

        def at_minimum() -> bool:
            desired = get_md(api, namespace, TOKENS)["status"].get("desiredReplicas")
            return desired == 1 and len(md_pods(core, namespace, TOKENS)) == 1

        try:
            wait_until("back to minReplicas", at_minimum, timeout=420)
        except TimeoutError as error:
            raise AssertionError(
                f"not back to 1 replica {time.monotonic() - ended:.0f} s after the step: {scaled()}"
            ) from error
        down_s = time.monotonic() - ended
        ttft_down, itl_down = streams.p95(since=ended)
    scaled_down = [
        m for m in scaled() if m not in scaled_up and int(m.split(" -> ")[0]) > int(m.split(" -> ")[1].split(":")[0])
    ]
    print(
        f"\nload step 2 -> 16 streams/s: {peak} replicas; client p95 TTFT {ttft:.0f} ms, ITL {itl:.0f} ms after "
        f"the scale-up; status {status}; {scaled_up}\nback to 2 streams/s: 1 replica after {down_s:.0f} s, client "
        f"p95 TTFT {ttft_down:.0f} ms, ITL {itl_down:.0f} ms meanwhile; {scaled_down}; {streams.streams} streams, "
        f"{len(streams.closed)} idle stream(s) closed by removed pods"
    )
    assert any("x the target" in m or "planned" in m for m in scaled_up), scaled_up  # token_policy's reasons
    assert ttft <= targets["timeToFirstTokenMs"] and itl <= targets["interTokenLatencyMs"], (ttft, itl)
    assert status["interTokenLatencyMs"] <= targets["interTokenLatencyMs"], status
    assert md["status"]["desiredReplicas"] >= 2
    # Down by token_policy's sizing of the base load (its reason names the planned rate), not by
    # an absence of traffic; the targets held on the way down and no stream failed.
    assert scaled_down and all("planned" in m for m in scaled_down), scaled_down
    assert ttft_down <= targets["timeToFirstTokenMs"] and itl_down <= targets["interTokenLatencyMs"], (
        ttft_down,
        itl_down,
    )
    assert streams.failed == []


def test_ttft_and_itl_come_through_prometheus_as_from_the_pods(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    prometheus: PrometheusProcess,
) -> None:
    """With `autoscaling.prometheus`, TTFT and ITL come from Prometheus (Debian's, scraping the
    token generator's pods): status shows them, and over the whole load they are the percentiles
    of the pods' own histograms (what the pod reader reads), to within Prometheus' increase()."""
    targets = {"percentile": 95, "timeToFirstTokenMs": 1000, "interTokenLatencyMs": 60}
    spec = {
        "model": token_generator(tmp_path / "repo"),
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 1,  # the figures are what is tested here, not the sizing
            "targetLatencyMs": 60000,
            "tokenLatency": targets,
            "prometheus": {"url": prometheus.url},
        },
    }
    apply_md(cluster, namespace, TOKENS, spec)
    wait_for_condition(api, namespace, TOKENS, "Ready", "True", timeout=180)
    ips = ready_ips(core, namespace, TOKENS)
    (pod,) = [p.metadata.name for p in md_pods(core, namespace, TOKENS)]
    selector = f'model="{TOKENS}",pod=~"{pod}"'

    def ask(question: Callable[[PrometheusReader], Awaitable[T]]) -> T:
        """The operator's Prometheus reader, over the whole test's window, asked one thing."""

        async def asked() -> T:
            reader = PrometheusReader(prometheus.url, window_seconds=900)
            try:
                return await question(reader)
            finally:
                await reader.close()

        return asyncio.run(asked())

    def pods_histograms() -> tuple[Histogram, Histogram]:
        page = urllib.request.urlopen(f"http://{ips[0]}:{METRICS_PORT}/metrics", timeout=5).read().decode()
        sample = parse_tokens(page, TOKENS, time.monotonic())
        ttft, itl = (merged(sample.histograms[family].values()) for family in (VLLM_TTFT, VLLM_ITL))
        assert ttft is not None and itl is not None
        return ttft, itl

    wait_until(
        "Prometheus scrapes the pod's token families",
        lambda: ask(lambda reader: reader._query(f"count({VLLM_TTFT}_bucket{{{selector}}})")) is not None,
        timeout=60,
    )
    with OpenStreams(lambda: ips, TOKENS, rate=4) as streams:
        wait_until(
            "TTFT and ITL from Prometheus in status",
            lambda: (
                (get_md(api, namespace, TOKENS)["status"].get("tokenLatency") or {}).get("interTokenLatencyMs")
                is not None
            ),
            timeout=90,
        )
        status = get_md(api, namespace, TOKENS)["status"]["tokenLatency"]
    assert streams.failed == []
    observed = pods_histograms()[0].count
    wait_until(
        "Prometheus has scraped every stream",
        lambda: ask(lambda reader: reader._query(f"sum({VLLM_TTFT}_count{{{selector}}})")) == observed,
        timeout=30,
    )
    window = ask(lambda reader: reader._tokens(selector, 1))
    ttft, itl = pods_histograms()
    assert window is not None and window.ttft_source == VLLM_TTFT and window.ttft is not None and window.itl
    figures = {
        "ttft": (window.ttft.quantile(0.95), ttft.quantile(0.95)),
        "itl": (window.itl.quantile(0.95), itl.quantile(0.95)),
    }
    print(f"\nprometheus vs pods p95 (ms): {figures}; status {status}; {observed:.0f} streams")
    for through_prometheus, from_pods in figures.values():
        assert through_prometheus is not None and from_pods is not None
        assert through_prometheus == pytest.approx(from_pods, rel=0.05), figures
    assert window.generation_tokens_per_second and window.prompt_tokens_per_second, window
    assert status["timeToFirstTokenMs"] > 0 and "vllm:time_to_first_token_seconds" in str(status), status
