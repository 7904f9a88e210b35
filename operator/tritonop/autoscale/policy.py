"""Pure autoscaling decision: (observation, spec, current replicas, history, now) -> replicas.

Replicas are sized from capacity, not from the latency quantile: Triton's p95 summary looks back
a minute, so it still shows a burst long after the queues have drained (it is kept for status and
display). Every evaluation (once a second) the policy reads, over a window of a few seconds:
demand (requests served plus the growth of the queues), each replica's capacity (learned from
the fraction of time its model instance was busy), and the longest pod queue (Triton queues per
pod: a backlog drains only on the pod that holds it). It wants the most of:
- steady: every replica at most UTILISATION busy at the measured demand, plus
  `spareReplicas` replicas on top, so a burst is served while new pods start (the only help
  available during a pod start, and the main lever at low load);
- drain: enough replicas that the longest queue drains within DRAIN_SECONDS, given that pod's
  round-robin share of the demand (drain rate = capacity - demand / replicas);
- sustain: while a scale-down is still settling, the replicas that served the highest recent need.
Scale-up is immediate and uncapped: pods start in parallel, and each second of a burst costs
requests. Scale-down waits for the stabilization window (the highest recommendation in it), then
removes half of the surplus at a time, at most once per window fraction, so recurring bursts
find most of their replicas still there.

Without a capacity estimate (no traffic yet, or a source without execution counters and no
latency near target), it falls back to latency: above target it scales in proportion to the
latency ratio (bounded, HPA-style); far below target it steps down one replica.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonop.api.spec import AutoscalingSpec

TOLERANCE = 0.1  # |observed/target - 1| within this: no change (the latency fallback, HPA's default)
MAX_UP_FACTOR = 3.0  # the latency fallback at most triples per evaluation (sizing has no cap)
FAR_BELOW = 0.5  # without a capacity estimate, scale down only under half the target
UTILISATION = 0.85  # size each replica for at most this busy fraction of its capacity at the demand
DRAIN_SECONDS = 5.0  # the longest pod queue should be gone this soon after new pods serve
SPARE_DECAY = 1.0  # spare replicas shrink as load grows: spare / (1 + load in replicas)
START_SECONDS = 10.0  # a new pod serves about this long after it is asked for (start + endpoints)
MIN_DRAIN_FRACTION = 0.1  # a pod drains at least this fraction of its capacity (else: max replicas)
DOWN_STEPS_PER_WINDOW = 3  # after the window, remove half the surplus at most this often per window
CAPACITY_SAMPLE_RATIO = 0.8  # latency at >= 80% of target: throughput is close to capacity
CAPACITY_SMOOTHING = 0.3  # weight of a new capacity sample (exponential moving average)
MIN_BUSY_FOR_CAPACITY = 0.2  # below this, busy-time estimates are too noisy to learn from


@dataclass(frozen=True)
class Observation:
    """What the metrics said over the last window, over ready replicas only."""

    latency_ms: float | None  # the spec's metric (p95/average/queue): display, and the fallback
    request_rate: float  # requests/s served by all ready replicas
    ready_replicas: int
    window_seconds: float
    average_ms: float | None = None  # mean latency over this window only (never stale)
    busy: float | None = None  # fraction of time the replicas' model instances were executing
    arrival_rate: float | None = None  # demand: served + queue growth (None: not measured)
    pending: float = 0.0  # requests queued in the servers now, all pods together
    longest_queue: float | None = None  # requests queued now on the most loaded pod (None: not measured)


@dataclass(frozen=True)
class History:
    """What the policy remembers between evaluations (kept in memory by the operator)."""

    # Recent (time, recommended replicas), only those that can still be a window's extreme: for
    # the scale-up window's minimum, values rising; for the scale-down window's maximum, values
    # falling (an entry followed by a lower / higher one can never be the min / max again). A
    # steady recommendation is one entry, not one per evaluation.
    up_candidates: tuple[tuple[float, int], ...] = ()
    down_candidates: tuple[tuple[float, int], ...] = ()
    capacity_per_replica: float | None = None  # learned requests/s one replica serves when always busy
    last_scale_up: float = float("-inf")
    last_scale_down: float = float("-inf")


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
    elif observation.busy is None:
        # Without execution counters: near or over target the replicas are (close to) saturated.
        latency = observation.average_ms if observation.average_ms is not None else observation.latency_ms
        if latency is not None and latency >= CAPACITY_SAMPLE_RATIO * target_ms:
            sample = per_replica
    if sample is None:
        return capacity
    return sample if capacity is None else (1 - CAPACITY_SMOOTHING) * capacity + CAPACITY_SMOOTHING * sample


def _longest_queue(observation: Observation) -> float:
    """The most loaded pod's queue; a source that only knows the total assumes an even split."""
    if observation.longest_queue is not None:
        return observation.longest_queue
    return observation.pending / max(1, observation.ready_replicas)


