"""Clients of a model's Service as users run them: HTTP clients that keep one connection open
(keep-alive; renewed every --http-renew-seconds, or never with --http-forever) and gRPC clients
that keep one channel, each sending at a steady rate to the
Service's address, so kube-proxy picks a pod per connection, not per request. For a streaming
model (the token generator, model_repo/tokens): --sse clients call Triton's HTTP generate_stream
(server-sent events, one per token) on a keep-alive connection, and --grpc-stream clients keep one
gRPC stream open; a request is answered once all STREAM_TOKENS tokens came.

Run as a program inside the clients' network namespace of the real node:

    python -m loadgen.service_clients HOST MODEL --http 6 --http-forever 2 --grpc 2 --rate 4 --out FILE
    python -m loadgen.service_clients HOST tokens --http 0 --grpc 0 --sse 4 --grpc-stream 2 --rate 2 --out FILE

Every second it rewrites FILE (atomically) with what each kind of client saw so far: requests,
failures (with the first error texts) and, per second, how many answers came from each version
(the model's `model_version` in the answer). SIGTERM or SIGINT stops it after a last write.
A failed request is counted, never retried (a POST is not idempotent): an HTTP client reconnects
for its next request, and a gRPC channel reconnects on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .generator import BODY

TIMEOUT_SECONDS = 15.0
STREAM_TOKENS = 24  # tokens asked of a streaming model, after 16 prompt tokens
STREAM_BODY = json.dumps({"PROMPT_TOKENS": 16, "MAX_TOKENS": STREAM_TOKENS})


class Record:
    """What one kind of client saw, shared by its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.per_second: dict[int, Counter[str]] = defaultdict(Counter)  # second -> version (or "failed") -> count

    def answered(self, second: int, version: str) -> None:
        with self.lock:
            self.sent += 1
            self.per_second[second][version] += 1

    def failure(self, second: int, error: BaseException) -> None:
        with self.lock:
            self.sent += 1
            self.failed += 1
            self.per_second[second]["failed"] += 1
            self.errors[f"{type(error).__name__}: {error}"[:200]] += 1

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "sent": self.sent,
                "failed": self.failed,
                "errors": dict(self.errors.most_common(10)),
                "perSecond": {str(second): dict(counts) for second, counts in sorted(self.per_second.items())},
            }


def paced(rate: float, stop: threading.Event, offset: float) -> Any:
    """Yield once per 1/rate seconds (the schedule does not drift with the answers' latency)."""
    period = 1.0 / rate
    due = time.monotonic() + offset * period
    while not stop.is_set():
        delay = due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        yield
        due += period


def infer(pool: Any, model: str) -> str:
    """One inference; the version that answered."""
    response = pool.urlopen(
        "POST", f"/v2/models/{model}/infer", body=BODY, headers={"Content-Type": "application/json"}
    )
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} {response.data[:120]!r}")
    return str(json.loads(response.data)["model_version"])


def generate_stream(pool: Any, model: str) -> str:
    """One streamed generation (server-sent events, an event per token); the version that sent
    the last token. Fewer tokens than asked for, or an error event, is a failure."""
    response = pool.urlopen(
        "POST", f"/v2/models/{model}/generate_stream", body=STREAM_BODY, headers={"Content-Type": "application/json"}
    )
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} {response.data[:120]!r}")
    events = [json.loads(line[5:]) for line in response.data.decode().splitlines() if line.startswith("data:")]
    errors = [event["error"] for event in events if "error" in event]
    tokens = sum(1 for event in events if "TOKEN" in event)
    if errors or tokens != STREAM_TOKENS:
        raise RuntimeError(f"{tokens} of {STREAM_TOKENS} tokens, errors {errors[:1]}")
    return str(events[-1]["model_version"])


def http_client(
    host: str,
    model: str,
    rate: float,
    record: Record,
    stop: threading.Event,
    offset: float,
    renew_seconds: float,
    ask: Any = infer,
) -> None:
    """One keep-alive connection as Python's requests keeps it (urllib3: a connection the server
    closed while idle is noticed and replaced before the next request; a POST is never retried).
    With renew_seconds, the connection is closed after a response once it is that old. `ask`
    sends one request and returns the version that answered."""
    import urllib3

    def new_pool() -> Any:
        return urllib3.HTTPConnectionPool(host, 8000, maxsize=1, block=True, retries=False, timeout=TIMEOUT_SECONDS)

    pool, opened = new_pool(), time.monotonic()
    for _ in paced(rate, stop, offset):
        second = int(time.time())
        if renew_seconds and time.monotonic() - opened >= renew_seconds:
            pool.close()
            pool, opened = new_pool(), time.monotonic()
        try:
            record.answered(second, ask(pool, model))
        except Exception as error:
            record.failure(second, error)


