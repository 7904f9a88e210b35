"""Reference autoscaling rules, one implementation for the cluster bench and the simulator.

Each rule is a small stateful object: the caller feeds it its signal at the rule's own period and
applies the replica count it returns. Nothing here does I/O.

- KpaRule: Knative's KPA on concurrency (in-flight requests at the client), 60 s stable window,
  6 s panic window, panic when the panic window wants at least twice the ready replicas, target
  0.7 in-flight requests per replica, evaluated every 2 s.
- HpaQueueRule: the HPA algorithm on average queue time per request (the rule of Triton's
  Kubernetes example): 15 s sync, tolerance 0.1, scale-up at most max(2x, +4) per sync, 300 s
  scale-down stabilization.
- ReactiveIdeal (simulator only): knows the true offered rate one second late and keeps every
  replica at or under 85% utilisation (the headroom floor); scales up at once, down after the
  need has been lower for a start delay.
- Clairvoyant (simulator only): knows the whole trace; sizes for the most any second needs
  between now and one start delay (plus the client's view lag) ahead, each replica at or under
  85% utilisation, so pods are ready before the load that needs them arrives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

UTILISATION = 0.85  # the reference policies size each replica for at most this busy fraction


def replicas_for(rate: float, capacity: float, utilisation: float = UTILISATION) -> int:
    """Fewest replicas that serve `rate` requests/s with each at most `utilisation` busy."""
    return max(1, math.ceil(rate / (capacity * utilisation) - 1e-9))


@dataclass
class KpaRule:
    max_replicas: int
    min_replicas: int = 1
    target_concurrency: float = 0.7
    stable_seconds: float = 60.0
    panic_seconds: float = 6.0
    panic_threshold: float = 2.0
    period: float = 2.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    panic_until: float = 0.0

    def decide(self, now: float, in_flight: float, current: int, ready: int) -> int:
        """Replicas to run, from the requests in flight now (sent, not answered)."""
        self.samples = [(t, c) for t, c in self.samples if now - t <= self.stable_seconds] + [(now, in_flight)]
        stable = sum(c for _, c in self.samples) / len(self.samples)
        panic_samples = [c for t, c in self.samples if now - t <= self.panic_seconds]
        panic = sum(panic_samples) / len(panic_samples)
        desired_stable = math.ceil(stable / self.target_concurrency)
        desired_panic = math.ceil(panic / self.target_concurrency)
        if desired_panic >= self.panic_threshold * max(1, ready):
            self.panic_until = now + self.stable_seconds
        # While panicking, scale on the short window and never down.
        desired = max(current, desired_panic) if now < self.panic_until else desired_stable
        return max(self.min_replicas, min(self.max_replicas, desired))


def queue_ms_since(previous: dict[str, tuple[float, float]], totals: Mapping[str, tuple[float, float]]) -> float | None:
    """Average queue time per request (ms) since the last call, over all pods, from each pod's
    cumulative (queue duration us, successes). `previous` is updated; a pod first seen counts from 0."""
    total_queue, total_requests = 0.0, 0.0
    for pod, (queue_us, success) in totals.items():
        before = previous.get(pod, (0.0, 0.0))
        previous[pod] = (queue_us, success)
        total_queue += queue_us - before[0]
        total_requests += success - before[1]
    return total_queue / total_requests / 1000 if total_requests > 0 else None


@dataclass
class HpaQueueRule:
    target_ms: float  # the latency budget minus the service time
    max_replicas: int
    min_replicas: int = 1
    tolerance: float = 0.1
    stabilization_seconds: float = 300.0
    period: float = 15.0
    recommendations: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now: float, queue_ms: float | None, current: int) -> int:
        """Replicas to run, from the average queue time since the last sync (None: no requests)."""
        if queue_ms is None:
            return current
        ratio = queue_ms / self.target_ms
        desired = current if abs(ratio - 1) <= self.tolerance else math.ceil(current * ratio)
        desired = min(desired, max(2 * current, current + 4), self.max_replicas)
        self.recommendations = [(t, r) for t, r in self.recommendations if now - t <= self.stabilization_seconds]
        self.recommendations.append((now, max(self.min_replicas, desired)))
        if desired < current:
            desired = max(r for _, r in self.recommendations)
        return max(self.min_replicas, min(self.max_replicas, desired))


@dataclass
class ReactiveIdeal:
    capacity: float  # requests/s one replica serves
    max_replicas: int
    hold_seconds: float  # scale down only after the need has been lower this long
    min_replicas: int = 1
    utilisation: float = UTILISATION
    delay: float = 1.0  # it knows the rate this late
    period: float = 1.0
    recent: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now: float, rate_at: Callable[[float], float]) -> int:
        need = replicas_for(rate_at(now - self.delay), self.capacity, self.utilisation)
        self.recent = [(t, r) for t, r in self.recent if now - t <= self.hold_seconds] + [(now, need)]
        return max(self.min_replicas, min(self.max_replicas, max(r for _, r in self.recent)))


@dataclass
class Clairvoyant:
    capacity: float
    max_replicas: int
    lead_seconds: float  # how far ahead a pod must be asked for to serve in time
    min_replicas: int = 1
    utilisation: float = UTILISATION
    period: float = 1.0

    # Each second's need, memoised by whole second (rate_at is per second, as a Trace's is): a
    # real-time week with a 300 s lead otherwise recomputes 301 needs every second, most of a
    # week-long simulation's time.
    _needs: list[int] = field(default_factory=list, repr=False)
    _rate_at: Callable[[float], float] | None = field(default=None, repr=False)

    def decide(self, now: float, rate_at: Callable[[float], float]) -> int:
        if rate_at != self._rate_at:  # a bound method is a new object at each access; == compares
            self._needs, self._rate_at = [], rate_at
        first = math.floor(now)  # `now + s` falls in second `first + s`
        last = first + math.ceil(self.lead_seconds)
        for second in range(len(self._needs), last + 1):
            self._needs.append(replicas_for(rate_at(second), self.capacity, self.utilisation))
        need = max(self._needs[first : last + 1])
        return max(self.min_replicas, min(self.max_replicas, need))
