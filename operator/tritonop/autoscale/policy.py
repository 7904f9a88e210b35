"""Pure autoscaling decision: (observation, spec, current replicas, history, now) -> replicas.

Replicas are sized from capacity, not from the latency quantile: Triton's p95 and p99 summaries
look back a minute, so they still show a burst long after the queues have drained (they are kept
for status and display). Every evaluation (once a second) the policy reads, over a window of a few
seconds: demand (requests served plus the growth of the queues), each replica's capacity (learned from
the fraction of time its model instance was busy), the compute time per request, the queue time
per request, and the longest pod queue (Triton queues per pod: a backlog drains only on the pod
that holds it).

The latency target decides how busy each replica may run (queueing.py: a G/G/1 model per pod
whose variability is learned from the deployment's own windows): a looser target runs replicas
busier and costs fewer, a tighter one buys more, and a target no replica can meet (at or below
the service time) is reported and sized for the best latency worth buying. The policy wants the
most of:
- steady: the demand now, every replica at the target's busy fraction;
- ahead: the most demand expected over the lead time (a new pod's measured start: forecast.py's
  trend and daily/weekly profile), at the same busy fraction: pods asked for now serve only then;
- burst: that peak plus headroom for the forecast's own measured error, where each replica may
  run past the target's busy fraction by what the target's queueing budget absorbs for one lead
  time (a loose target lets a burst wait in the queue, a tight one needs spare replicas);
- spare (only when `spareReplicas` is set): at least that many replicas' worth idle, a floor;
- drain: enough replicas that the longest queue drains within DRAIN_SECONDS, given that pod's
  round-robin share of the demand (drain rate = capacity - demand / replicas);
- sustain: while a scale-down is still settling, the replicas that served the highest recent need.
Scale-up is immediate and uncapped: pods start in parallel, and each second of a burst costs
requests. Scale-down waits for the stabilization window (the highest recommendation in it), then
removes half of the surplus at a time, at most once per window fraction, so recurring bursts
find most of their replicas still there; capacity given back takes a lead time to return, so the
"ahead" term keeps what the forecast needs within one lead time.

Without a capacity estimate (no traffic yet, or a source without execution counters and no
latency near target), it falls back to the spec's metric itself (p95 or p99 from Triton's summary,
or the window's average or queue time): above target it scales in proportion to the ratio (bounded,
HPA-style); far below target, or within it with replicas too idle to learn capacity from, it steps
down one replica.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tritonop.api.spec import AutoscalingSpec
from tritonop.autoscale.forecast import Forecast, LeadTime
from tritonop.autoscale.metrics import IDLE_SECONDS
from tritonop.autoscale.queueing import (
    DEFAULT_VARIABILITY,
    Utilisation,
    allowed_utilisation,
    burst_allowance,
    variability_sample,
)

TOLERANCE = 0.1  # |observed/target - 1| within this: no change (the latency fallback, HPA's default)
MAX_UP_FACTOR = 3.0  # the latency fallback at most triples per evaluation (sizing has no cap)
FAR_BELOW = 0.5  # without a capacity estimate, scale down only under half the target
DRAIN_SECONDS = 5.0  # the longest pod queue should be gone this soon after new pods serve
WARM_UP_SPARE = 3.0  # replicas of reserve while the bursts are not known yet (the old default spareReplicas)
SPARE_DECAY = 1.0  # spare replicas shrink as load grows: spare / (1 + load in replicas)
GROWTH_UTILISATION = 0.85  # the drain term: a pod busier than this builds a backlog in bursts
START_SECONDS = 10.0  # the backlog the drain term plans for grows this long before new pods help
MIN_DRAIN_FRACTION = 0.1  # a pod drains at least this fraction of its capacity (else: max replicas)
DOWN_STEPS_PER_WINDOW = 3  # after the window, remove half the surplus at most this often per window
CAPACITY_SAMPLE_RATIO = 0.8  # latency at >= 80% of target: throughput is close to capacity
CAPACITY_SMOOTHING = 0.3  # weight of a new capacity sample (exponential moving average)
MIN_BUSY_FOR_CAPACITY = 0.2  # below this, busy-time estimates are too noisy to learn from
SERVICE_SMOOTHING = 0.2  # weight of a new compute-time sample
# V is the mean of the last this many samples (one per steady window, every second; each within
# VARIABILITY_BOUNDS). The mean, not the median: Kingman's wait is linear in V, and the windows
# that catch a second-scale burst are where requests wait (a median sized recorded bursty traffic,
# the Azure LLM 2023 conversation trace, for fewer than 99% within a p99 target).
VARIABILITY_SAMPLES = 120
VARIABILITY_SETTLE_SECONDS = 15.0  # after a scale-up, windows show the backlog draining: not learned from
VARIABILITY_BUSY = (0.2, 0.97)  # learn V where queueing dominates fixed overheads and is not runaway
# Until V is first learned, windows from FIRST_VARIABILITY_BUSY busy count too, and replicas run at
# least LEARNING_UTILISATION busy (twice that, so that pods of any whole number of replicas, 2 or
# more, are busy enough): the prior's own sizing (V = 1, M/M/1) must not keep every pod too idle
# to learn V (at a tight p99 target it held maxReplicas for as long as the load stayed low).
FIRST_VARIABILITY_BUSY = 0.1
LEARNING_UTILISATION = 2 * FIRST_VARIABILITY_BUSY
STEADY_TOLERANCE = 0.2  # learn V only while demand and service agree within this (no transient)
MIN_REQUESTS_FOR_VARIABILITY = 20.0  # requests in the window


@dataclass(frozen=True)
class Observation:
    """What the metrics said over the last window, over ready replicas only."""

    latency_ms: float | None  # the spec's metric (p95/p99/average/queue): display, and the fallback
    request_rate: float  # requests/s served by all ready replicas
    ready_replicas: int
    window_seconds: float
    average_ms: float | None = None  # mean latency over this window only (never stale)
    busy: float | None = None  # fraction of time the replicas' model instances were executing
    arrival_rate: float | None = None  # demand: served + queue growth (None: not measured)
    pending: float = 0.0  # requests queued in the servers now, all pods together
    longest_queue: float | None = None  # requests queued now on the most loaded pod (None: not measured)
    queue_ms: float | None = None  # mean queue time per request over this window
    service_ms: float | None = None  # mean compute time per request over this window
    wall_time: float | None = None  # seconds since the epoch (UTC): where in the day and week now is
    idle_replicas: int = 0  # ready replicas that got no request for metrics.IDLE_SECONDS


@dataclass(frozen=True)
class History:
    """What the policy remembers between evaluations (kept in memory by the operator; the learned
    part is also written to status, so a restarted operator starts from it)."""

    # Recent (time, recommended replicas), only those that can still be a window's extreme: for
    # the scale-up window's minimum, values rising; for the scale-down window's maximum, values
    # falling (an entry followed by a lower / higher one can never be the min / max again). A
    # steady recommendation is one entry, not one per evaluation.
    up_candidates: tuple[tuple[float, int], ...] = ()
    down_candidates: tuple[tuple[float, int], ...] = ()
    capacity_per_replica: float | None = None  # learned requests/s one replica serves when always busy
    last_scale_up: float = float("-inf")
    last_scale_down: float = float("-inf")
    service_ms: float | None = None  # learned compute time per request
    variability: float | None = None  # learned V of the queueing model (queueing.py)
    lead: LeadTime = field(default_factory=LeadTime)
    forecast: Forecast = field(default_factory=Forecast)
    variability_samples: tuple[float, ...] = ()  # the recent V samples; `variability` is their mean
    # The last window in which replicas asked for were still starting while requests waited past
    # the target. Pods serve a pod start after the scale-up (minutes for large models): until
    # then, and while the backlog drains onto them, queue times are the shortfall's, not V's.
    last_short: float = float("-inf")


@dataclass(frozen=True)
class Decision:
    replicas: int
    recommendation: int
    direction: str  # "up", "down" or "none"
    reason: str
    history: History = field(default_factory=History)
    unreachable: str | None = None  # the target no replica can meet, and what is sized for instead
    utilisation: float | None = None  # the busy fraction the target allows (None: not sized)
    unused: str | None = None  # why a scale-up is held: replicas that clients do not reach


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


def _smoothed(old: float | None, sample: float | None, weight: float) -> float | None:
    if sample is None:
        return old
    return sample if old is None else (1 - weight) * old + weight * sample


def _learn_variability(
    observation: Observation, capacity: float | None, history: History, now: float
) -> tuple[float | None, tuple[float, ...]]:
    """V from steady windows (measured queue time at a measured busy fraction, Kingman): the
    mean of the recent samples, and the samples. Not right after a scale-up, nor while pods asked
    for are starting with the target missed, nor right after that: a backlog draining onto new
    pods looks steady (served ~ arriving) with queue times of the overload."""
    busy, queue = observation.busy, observation.queue_ms
    kept = (history.variability, history.variability_samples)
    if capacity is None or busy is None or queue is None or observation.ready_replicas <= 0:
        return kept
    if now - max(history.last_scale_up, history.last_short) < VARIABILITY_SETTLE_SECONDS:
        return kept
    low, high = VARIABILITY_BUSY
    if history.variability is None:
        low = FIRST_VARIABILITY_BUSY
    served = observation.request_rate
    arriving = observation.arrival_rate if observation.arrival_rate is not None else served
    steady = abs(arriving - served) <= STEADY_TOLERANCE * max(served, 1e-9)
    if not (low <= busy <= high) or not steady or served * observation.window_seconds < MIN_REQUESTS_FOR_VARIABILITY:
        return kept
    samples = (*history.variability_samples, variability_sample(queue, busy, capacity))[-VARIABILITY_SAMPLES:]
    return statistics.fmean(samples), samples


def demand_of(observation: Observation) -> float:
    """Requests/s arriving: measured, or (a source without it) served plus the queue's drain."""
    if observation.arrival_rate is not None:
        return observation.arrival_rate
    # Served rate only (e.g. Prometheus): a growing queue is demand it does not show.
    return observation.request_rate + observation.pending / DRAIN_SECONDS