def grpc_client(host: str, model: str, rate: float, record: Record, stop: threading.Event, offset: float) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient

    # Its own connection, as a client process of its own has: gRPC shares one connection among a
    # process's channels to the same address unless each keeps a local subchannel pool.
    client = grpcclient.InferenceServerClient(f"{host}:8001", channel_args=[("grpc.use_local_subchannel_pool", 1)])
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    try:
        for _ in paced(rate, stop, offset):
            second = int(time.time())
            try:
                result = client.infer(model, [tensor], client_timeout=TIMEOUT_SECONDS)
                record.answered(second, str(result.get_response().model_version))
            except Exception as error:
                record.failure(second, error)
    finally:
        client.close()


def grpc_stream_client(
    host: str, model: str, rate: float, record: Record, stop: threading.Event, offset: float
) -> None:
    """One gRPC stream kept open (as an LLM client keeps one): each request waits for its final
    response before the next is sent. A stream that ends with an error is opened again."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{host}:8001", channel_args=[("grpc.use_local_subchannel_pool", 1)])
    inputs = []
    for name, value in (("PROMPT_TOKENS", 16), ("MAX_TOKENS", STREAM_TOKENS)):
        tensor = grpcclient.InferInput(name, [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
        inputs.append(tensor)

    def open_stream() -> queue.Queue[tuple[Any, Any]]:
        """A new stream, and the queue its responses go to (none of an old stream's reach it)."""
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        return answers

    answers = open_stream()
    try:
        for number, _ in enumerate(paced(rate, stop, offset)):
            second = int(time.time())
            try:
                client.async_stream_infer(model, inputs, request_id=str(number), enable_empty_final_response=True)
                tokens = 0
                while True:
                    try:
                        result, error = answers.get(timeout=TIMEOUT_SECONDS)
                    except queue.Empty:
                        raise TimeoutError(f"no response in {TIMEOUT_SECONDS:.0f}s after {tokens} tokens") from None
                    if error is not None:
                        raise error
                    response = result.get_response()
                    tokens += bool(response.outputs)
                    if response.parameters["triton_final_response"].bool_param:
                        break
                if tokens != STREAM_TOKENS:
                    raise RuntimeError(f"{tokens} of {STREAM_TOKENS} tokens")
                record.answered(second, str(response.model_version))
            except Exception as error:
                record.failure(second, error)
                client.stop_stream()
                answers = open_stream()
    finally:
        client.stop_stream()
        client.close()


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host", help="the Service's ClusterIP")
    parser.add_argument("model")
    parser.add_argument("--http", type=int, default=6, help="HTTP clients, one kept-alive connection each")
    parser.add_argument(
        "--http-renew-seconds",
        type=float,
        default=20.0,
        help="the --http clients open a new connection once theirs is this old (0: never)",
    )
    parser.add_argument("--http-forever", type=int, default=0, help="HTTP clients that never renew their connection")
    parser.add_argument("--grpc", type=int, default=2, help="gRPC clients, one channel each")
    parser.add_argument("--sse", type=int, default=0, help="HTTP generate_stream clients (a streaming model)")
    parser.add_argument(
        "--grpc-stream", type=int, default=0, help="gRPC clients with one stream each (a streaming model)"
    )
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s per client")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    records = {"http": Record(), "http-forever": Record(), "grpc": Record()}
    records |= {kind: Record() for kind, count in (("sse", args.sse), ("grpc-stream", args.grpc_stream)) if count}
    clients: list[tuple[Any, Record, tuple[Any, ...]]] = [
        *[(http_client, records["http"], (args.http_renew_seconds,)) for _ in range(args.http)],
        *[(http_client, records["http-forever"], (0.0,)) for _ in range(args.http_forever)],
        *[(grpc_client, records["grpc"], ()) for _ in range(args.grpc)],
        *[(http_client, records["sse"], (args.http_renew_seconds, generate_stream)) for _ in range(args.sse)],
        *[(grpc_stream_client, records["grpc-stream"], ()) for _ in range(args.grpc_stream)],
    ]
    threads = [
        threading.Thread(
            target=run,
            args=(args.host, args.model, args.rate, record, stop, index / len(clients), *extra),
            daemon=True,
        )
        for index, (run, record, extra) in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    while not stop.wait(1.0):
        write_atomically(args.out, {kind: record.as_dict() for kind, record in records.items()})
    for thread in threads:
        thread.join(TIMEOUT_SECONDS + 5)
    write_atomically(args.out, {kind: record.as_dict() for kind, record in records.items()} | {"stopped": True})


if __name__ == "__main__":
    main()
