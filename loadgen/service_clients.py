"""Clients of a model's Service as users run them: HTTP clients that keep one connection open
(keep-alive) and gRPC clients that keep one channel, each sending at a steady rate to the
Service's address, so kube-proxy picks a pod per connection, not per request.

Run as a program inside the clients' network namespace of the real node:

    python -m loadgen.service_clients HOST MODEL --http 6 --grpc 2 --rate 4 --out FILE

Every second it rewrites FILE (atomically) with what each kind of client saw so far: requests,
failures (with the first error texts) and, per second, how many answers came from each version
(the model's `model_version` in the answer). SIGTERM or SIGINT stops it after a last write.
A failed request is counted, never retried: an HTTP client reconnects for its next request, as
Python's requests or Go's net/http do for a POST, and a gRPC channel reconnects on its own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .generator import BODY

TIMEOUT_SECONDS = 15.0


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


def http_client(host: str, model: str, rate: float, record: Record, stop: threading.Event, offset: float) -> None:
    connection: http.client.HTTPConnection | None = None
    for _ in paced(rate, stop, offset):
        second = int(time.time())
        try:
            if connection is None:
                connection = http.client.HTTPConnection(host, 8000, timeout=TIMEOUT_SECONDS)
            connection.request("POST", f"/v2/models/{model}/infer", BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status} {payload[:120]!r}")
            record.answered(second, str(json.loads(payload)["model_version"]))
            if response.will_close:
                connection.close()
                connection = None
        except Exception as error:
            record.failure(second, error)
            if connection is not None:
                connection.close()
            connection = None


def grpc_client(host: str, model: str, rate: float, record: Record, stop: threading.Event, offset: float) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{host}:8001")
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


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host", help="the Service's ClusterIP")
    parser.add_argument("model")
    parser.add_argument("--http", type=int, default=6, help="HTTP clients, one kept-alive connection each")
    parser.add_argument("--grpc", type=int, default=2, help="gRPC clients, one channel each")
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s per client")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    records = {"http": Record(), "grpc": Record()}
    clients = [(http_client, records["http"]) for _ in range(args.http)]
    clients += [(grpc_client, records["grpc"]) for _ in range(args.grpc)]
    threads = [
        threading.Thread(
            target=run, args=(args.host, args.model, args.rate, record, stop, index / len(clients)), daemon=True
        )
        for index, (run, record) in enumerate(clients)
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