def utilisation_for(spec: AutoscalingSpec, capacity: float, history: History) -> Utilisation:
    """The busy fraction the spec's metric and target allow, from what was learned (before V is
    learned: at least LEARNING_UTILISATION)."""
    service = history.service_ms if history.service_ms is not None else 1000.0 / capacity
    if history.variability is not None:
        return allowed_utilisation(spec.metric, spec.target_latency_ms, service, capacity, history.variability)
    prior = allowed_utilisation(spec.metric, spec.target_latency_ms, service, capacity, DEFAULT_VARIABILITY)
    return replace(prior, rho=max(prior.rho, LEARNING_UTILISATION))


def _longest_queue(observation: Observation) -> float:
    """The most loaded pod's queue; a source that only knows the total assumes an even split."""
    if observation.longest_queue is not None:
        return observation.longest_queue
    return observation.pending / max(1, observation.ready_replicas)


def sized(
    observation: Observation, spec: AutoscalingSpec, capacity: float, history: History, now: float
) -> tuple[int, str, Utilisation]:
    """Replicas the demand, its forecast and the longest queue need, from a known capacity."""
    demand = demand_of(observation)
    util = utilisation_for(spec, capacity, history)
    per_replica = capacity * util.rho
    lead = history.lead.seconds
    peak, source = history.forecast.peak(observation.wall_time, lead)
    peak = max(peak, demand)
    headroom = history.forecast.headroom(peak, lead)
    allowance = burst_allowance(spec.metric, spec.target_latency_ms, util.floor_ms or 0.0, lead)
    steady = math.ceil(demand / per_replica - 1e-9)
    ahead = math.ceil(peak / per_replica - 1e-9)
    burst = math.ceil((peak + headroom) / (per_replica * allowance) - 1e-9)
    wanted = max(1, steady, ahead, burst)
    reason = (
        f"{demand:.1f} req/s at {capacity:.1f} req/s per replica, {util.rho:.0%} busy for the target; "
        f"{source} {peak:.1f} req/s within {lead:.0f}s + {headroom:.1f} headroom"
    )
    floor: float | None = spec.spare_replicas
    if floor is None and history.forecast.warming(now):
        # Bursts not known yet: a reserve, as a user's spareReplicas would (a loose target lets
        # a burst wait in the queue: less of it).
        floor = WARM_UP_SPARE / allowance
    if floor is not None:
        # At least that many replicas' worth idle, shrinking with load.
        load = demand / capacity
        spare = math.ceil(load + floor / (1 + SPARE_DECAY * load) - 1e-9)
        if spare > wanted:
            wanted = spare
            reason += f"; {floor:.1f} spare" + ("" if spec.spare_replicas is not None else " while learning the bursts")
    longest = _longest_queue(observation)
    ready = max(1, observation.ready_replicas)
    # Per pod, while no new pod serves (round robin); past GROWTH_UTILISATION (or the target's
    # fraction, when looser) a queue grows in bursts.
    growth = demand / ready - capacity * max(GROWTH_UTILISATION, util.rho)
    if growth > 0:
        # New pods serve only after they start: the backlog they meet is bigger than today's.
        longest += growth * START_SECONDS
    # A loose target lets a backlog take longer to drain: as long as its queueing budget.
    drain_seconds = max(DRAIN_SECONDS, (spec.target_latency_ms - (util.floor_ms or 0.0)) / 1000.0)
    if longest >= 1:
        # The pod holding the backlog drains at its capacity minus its round-robin share.
        drain_rate = capacity - longest / drain_seconds
        if drain_rate < MIN_DRAIN_FRACTION * capacity:
            drain = spec.max_replicas
        else:
            drain = math.ceil(demand / drain_rate - 1e-9)
        if drain > wanted:
            wanted = drain
            reason += f"; longest queue {longest:.0f} drains within {drain_seconds:.0f}s"
    return wanted, reason, util


