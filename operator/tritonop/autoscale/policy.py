"""Pure autoscaling decision: (observation, spec, current replicas, history, now) -> replicas.

Latency does not fall linearly with replicas (a server's latency has a floor: its own compute
time), so the rule combines two signals:
- above target: scale up in proportion to how far latency is over target (HPA-style, with a
  tolerance band and a bounded step), so a breach is answered in one evaluation;
- below target: scale down only as far as measured throughput allows. Each replica's capacity is
  learned from observation (requests/s per ready replica divided by the fraction of time its model
  instance was busy executing, from Triton's execution counters); the recommendation keeps every
  replica under a headroom fraction of that capacity. With no capacity
  learned yet, it steps down one replica at a time, and only when latency is far below target.
Stabilization windows (HPA semantics) then pick the lowest recent recommendation for scale-up
and the highest for scale-down, so a steady load does not flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tritonop.api.spec import AutoscalingSpec

TOLERANCE = 0.1  # |observed/target - 1| within this: no change (HPA's default)
MAX_UP_FACTOR = 3.0  # at most triple per evaluation (plus one)
MAX_DOWN_FRACTION = 0.5  # at most halve per evaluation
HEADROOM = 0.75  # keep each replica at or under 75% of its learned capacity
FAR_BELOW = 0.5  # without a capacity estimate, scale down only under half the target
CAPACITY_SAMPLE_RATIO = 0.8  # latency at >= 80% of target: throughput is close to capacity
CAPACITY_SMOOTHING = 0.3  # weight of a new capacity sample (exponential moving average)
MIN_BUSY_FOR_CAPACITY = 0.2  # below this, busy-time estimates are too noisy to learn from
DRAIN_SECONDS = 10.0  # a backlog should be gone this soon after a scale-up
# Triton's summary quantiles (p95) cover about the last 60 s, so after a scale-up they still show
# the overload for a while. Within this settle time, only a fresh breach of the window's average
# latency (exact, from counter deltas) may add more replicas.
SETTLE_SECONDS = 60.0


@dataclass(frozen=True)
class Observation:
    """What the metrics said over the last window, over ready replicas only."""

    latency_ms: float | None  # the chosen metric (p95/average/queue); None: no traffic measured
    request_rate: float  # requests/s over all ready replicas
    ready_replicas: int
    window_seconds: float
    average_ms: float | None = None  # mean latency over this window only (never stale)
    busy: float | None = None  # fraction of time the replicas' model instances were executing
    arrival_rate: float | None = None  # demand: served + queue growth (None: not measured)
    pending: float = 0.0  # requests queued in the servers now


@dataclass(frozen=True)
class History:
    """What the policy remembers between evaluations (kept in memory by the operator)."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (time, recommended replicas)
    capacity_per_replica: float | None = None  # learned requests/s one replica sustains near target
    last_scale_up: float = float("-inf")


@dataclass(frozen=True)
class Decision:
    replicas: int
    recommendation: int
    direction: str  # "up", "down" or "none"
    reason: str
    history: History = field(default_factory=History)


def _learn_capacity(observation: Observation, target_ms: int, history: History) -> float | None:
    capacity = history.capacity_per_replica
    if observation.ready_replicas <= 0 or observation.request_rate <= 0:
        return capacity
    per_replica = observation.request_rate / observation.ready_replicas
    sample: float | None = None
    if observation.busy is not None and observation.busy >= MIN_BUSY_FOR_CAPACITY:
        # Throughput over busy time: what a replica would serve if it never idled.
        sample = per_replica / min(observation.busy, 1.0)
    else:
        # Without execution counters: near or over target the replicas are (close to) saturated.
        latency = observation.average_ms if observation.average_ms is not None else observation.latency_ms
        if latency is not None and latency >= CAPACITY_SAMPLE_RATIO * target_ms:
            sample = per_replica
    if sample is None:
        return capacity
    return sample if capacity is None else (1 - CAPACITY_SMOOTHING) * capacity + CAPACITY_SMOOTHING * sample


