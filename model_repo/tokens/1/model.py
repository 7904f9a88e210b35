"""A token generator that behaves, and reports, like an LLM on Triton's vLLM backend, on CPU.

Decoupled: execute() hands each request to one engine loop and returns at once; the loop streams
one response per token (TOKEN = the token's position), the last one flagged final.

- Continuous batching: every running request gets one token per step; a step takes
  step_ms + step_ms_per_request x running requests, plus the prefill of the requests admitted
  in it (prefill_ms_per_token x their prompt tokens), whose first token ends that step.
- KV cache: a request reserves prompt + max tokens of kv_cache_tokens while it runs; one that does
  not fit waits (first come, first served), as do requests beyond max_running.

Metrics, through the python backend's custom metrics API, with the names, kinds, labels
{model, version} and bucket bounds of Triton's vLLM backend (src/utils/metrics.py):
vllm:prompt_tokens_total, vllm:generation_tokens_total, vllm:time_to_first_token_seconds,
vllm:time_per_output_token_seconds (inter-token latency), vllm:e2e_request_latency_seconds,
vllm:request_prompt_tokens and vllm:request_generation_tokens. With export_scheduler_gauges,
also vLLM's gauges vllm:num_requests_running, vllm:num_requests_waiting and
vllm:gpu_cache_usage_perc (not in any release of the backend).
"""

import json
import threading
import time
from collections import deque

import numpy as np
import triton_python_backend_utils as pb_utils

TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
E2E_BUCKETS = [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def buckets_1_2_5(max_value):
    """vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to max_value."""
    found, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return found
            found.append(value)
        exponent += 1


class Request:
    def __init__(self, sender, prompt, max_tokens, arrived):
        self.sender = sender
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.arrived = arrived
        self.produced = 0
        self.last_token = None

    @property
    def reserved(self):
        return self.prompt + self.max_tokens


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.step_s = float(params.get("step_ms", "20")) / 1000
        self.step_per_request_s = float(params.get("step_ms_per_request", "1")) / 1000
        self.prefill_per_token_s = float(params.get("prefill_ms_per_token", "0.5")) / 1000
        self.kv_tokens = int(params.get("kv_cache_tokens", "8192"))
        self.max_running = int(params.get("max_running", "64"))
        max_model_len = int(params.get("max_model_len", "4096"))
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self._metrics(labels, max_model_len, params.get("export_scheduler_gauges", "false") == "true")
        self.waiting = deque()
        self.running = []
        self.reserved = 0
        self.lock = threading.Condition()
        self.stopping = False
        self.engine = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.engine.start()

    def _metrics(self, labels, max_model_len, gauges):
        def family(name, description, kind):
            return pb_utils.MetricFamily(name=name, description=description, kind=kind)

        counter, histogram, gauge = (
            pb_utils.MetricFamily.COUNTER,
            pb_utils.MetricFamily.HISTOGRAM,
            pb_utils.MetricFamily.GAUGE,
        )
        # The families are kept: a Metric must not outlive its MetricFamily.
        self.families = {
            "prompt": family("vllm:prompt_tokens_total", "Number of prefill tokens processed.", counter),
            "generation": family("vllm:generation_tokens_total", "Number of generation tokens processed.", counter),
            "ttft": family(
                "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", histogram
            ),
            "itl": family(
                "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", histogram
            ),
            "e2e": family(
                "vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", histogram
            ),
            "prompt_len": family("vllm:request_prompt_tokens", "Number of prefill tokens processed.", histogram),
            "generation_len": family(
                "vllm:request_generation_tokens", "Number of generation tokens processed.", histogram
            ),
        }
        f = self.families
        self.prompt_tokens = f["prompt"].Metric(labels=labels)
        self.generation_tokens = f["generation"].Metric(labels=labels)
        self.ttft = f["ttft"].Metric(labels=labels, buckets=TTFT_BUCKETS)
        self.itl = f["itl"].Metric(labels=labels, buckets=ITL_BUCKETS)
        self.e2e = f["e2e"].Metric(labels=labels, buckets=E2E_BUCKETS)
        self.prompt_len = f["prompt_len"].Metric(labels=labels, buckets=buckets_1_2_5(max_model_len))
        self.generation_len = f["generation_len"].Metric(labels=labels, buckets=buckets_1_2_5(max_model_len))
        self.gauges = None
        if gauges:
            f["running"] = family("vllm:num_requests_running", "Number of requests currently running on GPU.", gauge)
            f["waiting"] = family("vllm:num_requests_waiting", "Number of requests waiting to be processed.", gauge)
            f["kv"] = family("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", gauge)
            self.gauges = tuple(f[name].Metric(labels=labels) for name in ("running", "waiting", "kv"))

    def execute(self, requests):
        now = time.monotonic()
        for request in requests:
            sender = request.get_response_sender()
            prompt = int(pb_utils.get_input_tensor_by_name(request, "PROMPT_TOKENS").as_numpy().reshape(-1)[0])
            max_tokens = int(pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS").as_numpy().reshape(-1)[0])
            if prompt < 1 or max_tokens < 1 or prompt + max_tokens > self.kv_tokens:
                error = pb_utils.TritonError(
                    f"PROMPT_TOKENS and MAX_TOKENS must be at least 1 and fit in kv_cache_tokens ({self.kv_tokens})"
                )
                sender.send(
                    pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )
                continue
            with self.lock:
                self.waiting.append(Request(sender, prompt, max_tokens, now))
                self.lock.notify()
        return None

    def _admit(self):
        """Move waiting requests that fit into the running batch (first come, first served)."""
        admitted = []
        while (
            self.waiting
            and len(self.running) < self.max_running
            and self.reserved + self.waiting[0].reserved <= self.kv_tokens
        ):
            request = self.waiting.popleft()
            self.reserved += request.reserved
            self.running.append(request)
            admitted.append(request)
        return admitted

    def _loop(self):
        while True:
            with self.lock:
                while not self.stopping and not self.running and not self.waiting:
                    self.lock.wait()
                if self.stopping:
                    return
                admitted = self._admit()
                batch = list(self.running)
                self._set_gauges()
            prefill = sum(request.prompt for request in admitted)
            time.sleep(self.step_s + self.step_per_request_s * len(batch) + self.prefill_per_token_s * prefill)
            now = time.monotonic()
            finished = [request for request in batch if self._token(request, now)]
            if finished:
                with self.lock:
                    for request in finished:
                        self.running.remove(request)
                        self.reserved -= request.reserved
                    self._set_gauges()

    def _token(self, request, now):
        """Send the request's next token; True when it was the last (or the client went away)."""
        last = request.produced + 1 >= request.max_tokens
        if request.produced == 0:
            self.ttft.observe(now - request.arrived)
            self.prompt_tokens.increment(request.prompt)
            self.prompt_len.observe(request.prompt)
        else:
            self.itl.observe(now - request.last_token)
        self.generation_tokens.increment(1)
        token = pb_utils.Tensor("TOKEN", np.array([request.produced], dtype=np.int32))
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if last else 0
        try:
            if request.sender.is_cancelled():
                request.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return True
            request.sender.send(pb_utils.InferenceResponse(output_tensors=[token]), flags=flags)
        except Exception:  # the stream is gone: free its room
            return True
        request.produced += 1
        request.last_token = now
        if last:
            self.e2e.observe(now - request.arrived)
            self.generation_len.observe(request.produced)
        return last

    def _set_gauges(self):
        if self.gauges is not None:
            running, waiting, kv = self.gauges
            running.set(len(self.running))
            waiting.set(len(self.waiting))
            kv.set(self.reserved / self.kv_tokens)

    def finalize(self):
        with self.lock:
            self.stopping = True
            self.lock.notify()
        self.engine.join(timeout=5)