def _fallback_latency(observation: Observation, metric: str) -> float | None:
    """The spec's metric itself: Triton's p95 or p99 summary, or this window's mean or queue time."""
    if metric == "average":
        return observation.average_ms if observation.average_ms is not None else observation.latency_ms
    if metric == "queue":
        return observation.queue_ms if observation.queue_ms is not None else observation.latency_ms
    return observation.latency_ms


def recommend(
    observation: Observation,
    spec: AutoscalingSpec,
    current: int,
    history: History,
    now: float = 0.0,
    max_up_factor: float = MAX_UP_FACTOR,
) -> tuple[int, str, Utilisation | None]:
    """Replicas wanted right now, before stabilization, and why (history: already updated with
    this observation's learning)."""
    target = spec.target_latency_ms
    metric = spec.metric
    capacity = history.capacity_per_replica
    if observation.ready_replicas == 0:
        return current, "no ready replica to measure", None
    if capacity:
        if observation.request_rate == 0 and observation.pending == 0 and not observation.arrival_rate:
            return spec.min_replicas, "no traffic", None
        wanted, reason, util = sized(observation, spec, capacity, history, now)
        if observation.latency_ms is not None:
            relation = ">" if observation.latency_ms > target else "<="
            reason = f"{metric} {observation.latency_ms:.0f}ms {relation} target {target}ms; {reason}"
        if wanted > current and current > observation.ready_replicas:
            reason += f"; {current - observation.ready_replicas} replica(s) still starting"
        return wanted, reason, util
    # No capacity known: the spec's metric alone.
    observed = _fallback_latency(observation, metric)
    if observed is None:
        if observation.request_rate == 0:
            return spec.min_replicas, "no traffic", None
        return current, f"no {metric} latency measured", None
    ratio = observed / target
    base = observation.ready_replicas
    if ratio > 1 + TOLERANCE:
        wanted = math.ceil(base * min(ratio, max_up_factor))
        reason = f"{metric} {observed:.0f}ms > target {target}ms"
        if current > base:
            # Replicas asked for earlier are still starting: only a bigger need adds any.
            return max(current, wanted), f"{reason}; {current - base} replica(s) still starting", None
        return max(current, wanted, base + 1), reason, None
    if ratio < FAR_BELOW:
        return current - 1, f"{metric} {observed:.0f}ms far below target {target}ms", None
    if ratio <= 1 and observation.busy is not None and observation.busy < MIN_BUSY_FOR_CAPACITY:
        # Replicas this idle teach no capacity: kept, they would stay for good (a tight target
        # keeps the latency near it however many there are).
        return (
            current - 1,
            f"{metric} {observed:.0f}ms within target {target}ms, replicas {observation.busy:.0%} busy: "
            "too idle to learn capacity from",
            None,
        )
    return current, f"{metric} {observed:.0f}ms below or near target {target}ms", None


