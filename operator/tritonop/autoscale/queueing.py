"""Pure: how busy a replica may run for the spec's latency target (a queueing model per pod).

Triton queues per pod, and a pod's model instances drain that queue at the pod's capacity mu
(requests/s when always busy; learned by the policy). Each pod is treated as one G/G/1 server
with Kingman's approximation: the mean wait is

    Wq = rho / (1 - rho) * V / mu,      V = (ca^2 + cs^2) / 2

where V, the variability of arrivals and service, is learned online from the deployment's own
windows (measured queue time at a measured busy fraction; see `variability_sample`): Poisson
arrivals at a fixed-time model give V = 1/2, round robin over n pods makes arrivals more regular
(ca^2 ~ 1/n), dynamic batching and instance groups change it again, so it is measured rather
than assumed. The wait's tail is taken as exponential (heavy-traffic limit): a request waits at
all with probability rho, and then for a mean of V / (mu (1 - rho)), so the q-quantile of the
wait is V / (mu (1 - rho)) * ln(rho / (1 - q)).

Per metric, the latency the target bounds:
- queue:   Wq <= target
- average: S + Wq <= target                  (S: the measured compute time per request)
- p95:     S + wait_95 <= target
- p99:     S + wait_99 <= target
The allowed busy fraction is the largest rho that meets it, clamped to [MIN, MAX]: a looser target
lets each replica run busier (fewer replicas), a tighter one keeps them idler (more replicas).
A target at or below S cannot be met by any number of replicas: that is reported, and the
replicas are sized for the best latency worth buying instead (UNREACHABLE_SLACK over S).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_UTILISATION = 0.95  # even with an infinite target: a pod always busy has an unbounded queue
MIN_UTILISATION = 0.1  # a target this close to the service time: at most 10% busy each
UNREACHABLE_SLACK = 0.5  # target <= S: size as if the target were 1.5 S (the queueing part halved)
DEFAULT_VARIABILITY = 1.0  # V before any is learned: M/M/1 (conservative for fixed-time models)
VARIABILITY_BOUNDS = (0.05, 4.0)
QUANTILES = {"p95": 0.95, "p99": 0.99}  # the percentile metrics
# A burst is noticed a policy window after it starts, and a pod that turned Ready gets traffic
# once the endpoints reach the clients: the backlog grows this much longer than the pod's start.
REACTION_SECONDS = 5.0


@dataclass(frozen=True)
class Utilisation:
    """How busy each replica may run, and whether the target can be met at all."""

    rho: float
    reachable: bool = True
    floor_ms: float | None = None  # the latency one idle replica delivers for this metric


def wait_ms(metric: str, rho: float, variability: float, capacity: float) -> float:
    """The waiting part of the metric at busy fraction rho (ms)."""
    if rho <= 0:
        return 0.0
    scale_ms = 1000.0 * variability / (capacity * (1.0 - rho))
    if (quantile := QUANTILES.get(metric)) is not None:
        return scale_ms * math.log(rho / (1 - quantile)) if rho > 1 - quantile else 0.0
    return rho * scale_ms  # the mean wait (average and queue)


def latency_ms(metric: str, rho: float, service_ms: float, variability: float, capacity: float) -> float:
    """The metric's value at busy fraction rho: the wait, plus the service itself except for queue."""
    floor = 0.0 if metric == "queue" else service_ms
    return floor + wait_ms(metric, rho, variability, capacity)


def allowed_utilisation(
    metric: str, target_ms: float, service_ms: float, capacity: float, variability: float = DEFAULT_VARIABILITY
) -> Utilisation:
    """The busiest a replica may run with the metric at or under target (bisection: the metric
    grows with rho)."""
    floor = 0.0 if metric == "queue" else service_ms
    reachable = target_ms > floor
    goal = target_ms if reachable else floor + UNREACHABLE_SLACK * max(service_ms, 1.0)
    budget = goal - floor

    def fits(rho: float) -> bool:
        return wait_ms(metric, rho, variability, capacity) <= budget

    if fits(MAX_UTILISATION):
        return Utilisation(MAX_UTILISATION, reachable, floor)
    low, high = 0.0, MAX_UTILISATION
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return Utilisation(max(MIN_UTILISATION, low), reachable, floor)


def variability_sample(queue_ms: float, busy: float, capacity: float) -> float:
    """V that Kingman's formula needs to explain a measured mean queue time at a measured busy
    fraction (clamped to VARIABILITY_BOUNDS)."""
    value = queue_ms / 1000.0 * capacity * (1.0 - busy) / busy
    low, high = VARIABILITY_BOUNDS
    return min(high, max(low, value))


def burst_allowance(metric: str, target_ms: float, floor_ms: float, lead_s: float) -> float:
    """How far past its capacity a replica may be driven until new pods serve (the lead time, a
    new pod's start, plus the reaction time) before the queue that builds breaks the target: a
    backlog of (load - 1) * that many seconds of work waits at most the target's queueing budget.
    1: none (a tight target or a long start)."""
    budget_s = max(0.0, target_ms - floor_ms) / 1000.0
    return 1.0 + budget_s / (max(lead_s, 0.0) + REACTION_SECONDS)
