"""Measure model_repo/tokens on a real tritonserver: step time against batch size, prefill per prompt token.

    PYTHONPATH=operator .venv/bin/python bench/llm_calibrate.py [--json]

Starts the nvidia-pytriton wheel's tritonserver on loopback (as tests/unit/test_tokens_model.py
does) with the token generator configured as bench/llm_sim.py's defaults (MODEL_PARAMETERS), then:
- step time: B requests with a 1-token prompt and STEP_TOKENS tokens each, sent together on one
  gRPC stream; the median gap between consecutive tokens of a request (as the client receives
  them) while all B run, for each B in BATCHES; a least-squares line a + b x B through them;
- prefill: one request alone with P prompt tokens and 2 output tokens, the time to its first token
  (median of REPEATS), for each P in PROMPTS; the slope per prompt token and the intercept.
The figures printed are the ones bench/llm_sim.py's Engine defaults are set from (see bench/README.md).
About a minute; single process (the server is a child).
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT, ROOT / "operator"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import tritonclient.grpc as grpcclient  # noqa: E402

from devcluster.tokens_server import tokens_server  # noqa: E402

# The token generator as the simulator models it (bench/llm_sim.py Engine.configured()).
MODEL_PARAMETERS = {
    "step_ms": "15",
    "step_ms_per_request": "1.5",
    "prefill_ms_per_token": "0.01",
    "kv_cache_tokens": "32768",
    "max_running": "64",
    "max_model_len": "16384",
}
BATCHES = (1, 4, 8, 16, 32, 48)
STEP_TOKENS = 40
PROMPTS = (1, 4000, 8000, 16000)
REPEATS = 3


def stream(address: str, requests: list[tuple[int, int]]) -> list[list[float]]:
    """Send (prompt, max tokens) requests together on one gRPC stream; each one's token arrival
    times (monotonic, client side), and the send time as element 0."""
    client = grpcclient.InferenceServerClient(address)
    results: queue.Queue[tuple[float, object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((time.monotonic(), result, error)))
    try:
        sent = time.monotonic()
        for i, (prompt, max_tokens) in enumerate(requests):
            inputs = []
            for name, value in (("PROMPT_TOKENS", prompt), ("MAX_TOKENS", max_tokens)):
                tensor = grpcclient.InferInput(name, [1], "INT32")
                tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
                inputs.append(tensor)
            client.async_stream_infer("tokens", inputs, request_id=str(i), enable_empty_final_response=True)
        times: list[list[float]] = [[sent] for _ in requests]
        finished = 0
        while finished < len(requests):
            at, result, error = results.get(timeout=60)
            assert error is None, error
            response = result.get_response()  # type: ignore[attr-defined]
            if result.as_numpy("TOKEN") is not None:  # type: ignore[attr-defined]
                times[int(response.id)].append(at)
            if response.parameters["triton_final_response"].bool_param:
                finished += 1
        return times
    finally:
        client.stop_stream()
        client.close()


def fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def measure(address: str) -> dict[str, object]:
    stream(address, [(1, 5)])  # warm up
    steps = []
    for batch in BATCHES:
        times = stream(address, [(1, STEP_TOKENS)] * batch)
        # Gaps while every request runs: from the third token to the last but two.
        gaps = [b - a for t in times for a, b in itertools.pairwise(t[3:-2])]
        steps.append((batch, 1000 * statistics.median(gaps)))
    prefills = []
    for prompt in PROMPTS:
        firsts = [1000 * (t[1] - t[0]) for t in (stream(address, [(prompt, 2)])[0] for _ in range(REPEATS))]
        prefills.append((prompt, statistics.median(firsts)))
    step_ms, per_request_ms = fit(steps)
    first_ms, per_token_ms = fit(prefills)
    return {
        "configured": MODEL_PARAMETERS,
        "step_ms_by_batch": [[b, round(ms, 2)] for b, ms in steps],
        "step_fit": {"step_ms": round(step_ms, 3), "step_ms_per_request": round(per_request_ms, 4)},
        "ttft_ms_by_prompt_tokens": [[p, round(ms, 2)] for p, ms in prefills],
        "prefill_fit": {"ttft_ms_at_zero": round(first_ms, 3), "prefill_ms_per_token": round(per_token_ms, 5)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, tokens_server(Path(temp), MODEL_PARAMETERS) as (grpc, _):
        result = measure(grpc)
    if args.json:
        print(json.dumps(result))
        return
    print("configured:", MODEL_PARAMETERS)
    print("step time by batch (median token gap, ms):", result["step_ms_by_batch"])
    print("fit:", result["step_fit"])
    print("TTFT alone by prompt tokens (ms):", result["ttft_ms_by_prompt_tokens"])
    print("fit:", result["prefill_fit"])


if __name__ == "__main__":
    main()