def learn(observation: Observation, spec: AutoscalingSpec, history: History, now: float, current: int) -> History:
    """Everything one observation teaches: capacity, service time, variability, the forecast.
    current: the replicas asked for now."""
    capacity = _learn_capacity(observation, spec.target_latency_ms, history)
    service = history.service_ms
    if observation.service_ms is not None and observation.request_rate > 0:
        service = _smoothed(service, observation.service_ms, SERVICE_SMOOTHING)
    mean_ms = observation.queue_ms if spec.metric == "queue" else observation.average_ms
    if observation.ready_replicas < current and (mean_ms or 0.0) > spec.target_latency_ms:
        history = replace(history, last_short=now)
    variability, variability_samples = _learn_variability(observation, capacity, history, now)
    forecast = history.forecast
    if observation.ready_replicas > 0:
        forecast = forecast.observe(
            now, observation.wall_time, demand_of(observation), history.lead.seconds, observation.window_seconds
        )
    return replace(
        history,
        capacity_per_replica=capacity,
        service_ms=service,
        variability=variability,
        forecast=forecast,
        variability_samples=variability_samples,
    )


def unreachable_message(spec: AutoscalingSpec, util: Utilisation | None) -> str | None:
    if util is None or util.reachable:
        return None
    return (
        f"target {spec.target_latency_ms}ms is at or below what one idle replica delivers "
        f"({spec.metric} {util.floor_ms:.0f}ms): sized for the best latency worth buying instead"
    )


