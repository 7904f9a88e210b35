"""An open-loop inference load generator for tests, benchmarks and demos.

Requests arrive at a set rate (Poisson or evenly spaced) whatever the servers' latency, like
real clients; each goes to the next ready pod IP (round robin, refreshed by the caller's
function; or a random one, as kube-proxy picks a Service's backend), so load follows the
replicas as they come and go. Bounded: it stops itself after
`max_seconds`, and every request has a timeout.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()


@dataclass
class LoadStats:
    sent: int = 0
    failed: int = 0
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)  # (time sent, latency)
    versions: Counter[int] = field(default_factory=Counter)
    served_by: Counter[tuple[str, int]] = field(default_factory=Counter)  # (pod IP, version) -> answers
    errors: Counter[str] = field(default_factory=Counter)

    def percentile(self, q: float, since: float = 0.0) -> float | None:
        values = sorted(latency for at, latency in self.latencies_ms if at >= since)
        if not values:
            return None
        return values[min(len(values) - 1, int(q * len(values)))]


class LoadGenerator:
    def __init__(
        self,
        targets: Callable[[], list[str]],
        model: str,
        rate: float,
        *,
        poisson: bool = True,
        timeout: float = 15.0,
        max_seconds: float = 600.0,
        refresh_seconds: float = 1.0,
        max_in_flight: int = 128,
        schedule: list[float] | None = None,
        routing: str = "round-robin",
    ) -> None:
        self.targets_fn = targets
        self.model = model
        self.rate = rate
        self.poisson = poisson
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.refresh_seconds = refresh_seconds
        self.stats = LoadStats()
        # Seeded arrivals (seconds after start(), e.g. bench/traces.arrivals): replaces `rate`,
        # so that every policy of a paired benchmark sees exactly the same request times.
        self.schedule = schedule
        if routing not in ("round-robin", "random"):
            raise ValueError(f"routing must be round-robin or random, not {routing!r}")
        self.routing = routing
        self.started_at = 0.0
        self._targets: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # At most this many requests in flight, like an HTTP client's connection pool: later
        # arrivals wait at the client, and that wait counts in their latency (see _send).
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="load")
        self._threads: list[threading.Thread] = []
        self._next = 0
        self.in_flight = 0  # requests sent and not answered yet (Knative's concurrency signal)

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._refresh()
        for target in (self._arrivals, self._refresher):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> LoadStats:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=True)
        return self.stats

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    def _refresh(self) -> None:
        try:
            targets = self.targets_fn()
        except Exception:  # keep the last known targets through an API hiccup
            return
        with self._lock:
            self._targets = targets

    def _refresher(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self._refresh()

    def _arrivals(self) -> None:
        if self.schedule is not None:
            self._scheduled(self.schedule)
            return
        deadline = time.monotonic() + self.max_seconds
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.rate <= 0:
                self._stop.wait(0.1)
                next_at = time.monotonic()
                continue
            gap = random.expovariate(self.rate) if self.poisson else 1.0 / self.rate
            next_at += gap
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            with self._lock:
                if not self._targets:
                    continue
                target = self._pick()
            self._pool.submit(self._one, target, next_at)

    def _pick(self) -> str:
        """The pod for the next request (the lock is held)."""
        if self.routing == "random":
            return random.choice(self._targets)
        target = self._targets[self._next % len(self._targets)]
        self._next += 1
        return target

    def _scheduled(self, schedule: list[float]) -> None:
        for offset in schedule:
            if offset > self.max_seconds:
                return
            due = self.started_at + offset
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            with self._lock:
                if not self._targets:
                    # No ready pod: the request is refused, as a client without endpoints sees it.
                    self.stats.sent += 1
                    self.stats.failed += 1
                    self.stats.errors["no ready pod"] += 1
                    continue
                target = self._pick()
            self._pool.submit(self._one, target, due)

    def _one(self, ip: str, due: float) -> None:
        with self._lock:
            self.in_flight += 1
        try:
            self._send(ip, due)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _send(self, ip: str, due: float) -> None:
        # Latency counts from when the request was due, not from when a thread took it up (no
        # coordinated omission: time spent waiting at the client is the user's time too).
        sent_at = due
        request = urllib.request.Request(
            f"http://{ip}:8000/v2/models/{self.model}/infer",
            data=BODY,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                outputs = {o["name"]: o["data"] for o in json.load(response)["outputs"]}
            latency = (time.monotonic() - sent_at) * 1000
            with self._lock:
                self.stats.sent += 1
                self.stats.latencies_ms.append((sent_at, latency))
                if "VERSION" in outputs:
                    self.stats.versions[int(outputs["VERSION"][0])] += 1
                    self.stats.served_by[(ip, int(outputs["VERSION"][0]))] += 1
        except Exception as error:
            with self._lock:
                self.stats.sent += 1
                self.stats.failed += 1
                self.stats.errors[f"{ip}: {type(error).__name__}: {error}"[:200]] += 1
