"""model_repo/tokens on a real tritonserver (the nvidia-pytriton wheel's 2.51, on loopback): one
streamed response per token over gRPC, requests held back by the KV-cache budget, and a
/metrics page with the vLLM backend's families that autoscale/tokens.py reads. About 5 s."""

from __future__ import annotations

import itertools
import math
import queue
import re
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from devcluster.tokens_server import tokens_server
from tritonop.autoscale import tokens

pytest.importorskip("pytriton")
grpcclient = pytest.importorskip("tritonclient.grpc")

ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
PROMPT, MAX_TOKENS, REQUESTS = 100, 20, 6
# Each request reserves 120 tokens of 600: five run together, the sixth waits for one to finish.
PARAMETERS = {
    "step_ms": "10",
    "step_ms_per_request": "1",
    "prefill_ms_per_token": "0.1",
    "kv_cache_tokens": "600",
    "export_scheduler_gauges": "true",
}


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with tokens_server(tmp_path_factory.mktemp("tokens"), PARAMETERS, timeout=30) as addresses:
        yield addresses


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def stream(address: str, n: int, prompt: int, max_tokens: int) -> dict[str, list[tuple[float, int]]]:
    """Send n requests on one gRPC stream; each one's (arrival time, TOKEN) responses."""
    client = grpcclient.InferenceServerClient(address)
    results: queue.Queue[tuple[float, object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((time.monotonic(), result, error)))
    try:
        for i in range(n):
            inputs = []
            for name, value in (("PROMPT_TOKENS", prompt), ("MAX_TOKENS", max_tokens)):
                tensor = grpcclient.InferInput(name, [1], "INT32")
                tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
                inputs.append(tensor)
            client.async_stream_infer("tokens", inputs, request_id=str(i), enable_empty_final_response=True)
        received: dict[str, list[tuple[float, int]]] = {str(i): [] for i in range(n)}
        finished: set[str] = set()
        while len(finished) < n:
            at, result, error = results.get(timeout=30)
            assert error is None, error
            response = result.get_response()  # type: ignore[attr-defined]
            token = result.as_numpy("TOKEN")  # type: ignore[attr-defined]
            if token is not None:
                received[response.id].append((at, int(token[0])))
            if response.parameters["triton_final_response"].bool_param:
                finished.add(response.id)
        return received
    finally:
        client.stop_stream()
        client.close()


def test_one_response_per_token_and_the_vllm_families(triton: tuple[str, str]) -> None:
    address, metrics = triton
    first = page(metrics)
    for family, kind in (
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:time_per_output_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:num_requests_running", "gauge"),
    ):
        assert f"# TYPE {family} {kind}" in first, family
    bounds = re.findall(r'vllm:time_per_output_token_seconds_bucket\{model="tokens",version="1",le="([^"]+)"\}', first)
    assert [float(b) for b in bounds] == [*ITL_BUCKETS, math.inf]  # Triton's vLLM backend's
    before = tokens.parse(first, "tokens", at=time.monotonic())

    received = stream(address, REQUESTS, PROMPT, MAX_TOKENS)
    after = tokens.parse(page(metrics), "tokens", at=time.monotonic())

    for responses in received.values():
        assert [token for _, token in responses] == list(range(MAX_TOKENS))
    firsts = sorted(responses[0][0] for responses in received.values())
    # The KV-cache budget holds the sixth request back until a first one has finished.
    assert firsts[-1] - firsts[-2] > (MAX_TOKENS - 2) * 0.010
    figures = tokens.window(before, after)
    assert figures.ttft is not None and figures.ttft.count == REQUESTS
    assert figures.itl is not None and figures.itl.count == REQUESTS * (MAX_TOKENS - 1)
    assert figures.prompt_tokens_per_second is not None and figures.generation_tokens_per_second is not None
    seconds = figures.seconds
    assert round(figures.prompt_tokens_per_second * seconds) == REQUESTS * PROMPT
    assert round(figures.generation_tokens_per_second * seconds) == REQUESTS * MAX_TOKENS
    assert (figures.running, figures.waiting, figures.kv_cache_usage) == (0, 0, 0)  # all done
    # ITL as the client saw it (gRPC adds a little) against the histogram's median.
    gaps = sorted(b[0] - a[0] for responses in received.values() for a, b in itertools.pairwise(responses))
    itl = figures.itl_percentile(50)
    assert itl is not None and 10 <= itl.ms <= 250
    assert gaps[len(gaps) // 2] * 1000 == pytest.approx(itl.ms, abs=25)
    ttft = figures.ttft_percentile(95)
    assert ttft is not None and ttft.ms >= 10 and not ttft.beyond_range