def decide(
    observation: Observation,
    spec: AutoscalingSpec,
    current: int,
    history: History,
    now: float,
    max_up_factor: float = MAX_UP_FACTOR,
) -> Decision:
    """max_up_factor: the fallback's step cap (a parameter, so the simulator can lift it)."""
    learned = learn(observation, spec, history, now, current)
    raw, reason, util = recommend(observation, spec, current, learned, now, max_up_factor)
    raw = max(spec.min_replicas, min(spec.max_replicas, raw))
    unused = unused_replicas(observation, learned.capacity_per_replica, util, current) if raw > current else None
    if unused is not None:
        raw, reason = current, f"{reason}; held at {current}: {unused}"
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
    lead = learned.lead.observe(now, observation.ready_replicas, current, replicas)
    remembered = replace(
        learned, up_candidates=up, down_candidates=down, last_scale_up=last_up, last_scale_down=last_down, lead=lead
    )
    rho = util.rho if util is not None else None
    return Decision(replicas, raw, direction, reason, remembered, unreachable_message(spec, util), rho, unused)


def unused_replicas(
    observation: Observation, capacity: float | None, util: Utilisation | None, current: int
) -> str | None:
    """Why more replicas would not help: some ready replicas got no request at all for a while
    when the others run past the target's busy fraction. Clients that keep connections (gRPC,
    HTTP keep-alive) stay on the pods they reached first; new pods get none of their requests.
    None: every replica gets traffic, or the others are not short of capacity."""
    idle = observation.idle_replicas
    used = observation.ready_replicas - idle
    if idle <= 0 or used <= 0 or capacity is None or util is None or current > observation.ready_replicas:
        return None
    demand = demand_of(observation)
    if demand <= used * capacity * util.rho:
        return None
    return (
        f"{idle} of {observation.ready_replicas} ready replica(s) got no request in "
        f"{IDLE_SECONDS:.0f}s while the others serve {demand:.1f} req/s ({demand / (used * capacity):.0%} of their "
        "capacity): clients keep their connections (gRPC, HTTP keep-alive) to the pods they reached first, so new "
        "replicas would not be used; balance per request (gRPC round_robin over a headless Service) or use a mesh"
    )


def _window(
    candidates: tuple[tuple[float, int], ...], now: float, raw: int, seconds: float, keep: Callable[[int], bool]
) -> tuple[tuple[float, int], ...]:
    """A sliding window's extreme candidates after adding (now, raw): the expired dropped from
    the front, the ones raw dominates from the back; the first entry is the window's extreme."""
    live = [(t, r) for t, r in candidates if now - t <= seconds]
    while live and not keep(live[-1][1]):
        live.pop()
    return (*live, (now, raw))