def sized(observation: Observation, spec: AutoscalingSpec, capacity: float) -> tuple[int, str]:
    """Replicas the demand and the longest queue need, from a known capacity per replica."""
    demand = observation.arrival_rate if observation.arrival_rate is not None else observation.request_rate
    if observation.arrival_rate is None:
        # Served rate only (e.g. Prometheus): a growing queue is demand it does not show.
        demand += observation.pending / DRAIN_SECONDS
    # Every replica at most UTILISATION busy, and at least spareReplicas replicas' worth of
    # capacity idle: what serves a burst while new pods start.
    steady = math.ceil(demand / (capacity * UTILISATION) - 1e-9)
    load = demand / capacity
    spare = math.ceil(load + spec.spare_replicas / (1 + SPARE_DECAY * load) - 1e-9)
    wanted = max(1, steady, spare)
    reason = f"{demand:.1f} req/s at {capacity:.1f} req/s per replica, {spec.spare_replicas} spare"
    longest = _longest_queue(observation)
    ready = max(1, observation.ready_replicas)
    # Per pod, while no new pod serves (round robin); past UTILISATION a queue grows in bursts.
    growth = demand / ready - capacity * UTILISATION
    if growth > 0:
        # New pods serve only after they start: the backlog they meet is bigger than today's.
        longest += growth * START_SECONDS
    if longest >= 1:
        # The pod holding the backlog drains at its capacity minus its round-robin share.
        drain_rate = capacity - longest / DRAIN_SECONDS
        if drain_rate < MIN_DRAIN_FRACTION * capacity:
            drain = spec.max_replicas
        else:
            drain = math.ceil(demand / drain_rate - 1e-9)
        if drain > wanted:
            wanted = drain
            reason += f"; longest queue {longest:.0f} drains within {DRAIN_SECONDS:.0f}s"
    return wanted, reason


def recommend(observation: Observation, spec: AutoscalingSpec, current: int, capacity: float | None) -> tuple[int, str]:
    """Replicas wanted right now, before stabilization, and why."""
    target = spec.target_latency_ms
    metric = spec.metric
    if observation.ready_replicas == 0:
        return current, "no ready replica to measure"
    if capacity:
        if observation.request_rate == 0 and observation.pending == 0 and not observation.arrival_rate:
            return spec.min_replicas, "no traffic"
        wanted, reason = sized(observation, spec, capacity)
        if observation.latency_ms is not None:
            relation = ">" if observation.latency_ms > target else "<="
            reason = f"{metric} {observation.latency_ms:.0f}ms {relation} target {target}ms; {reason}"
        if wanted > current and current > observation.ready_replicas:
            reason += f"; {current - observation.ready_replicas} replica(s) still starting"
        return wanted, reason
    # No capacity known: latency alone, the freshest available.
    if observation.latency_ms is None and observation.average_ms is None:
        if observation.request_rate == 0:
            return spec.min_replicas, "no traffic"
        return current, f"no {metric} latency measured"
    observed = observation.average_ms if observation.average_ms is not None else observation.latency_ms
    assert observed is not None
    label = "window mean" if observation.average_ms is not None else metric
    ratio = observed / target
    base = observation.ready_replicas
    if ratio > 1 + TOLERANCE:
        wanted = math.ceil(base * min(ratio, MAX_UP_FACTOR))
        reason = f"{label} {observed:.0f}ms > target {target}ms"
        if current > base:
            # Replicas asked for earlier are still starting: only a bigger need adds any.
            return max(current, wanted), f"{reason}; {current - base} replica(s) still starting"
        return max(current, wanted, base + 1), reason
    if ratio < FAR_BELOW:
        return current - 1, f"{label} {observed:.0f}ms far below target {target}ms"
    return current, f"{label} {observed:.0f}ms below or near target {target}ms"


def decide(observation: Observation, spec: AutoscalingSpec, current: int, history: History, now: float) -> Decision:
    capacity = _learn_capacity(observation, spec.target_latency_ms, history)
    raw, reason = recommend(observation, spec, current, capacity)
    raw = max(spec.min_replicas, min(spec.max_replicas, raw))
    up = _window(history.up_candidates, now, raw, spec.scale_up_stabilization_seconds, keep=lambda r: r < raw)
    down = _window(history.down_candidates, now, raw, spec.scale_down_stabilization_seconds, keep=lambda r: r > raw)
    replicas = current
    last_down = history.last_scale_down
    if raw > current:
        replicas = max(current, up[0][1])  # the lowest recommendation of the window
    elif raw < current:
        held = min(current, down[0][1])  # the highest
        if held == current:
            reason += f" (held by the {spec.scale_down_stabilization_seconds}s scale-down window)"
        else:
            step_every = spec.scale_down_stabilization_seconds / DOWN_STEPS_PER_WINDOW
            if now - max(last_down, history.last_scale_up) < step_every:
                reason += f" (the last scale-down was under {step_every:.0f}s ago)"
            else:
                # Halve the surplus: a recurring burst finds most of its replicas still there.
                replicas = current - math.ceil((current - held) / 2)
                last_down = now
    # A spec change (min/max) applies at once, whatever the windows say.
    replicas = max(spec.min_replicas, min(spec.max_replicas, replicas))
    direction = "up" if replicas > current else "down" if replicas < current else "none"
    last_up = now if direction == "up" else history.last_scale_up
    if direction == "down":
        last_down = now
    return Decision(replicas, raw, direction, reason, History(up, down, capacity, last_up, last_down))


def _window(
    candidates: tuple[tuple[float, int], ...], now: float, raw: int, seconds: float, keep: Callable[[int], bool]
) -> tuple[tuple[float, int], ...]:
    """A sliding window's extreme candidates after adding (now, raw): the expired dropped from
    the front, the ones raw dominates from the back; the first entry is the window's extreme."""
    live = [(t, r) for t, r in candidates if now - t <= seconds]
    while live and not keep(live[-1][1]):
        live.pop()
    return (*live, (now, raw))