def recommend(observation: Observation, spec: AutoscalingSpec, current: int, capacity: float | None) -> tuple[int, str]:
    """Replicas wanted right now, before stabilization, and why."""
    target = spec.target_latency_ms
    metric = spec.metric
    if observation.ready_replicas == 0:
        return current, "no ready replica to measure"
    if observation.latency_ms is None:
        if observation.request_rate == 0:
            return spec.min_replicas, "no traffic"
        return current, f"no {metric} latency measured"
    observed = observation.latency_ms
    ratio = observed / target
    base = observation.ready_replicas
    demand = observation.arrival_rate if observation.arrival_rate is not None else observation.request_rate
    if ratio > 1 + TOLERANCE:
        sized = bool(capacity) and observation.arrival_rate is not None
        if capacity and observation.arrival_rate is not None:
            # Size for the demand plus draining what is queued, from the learned capacity: this
            # knows how many replicas are needed, where the latency ratio only knows "more".
            needed = (demand + observation.pending / DRAIN_SECONDS) / (capacity * HEADROOM)
            wanted = min(math.ceil(needed), math.ceil(base * MAX_UP_FACTOR))
            reason = (
                f"{metric} {observed:.0f}ms > target {target}ms; {demand:.0f} req/s + {observation.pending:.0f} queued"
            )
        else:
            wanted = math.ceil(base * min(ratio, MAX_UP_FACTOR))
            reason = f"{metric} {observed:.0f}ms > target {target}ms"
        if current > base:
            # Replicas asked for earlier are still starting: the breach they will absorb is no
            # reason for more. Only a bigger need than `current` adds any.
            return max(current, wanted), f"{reason}; {current - base} replica(s) still starting"
        if sized:
            # Trust the sizing: a breach that demand and backlog do not explain is a latency
            # summary still remembering an overload (Triton's p95 looks back a minute), not a
            # reason for one more replica.
            return max(current, wanted), reason
        return max(current, wanted, base + 1), reason
    if ratio < 1 - TOLERANCE:
        if capacity:
            wanted = math.ceil(demand / (capacity * HEADROOM))
            floor = math.ceil(current * (1 - MAX_DOWN_FRACTION))
            wanted = min(current, max(wanted, floor, 1))
            return wanted, (
                f"{metric} {observed:.0f}ms < target {target}ms; {demand:.0f} req/s needs "
                f"{wanted} at {capacity:.0f} req/s per replica"
            )
        if ratio < FAR_BELOW:
            return current - 1, f"{metric} {observed:.0f}ms far below target {target}ms"
        return current, f"{metric} {observed:.0f}ms below target {target}ms"
    return current, f"{metric} {observed:.0f}ms within {TOLERANCE:.0%} of target {target}ms"


def decide(observation: Observation, spec: AutoscalingSpec, current: int, history: History, now: float) -> Decision:
    capacity = _learn_capacity(observation, spec.target_latency_ms, history)
    raw, reason = recommend(observation, spec, current, capacity)
    settling = now - history.last_scale_up < SETTLE_SECONDS
    fresh = observation.average_ms
    if raw > current and settling and (fresh is None or fresh <= spec.target_latency_ms):
        # The breach may be the quantile window remembering the overload the last scale-up fixed.
        raw, reason = current, f"{reason}, but the last scale-up is still settling (window mean {fresh or 0:.0f}ms)"
    raw = max(spec.min_replicas, min(spec.max_replicas, raw))
    horizon = max(spec.scale_up_stabilization_seconds, spec.scale_down_stabilization_seconds)
    recent = (*((t, r) for t, r in history.recommendations if now - t <= horizon), (now, raw))
    up_window = [r for t, r in recent if now - t <= spec.scale_up_stabilization_seconds]
    down_window = [r for t, r in recent if now - t <= spec.scale_down_stabilization_seconds]
    replicas = current
    if raw > current:
        replicas = max(current, min(up_window))
    elif raw < current:
        replicas = min(current, max(down_window))
        if replicas == current:
            reason += f" (held by the {spec.scale_down_stabilization_seconds}s scale-down window)"
    # A spec change (min/max) applies at once, whatever the windows say.
    replicas = max(spec.min_replicas, min(spec.max_replicas, replicas))
    direction = "up" if replicas > current else "down" if replicas < current else "none"
    last_up = now if direction == "up" else history.last_scale_up
    return Decision(replicas, raw, direction, reason, History(recent, capacity, last_up))
