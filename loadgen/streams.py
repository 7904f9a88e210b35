"""An open-loop streaming client for decoupled (token-streaming) models over gRPC, as LLM
clients send: the tests' and `make demo-llm`'s load. Needs tritonclient and numpy (the operator's
own dependencies), so `loadgen/__init__` does not import it: `from loadgen.streams import OpenStreams`."""

from __future__ import annotations

import functools
import math
import random
import threading
import time
from collections.abc import Callable

import numpy as np
import tritonclient.grpc as grpcclient

GRPC_PORT = 8001  # Triton's gRPC port (tritonop.names.GRPC_PORT; loadgen imports no operator code)


class OpenStreams:
    """An open-loop streaming client: `rate` requests/s (changeable), each sent to a ready pod
    picked at random (as kube-proxy picks per connection; one gRPC stream per pod, multiplexing
    its requests), recording each request's TTFT and inter-token gaps as the client sees them.
    As a context manager it sends at `rate` (0: none) until the block ends, then waits for the
    streams under way; `send_one` sends a single request (on_token / on_final see it arrive).

    A stream that ends with an error fails the requests still open on it (`failed`). One that ends
    with none open, as a removed pod's server closes its connections when it exits, is only noted
    (`closed`): nothing was lost, and the next request to that address opens a new stream."""

    def __init__(
        self, pods: Callable[[], list[str]], model: str, rate: float, prompt: int = 32, tokens: int = 24
    ) -> None:
        self.pods, self.model, self.rate, self.prompt, self.tokens = pods, model, rate, prompt, tokens
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.clients: dict[str, grpcclient.InferenceServerClient] = {}
        self.sent: dict[str, float] = {}  # request id -> when sent
        self.sent_to: dict[str, str] = {}  # request id -> the pod IP whose stream carries it
        self.last: dict[str, float] = {}  # request id -> its latest token
        self.ttft: list[tuple[float, float]] = []  # (when, ms)
        self.itl: list[tuple[float, float]] = []
        self.failed: list[str] = []
        self.closed: list[str] = []  # streams ended by the server with no request open on them
        self.ended: list[grpcclient.InferenceServerClient] = []  # their clients, closed at the end
        self.on_token: Callable[[float], None] | None = None  # each token's arrival (monotonic)
        self.on_final: Callable[[], None] | None = None  # a request's last response
        self.count = 0
        self.thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> OpenStreams:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        deadline = time.monotonic() + 60
        while self.sent and time.monotonic() < deadline:  # the streams under way finish
            time.sleep(0.1)
        if self.sent:
            self.failed.append(f"{len(self.sent)} stream(s) unfinished 60 s after the load stopped")
        self.close()

    def close(self) -> None:
        with self.lock:
            clients = [*self.clients.values(), *self.ended]
            self.clients.clear()
            self.ended.clear()
        for stream in clients:
            stream.stop_stream()
            stream.close()

    def _client(self, ip: str) -> grpcclient.InferenceServerClient:
        with self.lock:
            client = self.clients.get(ip)
        if client is None:
            client = grpcclient.InferenceServerClient(f"{ip}:{GRPC_PORT}")
            client.start_stream(callback=functools.partial(self._received, ip, client))
            with self.lock:
                self.clients[ip] = client
        return client

    def _received(self, ip: str, client: grpcclient.InferenceServerClient, result: object, error: object) -> None:
        now = time.monotonic()
        with self.lock:
            if error is not None:
                # The stream has ended: its requests still open fail; the next request to this
                # address opens a new stream.
                if self.clients.get(ip) is client:
                    del self.clients[ip]
                    self.ended.append(client)
                lost = [rid for rid, pod in self.sent_to.items() if pod == ip and rid in self.sent]
                for rid in lost:
                    self.sent.pop(rid, None)
                    self.last.pop(rid, None)
                    self.sent_to.pop(rid, None)
                if lost:
                    self.failed.append(f"{ip}: {error} ({len(lost)} request(s) open)")
                else:
                    self.closed.append(f"{ip}: {error}")
                return
            response = result.get_response()  # type: ignore[attr-defined]
            rid = response.id
            if result.as_numpy("TOKEN") is not None:  # type: ignore[attr-defined]
                previous = self.last.get(rid)
                if previous is None:
                    self.ttft.append((now, 1000 * (now - self.sent[rid])))
                else:
                    self.itl.append((now, 1000 * (now - previous)))
                self.last[rid] = now
                if self.on_token is not None:
                    self.on_token(now)
            if response.parameters["triton_final_response"].bool_param:
                self.sent.pop(rid, None)
                self.last.pop(rid, None)
                self.sent_to.pop(rid, None)
                if self.on_final is not None:
                    self.on_final()

    def send_one(self) -> None:
        """One request to a ready pod picked at random (none known: skipped, as a client would fail)."""
        pods = self.pods()
        if not pods:
            return
        inputs = []
        for name, value in (("PROMPT_TOKENS", self.prompt), ("MAX_TOKENS", self.tokens)):
            tensor = grpcclient.InferInput(name, [1], "INT32")
            tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
            inputs.append(tensor)
        rid = str(self.count)
        self.count += 1
        ip = random.choice(pods)
        client = self._client(ip)
        with self.lock:
            self.sent[rid] = time.monotonic()
            self.sent_to[rid] = ip
        client.async_stream_infer(self.model, inputs, request_id=rid, enable_empty_final_response=True)

    def _send(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            if self.rate <= 0:
                due = time.monotonic() + 0.1
                time.sleep(0.1)
                continue
            self.send_one()
            due += 1.0 / self.rate
            time.sleep(max(0.0, due - time.monotonic()))

    def p95(self, since: float) -> tuple[float, float]:
        """Client-side p95 TTFT and ITL (ms) of what arrived since `since` (nan: nothing yet)."""
        with self.lock:
            ttft = sorted(ms for at, ms in self.ttft if at >= since)
            itl = sorted(ms for at, ms in self.itl if at >= since)

        def p95(values: list[float]) -> float:
            return values[int(0.95 * (len(values) - 1))] if values else math.nan

        return p95(ttft), p95(itl)

    @property
    def streams(self) -> int:
        with self.lock:
            return len(self.ttft)
