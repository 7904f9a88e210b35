"""A seeded discrete-event model of the autoscaling bench, running the operator's own code.

    .venv/bin/python bench/autoscale_sim.py --trace step --seeds 10
    .venv/bin/python bench/autoscale_sim.py --trace all --policies tritonop,knative,clairvoyant --json
    .venv/bin/python bench/autoscale_sim.py --trace my_traffic.csv --service-ms 40 --pod-start-s 20-40

What is simulated (defaults: the cluster bench of bench/autoscale_policies.py):
- an open-loop client (like loadgen/): Poisson arrivals at the trace's per-second rate, the same
  for every policy with a given seed; each request goes to the next pod of the client's list
  (round robin; or random, as kube-proxy does), a list the bench refreshes once a second from the
  ready pods and the client copies once a second; latency counts from the request's due time; a
  request unanswered after the client timeout (30 s) fails; requests to a deleted pod fail;
- each Triton pod: one FIFO queue and one model instance (max_batch_size 1, one request at a time),
  fixed or lognormal service time; its counters as Triton exports them (success, request, queue
  and compute durations, executions, the pending-request gauge) and the p95 of its request
  summary with prometheus-cpp's sliding window (60 s in 5 buckets rotated every 12 s);
- pods: a start delay drawn from a distribution (uniform between the two bounds of --pod-start-s)
  from the replica write to Ready; scale-down removes not-ready pods first, then the most
  recently ready (the ReplicaSet's order); abrupt deletion (the dev cluster's: queued and
  in-flight requests fail) or graceful (the pod finishes its queue and whatever the client still
  sends it);
- tritonop: the operator's real `Autoscalers.scale` (tritonop/autoscale/runner.py) with its real
  `PodMetricsReader.measure` windowing and its real `policy.decide`, on a simulated clock; the
  reader's scrape returns the simulated pod's counters. Reconciles come every evaluation period
  (1 s: the runner decides every second and reports to status every 5 s), plus one when a pod
  becomes Ready; the spec leaves spareReplicas unset (--spare-replicas N sets it), metric p95
  (--metric) and a 30 s scale-down window;
- reference rules (bench/reference_policies.py): knative (KPA), hpa-queue, reactive-ideal,
  clairvoyant; clairvoyant-U and reactive-ideal-U size for U% utilisation instead of 85%;
  knative-C targets C/100 requests in flight per replica instead of 0.7 (the KPA tuned for more
  or less headroom: a cost at equal attainment); and fixed-N (N replicas throughout, for
  experiments).

Experiment variants of tritonop (append to the policy name with '+', e.g. tritonop+period1+nocap):
they change what the simulator feeds the real code or how often it calls it, never the policy:
- p95winN: the pods' summary window is N seconds (5 buckets) instead of 60;
- period1: status reports every 1 s too (Autoscalers(report_every=1); decisions are every 1 s anyway);
- aligned: every pod's window starts at the same moment (a pod that joined counts from zero then);
- nocap: decide() gets max_up_factor=1000 (no 3x step cap);
- nodrain: decide() is fed pending=0 and no longest queue (no backlog-drain term);
- noidle: decide() is fed idle_replicas=0 (no hold when clients do not reach some replicas);
- spareN: spec.autoscaling.spareReplicas N instead of the bench's 3.

Printed: per trace and policy, mean over paired seeds with 95% confidence half-widths (t
distribution): SLO attainment (% of sent requests answered within the target; failed and timed
out requests are misses), replica-seconds (ready replicas sampled once a second, as the bench
counts), the multiple of clairvoyant's replica-seconds, failed requests, direction changes; and
each policy's paired difference from the baseline policy (--baseline, knative by default).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import heapq
import json
import logging
import math
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT, ROOT / "operator", ROOT / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from reference_policies import (  # noqa: E402
    UTILISATION,
    Clairvoyant,
    HpaQueueRule,
    KpaRule,
    ReactiveIdeal,
    queue_ms_since,
    replicas_for,
)
from traces import SUITE, Trace, arrivals  # noqa: E402
from traces import get as get_trace  # noqa: E402

from tritonop.api.spec import LATENCY_METRICS, ModelDeployment  # noqa: E402
from tritonop.autoscale import metrics, policy, runner  # noqa: E402
from tritonop.autoscale.metrics import CounterSample, Measurement, PodMetricsReader  # noqa: E402
from tritonop.autoscale.policy import Decision, History, Observation  # noqa: E402
from tritonop.autoscale.runner import DecideFn  # noqa: E402
from tritonop.events import EventRecorder  # noqa: E402
from tritonop.memory import ObjectMemory  # noqa: E402

LOG = logging.getLogger("autoscale_sim")
POLICIES = ("tritonop", "knative", "hpa-queue", "reactive-ideal", "clairvoyant")
VARIANTS = ("period1", "aligned", "nocap", "nodrain", "noidle")  # and p95winN
MODEL = "slow"
RECORD_UP_TO_SECONDS = 3_600
SUMMARY_BUCKETS = 5  # prometheus-cpp's default age buckets
# t distribution, two-sided 95%, by degrees of freedom (beyond 30: 1.96)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 12: 2.18}
T95.update({15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04})


@dataclass(frozen=True)
class Settings:
    service_ms: float = 100.0  # mean service time of one request (one batch of one)
    service_cv: float = 0.0  # 0: fixed; else lognormal with this coefficient of variation
    pod_start_s: tuple[float, float] = (6.0, 10.0)  # uniform between these: replica write -> Ready
    pod_start_samples: tuple[float, ...] = ()  # else: drawn from these (delays measured on the cluster)
    target_ms: float = 400.0
    routing: str = "round-robin"  # or "random"; "least" (an ideal least-loaded balancer) for experiments;
    # "pinned": `connections` client connections (gRPC channels, keep-alive HTTP), requests round
    # robin over them, each staying on the pod it reached first (a new pod only if that one went)
    connections: int = 4
    deletion: str = "abrupt"  # or "graceful"
    client_timeout_s: float = 30.0  # the autoscale bench's LoadGenerator(timeout=30)
    client_refresh_s: float = 1.0  # the client copies the bench's ready-pod list this often
    min_replicas: int = 1
    max_replicas: int = 8
    initial_replicas: int | None = None  # None: what the trace's first 10 s need (1 for the step trace)
    scale_down_stabilization_s: int = 30  # the bench's tritonop spec
    spare_replicas: int | None = None  # tritonop's spec: None (unset) lets the policy derive headroom
    metric: str = "p95"  # tritonop's spec.autoscaling.metric
    evaluate_s: float = 1.0  # the operator's defaults (Autoscalers): decisions every 1 s, status every 5 s
    report_s: float = 5.0
    reconcile_overhead_s: float = 0.1  # a reconcile's own time before its requeue starts

    @property
    def capacity(self) -> float:
        return 1000.0 / self.service_ms

    @property
    def client_lag_s(self) -> float:
        return 1.0 + self.client_refresh_s  # the bench's 1 s poll, then the client's copy


@dataclass(frozen=True)
class Variant:
    summary_window_s: float = 60.0
    period1: bool = False
    aligned: bool = False
    nocap: bool = False
    nodrain: bool = False
    noidle: bool = False  # decide() is fed idle_replicas=0 (no hold for replicas clients do not reach)
    spare: int | None = None  # spec.autoscaling.spareReplicas (None: the spec's default)


def parse_policy(name: str) -> tuple[str, Variant]:
    base, *options = name.split("+")
    for prefix in ("fixed-", "clairvoyant-", "reactive-ideal-", "knative-"):
        if base.startswith(prefix) and base.removeprefix(prefix).isdigit() and not options:
            return base, Variant()
    if base not in POLICIES:
        raise ValueError(f"unknown policy {base!r}: one of {', '.join(POLICIES)}")
    variant = Variant()
    for option in options:
        if option.startswith("p95win"):
            variant = dataclasses.replace(variant, summary_window_s=float(option.removeprefix("p95win")))
        elif option.startswith("spare") and option.removeprefix("spare").isdigit():
            variant = dataclasses.replace(variant, spare=int(option.removeprefix("spare")))
        elif option in VARIANTS:
            variant = dataclasses.replace(variant, **{option: True})
        else:
            raise ValueError(f"unknown variant {option!r}: p95winN, spareN or one of {', '.join(VARIANTS)}")
    if options and base != "tritonop":
        raise ValueError("variants apply to tritonop only")
    return base, variant


def _hundredths(name: str, default: float) -> float:
    """The policy's number over 100, else the default: clairvoyant-70 sizes for 70% utilisation
    (plain: the reference 85%), knative-50 targets 0.5 requests in flight (plain: the KPA's 0.7)."""
    suffix = name.rpartition("-")[2]
    return int(suffix) / 100 if suffix.isdigit() else default


class Request:
    __slots__ = ("arrival", "latency", "pod", "started", "state")
    OPEN, OK, FAILED, TIMED_OUT = 0, 1, 2, 3

    def __init__(self, arrival: float, pod: Pod) -> None:
        self.arrival = arrival
        self.pod = pod
        self.state = Request.OPEN
        self.latency = 0.0
        self.started = 0.0


class Pod:
    """One Triton server: a FIFO queue, one model instance, its metrics."""

    def __init__(self, uid: str, created: float, ready_at: float, summary_window_s: float) -> None:
        self.uid = uid
        self.created = created
        self.ready_at = ready_at
        self.ready = False
        self.deleted = False  # deletionTimestamp set: out of the ready list
        self.gone = False  # the process is gone: requests to it fail
        self.queue: deque[Request] = deque()
        self.in_service: Request | None = None
        self.success = 0.0
        self.duration_us = 0.0
        self.queue_us = 0.0
        self.compute_us = 0.0
        self.executions = 0.0
        self.rotation = summary_window_s / SUMMARY_BUCKETS
        self.observations: deque[tuple[float, float]] = deque()  # (completed at, request duration us)
        self.ordered: list[float] = []  # the same durations, kept sorted (a sort per scrape is slow over a week)

    def observe(self, completed_at: float, duration_us: float) -> None:
        self._forget_before(completed_at)  # the window only moves forward: forget as it does
        self.observations.append((completed_at, duration_us))
        bisect.insort(self.ordered, duration_us)

    def _forget_before(self, now: float) -> None:
        """Drop what the summary no longer holds at `now`: its current bucket holds what was
        observed since it was last reset, between 4 and 5 rotations ago."""
        rotations = math.floor((now - self.ready_at) / self.rotation)
        start = self.ready_at + self.rotation * (rotations - (SUMMARY_BUCKETS - 1))
        while self.observations and self.observations[0][0] < start:
            _, gone = self.observations.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, gone)]

    def quantiles_us(self, now: float) -> tuple[float | None, float | None]:
        """The summary's 0.95 and 0.99 quantiles as prometheus-cpp serves them."""
        self._forget_before(now)
        if not self.observations:
            return None, None
        values = self.ordered
        return values[min(len(values) - 1, int(0.95 * len(values)))], values[
            min(len(values) - 1, int(0.99 * len(values)))
        ]

    def sample(self, now: float) -> CounterSample:
        p95, p99 = self.quantiles_us(now)
        return CounterSample(
            at=now,
            success=self.success,
            duration_us=self.duration_us,
            queue_us=self.queue_us,
            p95_us=p95,
            compute_us=self.compute_us,
            executions=self.executions,
            pending=float(len(self.queue)),
            p99_us=p99,
        )


@dataclass
class RunResult:
    policy: str
    trace: str
    seed: int
    sent: int = 0
    answered: int = 0  # answered within the client timeout
    within: int = 0
    failed: int = 0
    replica_seconds: float = 0.0
    direction_changes: int = 0
    max_replicas: int = 0
    replicas: list[int] = field(default_factory=list)  # ready replicas at each second
    decisions: list[tuple[float, Observation, int, Decision]] = field(default_factory=list)  # tritonop's
    pending: list[int] = field(default_factory=list)  # requests queued in all pods at each second
    longest_queue: list[int] = field(default_factory=list)  # the longest pod queue at each second
    # Requests not answered within the target (late, failed, timed out), by the second they were sent.
    missed: dict[int, int] = field(default_factory=dict)

    def miss(self, arrival: float) -> None:
        second = int(arrival)
        self.missed[second] = self.missed.get(second, 0) + 1

    @property
    def attainment(self) -> float:
        return 100.0 * self.within / max(1, self.sent)


class SimClock:
    """The runner's injected clock: monotonic() is the simulation's clock; time() puts second 0
    of the trace at Monday 00:00 UTC (so a day or week trace lines up with the learned profiles)."""

    EPOCH = 4 * 86_400.0  # 1970-01-05, a Monday

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.EPOCH + self.now


class SimReader(PodMetricsReader):
    """The operator's pod reader, scraping simulated pods instead of HTTP."""

    def __init__(self, sim: Simulation, aligned: bool) -> None:
        super().__init__()
        self.sim = sim
        self.aligned = aligned
        self.evaluations: deque[float] = deque(maxlen=metrics.SAMPLES_KEPT)

    async def _scrape(self, ip: str, model: str) -> CounterSample:
        return self.sim.pods_by_uid[ip].sample(self.sim.now)

    async def measure(self, pods: dict[str, tuple[str, str]], model: str) -> Measurement:
        if not self.aligned:
            return await super().measure(pods, model)
        # Aligned windows: every pod's window starts at the same evaluation (the newest at least
        # MIN_WINDOW_SECONDS old); a pod not measured then joined since, and counts from zero.
        now = self.sim.now
        start_at = next((t for t in reversed(self.evaluations) if now - t >= metrics.MIN_WINDOW_SECONDS), None)
        if start_at is None and self.evaluations:
            start_at = self.evaluations[0]
        self.evaluations.append(now)
        stats = []
        for uid in pods:
            current = await self._scrape(uid, model)
            history = self.samples.setdefault(uid, deque(maxlen=metrics.SAMPLES_KEPT))
            history.append(current)
            if start_at is None:
                continue
            start = next((s for s in history if s.at == start_at), None)
            if start is None:
                start = CounterSample(start_at, 0.0, 0.0, 0.0, None)
            stats.append(metrics.window(start, current))
        for uid in list(self.samples):
            if uid not in pods:
                del self.samples[uid]
        return metrics.combine(stats, ())


def variant_policy(variant: Variant, record: list[tuple[float, Observation, int, Decision]] | None) -> DecideFn:
    """The operator's policy.decide with the variant's feed changes, recording every decision;
    handed to the real Autoscalers (nothing is patched)."""

    def decide(observation: Observation, spec: Any, current: int, history: History, now: float) -> Decision:
        if variant.nodrain:
            observation = dataclasses.replace(observation, pending=0.0, longest_queue=0.0)
        if variant.noidle:
            observation = dataclasses.replace(observation, idle_replicas=0)
        cap = 1000.0 if variant.nocap else policy.MAX_UP_FACTOR
        decision = policy.decide(observation, spec, current, history, now, max_up_factor=cap)
        if record is not None:
            record.append((now, observation, current, decision))
        return decision

    return decide


class Simulation:
    def __init__(self, trace: Trace, policy_name: str, seed: int, settings: Settings) -> None:
        self.trace = trace
        self.settings = settings
        self.seed = seed
        self.base, self.variant = parse_policy(policy_name)
        self.result = RunResult(policy_name, trace.name, seed)
        self.rng = random.Random(f"pods:{seed}")  # start delays, service times, routing
        self.now = 0.0
        self.events: list[tuple[float, int, str, Any]] = []
        self.sequence = 0
        self.pods: list[Pod] = []  # the pods not gone yet (a week's run creates thousands)
        self.pods_by_uid: dict[str, Pod] = {}
        self.pods_created = 0
        initial = settings.initial_replicas
        if self.base.startswith("fixed-"):
            initial = int(self.base.removeprefix("fixed-"))
        elif initial is None:
            initial = replicas_for(max(trace.rates[:10], default=0.0), settings.capacity)
        self.initial_replicas = max(settings.min_replicas, min(settings.max_replicas, initial))
        self.desired = self.initial_replicas
        self.bench_list: list[Pod] = []  # the bench's ready-pod list (refreshed every second)
        self.client_list: list[Pod] = []  # the load generator's copy
        self.next_target = 0
        self.pins: dict[int, Pod] = {}  # pinned routing: connection -> its pod
        self.open_requests: deque[Request] = deque()  # in arrival order, for timeouts
        self.in_flight = 0
        self.clock = SimClock()
        self.controller = self._controller()
        self.summaries = isinstance(self.controller, TritonopController)  # only tritonop reads them

    # -- events -------------------------------------------------------------------------------

    def at(self, when: float, kind: str, payload: Any = None) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, payload))

    def run(self) -> RunResult:
        s = self.settings
        for _ in range(self.initial_replicas):
            pod = self._new_pod(ready_at=0.0)
            pod.ready = True
        self.bench_list = self.client_list = self._ready_pods()
        end = float(self.trace.seconds)
        for second in range(self.trace.seconds):
            self.at(float(second), "second")
        phase = self.rng.random()
        for k in range(math.ceil(end / s.client_refresh_s) + 1):
            self.at(phase + k * s.client_refresh_s, "refresh")
        controller = self.controller
        self.at(self.rng.random() * controller.first_delay(), "control", controller)
        times = arrivals(self.trace, self.seed)
        index = 0
        # Long traces keep no per-decision record (a week is 600 000 decisions).
        record = self.result.decisions if self.trace.seconds <= RECORD_UP_TO_SECONDS else None
        if isinstance(controller, TritonopController):
            controller.autoscalers.decide = variant_policy(self.variant, record)
        while self.events or index < len(times):
            if index < len(times) and (not self.events or times[index] <= self.events[0][0]):
                self._set_now(times[index])
                self._arrive()
                index += 1
                continue
            when, _, kind, payload = heapq.heappop(self.events)
            if kind == "control" and when >= end:
                continue  # the bench stops its controllers at the trace's end
            self._set_now(when)
            self._handle(kind, payload)
        self._sweep(math.inf)
        self._finish()
        return self.result

    def _set_now(self, when: float) -> None:
        self.now = self.clock.now = when

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "complete":
            self._complete(payload)
        elif kind == "ready":
            if not payload.deleted:
                payload.ready = True
                if isinstance(self.controller, TritonopController):
                    self.controller.reconcile_now(self)  # a pod's Ready condition triggers a reconcile
        elif kind == "second":
            self.bench_list = self._ready_pods()
            self.result.replicas.append(len(self.bench_list))
            queues = [len(p.queue) for p in self.pods if not p.gone]
            self.result.pending.append(sum(queues))
            self.result.longest_queue.append(max(queues, default=0))
        elif kind == "refresh":
            self.client_list = list(self.bench_list)
            for pod in self.pods:
                self._retire_if_done(pod)
            self.pods = [p for p in self.pods if not p.gone]  # every loop over pods skips gone ones
        elif kind == "control":
            self.at(self.now + payload.step(self), "control", payload)

    def _controller(self) -> Controller:
        s = self.settings
        controller: Controller
        if self.base == "tritonop":
            controller = TritonopController(self)
        elif self.base == "knative" or self.base.startswith("knative-"):
            controller = RuleController(
                KpaRule(
                    max_replicas=s.max_replicas,
                    min_replicas=s.min_replicas,
                    target_concurrency=_hundredths(self.base, KpaRule.target_concurrency),
                )
            )
        elif self.base == "hpa-queue":
            controller = RuleController(
                HpaQueueRule(
                    target_ms=s.target_ms - s.service_ms, max_replicas=s.max_replicas, min_replicas=s.min_replicas
                )
            )
        elif self.base.startswith("fixed-"):
            controller = RuleController(Fixed(int(self.base.removeprefix("fixed-"))))
        elif self.base.startswith("reactive-ideal"):
            hold = s.pod_start_s[1] + s.client_lag_s
            controller = RuleController(
                ReactiveIdeal(
                    s.capacity,
                    s.max_replicas,
                    hold_seconds=hold,
                    min_replicas=s.min_replicas,
                    utilisation=_hundredths(self.base, UTILISATION),
                )
            )
        else:
            lead = s.pod_start_s[1] + s.client_lag_s
            controller = RuleController(
                Clairvoyant(
                    s.capacity,
                    s.max_replicas,
                    lead_seconds=lead,
                    min_replicas=s.min_replicas,
                    utilisation=_hundredths(self.base, UTILISATION),
                )
            )
        return controller

    # -- requests -----------------------------------------------------------------------------

    def _arrive(self) -> None:
        targets = self.client_list
        if not targets:
            return  # the load generator skips a request when it knows no pod
        if self.settings.routing == "random":
            pod = targets[self.rng.randrange(len(targets))]
        elif self.settings.routing == "least":
            pod = min(targets, key=lambda p: len(p.queue) + (p.in_service is not None))
        elif self.settings.routing == "pinned":
            connection = self.next_target % self.settings.connections
            self.next_target += 1
            pod = self.pins.get(connection)
            if pod is None or pod.deleted:
                pod = self.pins[connection] = targets[self.rng.randrange(len(targets))]
        else:
            pod = targets[self.next_target % len(targets)]
            self.next_target += 1
        request = Request(self.now, pod)
        self.result.sent += 1
        if pod.gone:
            request.state = Request.FAILED  # connection refused
            self.result.failed += 1
            return
        self.in_flight += 1
        self.open_requests.append(request)
        pod.queue.append(request)
        if pod.in_service is None:
            self._start_next(pod)

    def _service_seconds(self) -> float:
        mean = self.settings.service_ms / 1000
        cv = self.settings.service_cv
        if cv <= 0:
            return mean
        sigma = math.sqrt(math.log(1 + cv * cv))
        return self.rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)

    def _start_next(self, pod: Pod) -> None:
        request = pod.queue.popleft()
        request.started = self.now
        pod.in_service = request
        self.at(self.now + self._service_seconds(), "complete", request)

    def _complete(self, request: Request) -> None:
        pod = request.pod
        if pod.gone or pod.in_service is not request:
            return  # the pod was killed with it
        pod.in_service = None
        service = self.now - request.started
        duration = self.now - request.arrival
        pod.success += 1
        pod.duration_us += duration * 1e6
        pod.queue_us += (request.started - request.arrival) * 1e6
        pod.compute_us += service * 1e6
        pod.executions += 1
        if self.summaries:
            pod.observe(self.now, duration * 1e6)
        if request.state == Request.OPEN:
            self.in_flight -= 1
            if duration > self.settings.client_timeout_s:
                request.state = Request.TIMED_OUT
                self.result.failed += 1
                self.result.miss(request.arrival)
            else:
                request.state = Request.OK
                request.latency = duration
                self.result.answered += 1
                if duration * 1000 <= self.settings.target_ms:
                    self.result.within += 1
                else:
                    self.result.miss(request.arrival)
        if pod.queue:
            self._start_next(pod)
        else:
            self._retire_if_done(pod)

    def _fail(self, request: Request) -> None:
        if request.state == Request.OPEN:
            request.state = Request.FAILED
            self.in_flight -= 1
            self.result.failed += 1
            self.result.miss(request.arrival)

    def _sweep(self, now: float) -> None:
        """The client gives up on requests older than its timeout."""
        while self.open_requests:
            request = self.open_requests[0]
            if request.state == Request.OPEN:
                if now - request.arrival <= self.settings.client_timeout_s:
                    break
                request.state = Request.TIMED_OUT
                self.in_flight -= 1
                self.result.failed += 1
                self.result.miss(request.arrival)
            self.open_requests.popleft()

    def client_in_flight(self) -> int:
        self._sweep(self.now)
        return self.in_flight

    # -- pods ---------------------------------------------------------------------------------

    def _new_pod(self, ready_at: float) -> Pod:
        pod = Pod(f"pod-{self.pods_created}", self.now, ready_at, self.variant.summary_window_s)
        self.pods_created += 1
        self.pods.append(pod)
        self.pods_by_uid[pod.uid] = pod
        return pod

    def _ready_pods(self) -> list[Pod]:
        return [p for p in self.pods if p.ready and not p.deleted]

    def set_replicas(self, replicas: int) -> None:
        """The Deployment's replicas: start or remove pods (the ReplicaSet's choice of which)."""
        self.desired = replicas
        active = [p for p in self.pods if not p.deleted]
        low, high = self.settings.pod_start_s
        samples = self.settings.pod_start_samples
        for _ in range(replicas - len(active)):
            delay = self.rng.choice(samples) if samples else self.rng.uniform(low, high)
            pod = self._new_pod(ready_at=self.now + delay)
            self.at(pod.ready_at, "ready", pod)
        if replicas < len(active):
            # Not ready before ready; then the most recently ready (or created) first.
            ranked = sorted(active, key=lambda p: (p.ready, -(p.ready_at if p.ready else p.created)))
            for pod in ranked[: len(active) - replicas]:
                self._delete(pod)

    def _delete(self, pod: Pod) -> None:
        pod.deleted = True
        pod.ready = False
        if self.settings.deletion == "abrupt":
            self._kill(pod)
        else:
            self._retire_if_done(pod)

    def _retire_if_done(self, pod: Pod) -> None:
        """Graceful removal: a deleted pod serves its queue and whatever the client still sends
        it (a preStop long enough for the client's list to drop it), then exits."""
        if pod.deleted and not pod.gone and pod.in_service is None and not pod.queue and pod not in self.client_list:
            pod.gone = True

    def _kill(self, pod: Pod) -> None:
        pod.gone = True
        if pod.in_service is not None:
            self._fail(pod.in_service)
            pod.in_service = None
        while pod.queue:
            self._fail(pod.queue.popleft())

    # -- results ------------------------------------------------------------------------------

    def _finish(self) -> None:
        result = self.result
        result.replica_seconds = float(sum(result.replicas))
        result.max_replicas = max(result.replicas, default=0)
        changes, last, previous = 0, 0, None
        for count in result.replicas:
            if previous is not None and count != previous:
                direction = 1 if count > previous else -1
                if direction != last:
                    changes += 1
                    last = direction
            previous = count
        result.direction_changes = changes


class Controller:
    def first_delay(self) -> float:
        raise NotImplementedError

    def step(self, sim: Simulation) -> float:
        """Act now; return the seconds until the next call."""
        raise NotImplementedError


class TritonopController(Controller):
    """The operator's reconcile loop, reduced to what touches autoscaling."""

    def __init__(self, sim: Simulation) -> None:
        s = sim.settings
        report = 1.0 if sim.variant.period1 else s.report_s
        self.autoscalers = runner.Autoscalers(evaluate_every=s.evaluate_s, report_every=report, clock=sim.clock)
        autoscaling: dict[str, Any] = {
            "minReplicas": s.min_replicas,
            "maxReplicas": s.max_replicas,
            "metric": s.metric,
            "targetLatencyMs": int(s.target_ms),
            "scaleDownStabilizationSeconds": s.scale_down_stabilization_s,
        }
        spare = s.spare_replicas if sim.variant.spare is None else sim.variant.spare
        if spare is not None:
            autoscaling["spareReplicas"] = spare
        self.md = ModelDeployment.from_body(
            {
                "metadata": {"name": MODEL, "namespace": "sim", "uid": "sim"},
                "spec": {"model": {"name": MODEL, "repository": "file:///sim"}, "autoscaling": autoscaling},
            }
        )
        reader = SimReader(sim, aligned=sim.variant.aligned)
        # The object's memory record, holding an autoscaler that reads the simulated servers.
        self.memory = ObjectMemory((self.md.namespace, self.md.name))
        self.memory.autoscaler = runner.AutoscalerState(reader=reader, source="pods", period=s.evaluate_s)
        self.events = EventRecorder(logging.LoggerAdapter(LOG, {}), "sim/slow")
        self.loop = asyncio.new_event_loop()
        self.overhead = s.reconcile_overhead_s

    def first_delay(self) -> float:
        return self.autoscalers.period

    def _reconcile(self, sim: Simulation) -> None:
        pods = [
            {
                "metadata": {"uid": p.uid, "name": p.uid},
                "status": {"podIP": p.uid, "conditions": [{"type": "Ready", "status": str(p.ready)}]},
            }
            for p in sim.pods
            if not p.deleted
        ]
        deployment = {"spec": {"replicas": sim.desired}}
        scaling = self.loop.run_until_complete(
            self.autoscalers.scale(self.md, pods, deployment, self.events, self.memory)
        )
        self.events.events.clear()
        if scaling.replicas != sim.desired:
            sim.set_replicas(scaling.replicas)

    def reconcile_now(self, sim: Simulation) -> None:
        if sim.now < sim.trace.seconds:
            self._reconcile(sim)

    def step(self, sim: Simulation) -> float:
        self._reconcile(sim)
        starting = any(not p.ready and not p.deleted for p in sim.pods)
        wait = self.autoscalers.next_evaluation_in(self.md, self.memory) or self.autoscalers.period
        # reconcile.py requeues after 1 s while pods converge, else after the evaluation period.
        return self.overhead + (min(1.0, wait) if starting else wait)


@dataclass
class Fixed:
    """A fixed replica count (for experiments: what steady provisioning alone attains)."""

    replicas: int
    period: float = 1.0


class RuleController(Controller):
    def __init__(self, rule: KpaRule | HpaQueueRule | ReactiveIdeal | Clairvoyant | Fixed) -> None:
        self.rule = rule
        self.hpa_previous: dict[str, tuple[float, float]] = {}

    def first_delay(self) -> float:
        # HPA's bench thread waits a whole sync before its first look; the others start at once.
        return self.rule.period

    def step(self, sim: Simulation) -> float:
        rule, now = self.rule, sim.now
        current = sim.desired
        if isinstance(rule, KpaRule):
            wanted = rule.decide(now, float(sim.client_in_flight()), current, len(sim._ready_pods()))
        elif isinstance(rule, HpaQueueRule):
            totals = {p.uid: (p.queue_us, p.success) for p in sim._ready_pods()}
            wanted = rule.decide(now, queue_ms_since(self.hpa_previous, totals), current)
        elif isinstance(rule, Fixed):
            wanted = rule.replicas
        else:
            wanted = rule.decide(now, sim.trace.rate_at)
        if wanted != current:
            sim.set_replicas(wanted)
        return rule.period


def simulate(trace: Trace, policy_name: str, seed: int, settings: Settings | None = None) -> RunResult:
    return Simulation(trace, policy_name, seed, settings or Settings()).run()


# -- statistics and reports -------------------------------------------------------------------


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (t distribution)."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    df = len(values) - 1
    t = T95.get(df) or next((T95[k] for k in sorted(T95) if k >= df), 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def summarize(runs: list[RunResult], clairvoyant: list[RunResult] | None) -> dict[str, Any]:
    attainment = mean_ci([r.attainment for r in runs])
    replica_seconds = mean_ci([r.replica_seconds for r in runs])
    failed = mean_ci([float(r.failed) for r in runs])
    changes = mean_ci([float(r.direction_changes) for r in runs])
    row: dict[str, Any] = {
        "policy": runs[0].policy,
        "trace": runs[0].trace,
        "seeds": len(runs),
        "attainment": round(attainment[0], 2),
        "attainment_ci95": round(attainment[1], 2),
        "replica_seconds": round(replica_seconds[0], 1),
        "replica_seconds_ci95": round(replica_seconds[1], 1),
        "failed": round(failed[0], 1),
        "failed_ci95": round(failed[1], 1),
        "direction_changes": round(changes[0], 1),
        "direction_changes_ci95": round(changes[1], 1),
        "attainment_range": [round(min(r.attainment for r in runs), 1), round(max(r.attainment for r in runs), 1)],
        "replica_seconds_range": [min(r.replica_seconds for r in runs), max(r.replica_seconds for r in runs)],
        "requests": round(statistics.fmean(r.sent for r in runs), 1),
        "max_replicas": max(r.max_replicas for r in runs),
        # Each seed's figures, for paired comparisons across invocations (e.g. two targets).
        "per_seed": [
            {"seed": r.seed, "attainment": round(r.attainment, 3), "replica_seconds": r.replica_seconds} for r in runs
        ],
    }
    if clairvoyant:
        row["x_clairvoyant"] = round(replica_seconds[0] / statistics.fmean(r.replica_seconds for r in clairvoyant), 2)
    return row


def paired(runs: list[RunResult], baseline: list[RunResult]) -> dict[str, float]:
    """Differences from the baseline over the same seeds: mean and 95% half-width."""
    attainment = mean_ci([a.attainment - b.attainment for a, b in zip(runs, baseline, strict=True)])
    replica_seconds = mean_ci([a.replica_seconds - b.replica_seconds for a, b in zip(runs, baseline, strict=True)])
    return {
        "attainment_diff": round(attainment[0], 2),
        "attainment_diff_ci95": round(attainment[1], 2),
        "replica_seconds_diff": round(replica_seconds[0], 1),
        "replica_seconds_diff_ci95": round(replica_seconds[1], 1),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'trace':<9} {'policy':<26} {'attainment %':>15} {'replica-s':>15} {'x clairv':>8} "
        f"{'failed':>12} {'changes':>11} {'vs baseline (att, rs)':>26}"
    )
    for r in rows:
        diff = ""
        if "attainment_diff" in r:
            diff = (
                f"{r['attainment_diff']:+.1f}±{r['attainment_diff_ci95']:.1f} "
                f"{r['replica_seconds_diff']:+.0f}±{r['replica_seconds_diff_ci95']:.0f}"
            )
        print(
            f"{r['trace']:<9} {r['policy']:<26} {r['attainment']:>8.1f} ± {r['attainment_ci95']:<4.1f} "
            f"{r['replica_seconds']:>8.0f} ± {r['replica_seconds_ci95']:<4.0f} {r.get('x_clairvoyant', ''):>8} "
            f"{r['failed']:>6.1f} ± {r['failed_ci95']:<3.0f} "
            f"{r['direction_changes']:>5.1f} ± {r['direction_changes_ci95']:<3.1f} {diff:>26}"
        )


def parse_spare(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError("--spare-replicas: a whole number or 'auto'")
    return int(text)


def parse_start(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    bounds = (float(low), float(high or low))
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise argparse.ArgumentTypeError("--pod-start-s: A or A-B with 0 <= A <= B")
    return bounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--trace", default="step", help=f"'all', a comma list of {', '.join(SUITE)}, constant-R, or FILE.csv"
    )
    parser.add_argument("--seeds", type=int, default=10, help="paired seeds 0..N-1 (default 10)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma list; tritonop variants with '+'")
    parser.add_argument("--baseline", default="knative", help="paired differences against this policy")
    parser.add_argument("--service-ms", type=float, default=100.0)
    parser.add_argument("--service-cv", type=float, default=0.0, help="0: fixed service time; else lognormal")
    parser.add_argument("--pod-start-s", type=parse_start, default=(6.0, 10.0), help="A or A-B (uniform), default 6-10")
    parser.add_argument(
        "--pod-start-from",
        type=Path,
        help="draw pod start delays from the ones a cluster run measured (autoscale_policies.py --out FILE)",
    )
    parser.add_argument("--target-ms", type=float, default=400.0)
    parser.add_argument(
        "--routing",
        choices=("round-robin", "random", "least", "pinned"),
        default="round-robin",
        help=(
            "the bench client's round robin, kube-proxy's random, an ideal least-loaded balancer (experiments), "
            "or 4 pinned connections (gRPC channels: each stays on the pod it reached first)"
        ),
    )
    parser.add_argument("--min-replicas", type=int, default=1, help="minReplicas for every policy")
    parser.add_argument("--deletion", choices=("abrupt", "graceful"), default="abrupt")
    parser.add_argument("--client-timeout-s", type=float, default=30.0)
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument(
        "--spare-replicas",
        type=parse_spare,
        default=None,
        help="tritonop's spec.autoscaling.spareReplicas: N, or 'auto' (unset: the policy derives headroom; default)",
    )
    parser.add_argument("--metric", choices=LATENCY_METRICS, default="p95", help="tritonop's metric")
    parser.add_argument("--json", action="store_true", help="one JSON object per policy and trace per line")
    args = parser.parse_args(argv)

    samples: tuple[float, ...] = ()
    if args.pod_start_from:
        lines = args.pod_start_from.read_text().splitlines()
        samples = tuple(sorted(d for line in lines if line.strip() for d in json.loads(line).get("pod_starts_s", [])))
        args.pod_start_s = (samples[0], samples[-1])
    settings = Settings(
        pod_start_samples=samples,
        service_ms=args.service_ms,
        service_cv=args.service_cv,
        pod_start_s=args.pod_start_s,
        target_ms=args.target_ms,
        routing=args.routing,
        deletion=args.deletion,
        client_timeout_s=args.client_timeout_s,
        max_replicas=args.max_replicas,
        min_replicas=args.min_replicas,
        spare_replicas=args.spare_replicas,
        metric=args.metric,
    )
    names = list(SUITE) if args.trace == "all" else args.trace.split(",")
    policies = args.policies.split(",")
    for name in policies:
        parse_policy(name)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    started = time.monotonic()
    for name in names:
        trace = get_trace(name)
        runs = {p: [simulate(trace, p, seed, settings) for seed in seeds] for p in policies}
        clairvoyant = runs.get("clairvoyant") or (
            [simulate(trace, "clairvoyant", seed, settings) for seed in seeds] if "tritonop" in runs else None
        )
        for p in policies:
            row = summarize(runs[p], clairvoyant)
            if args.baseline in runs and p != args.baseline:
                row.update(paired(runs[p], runs[args.baseline]))
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        print_table(rows)
        print(f"\n{len(seeds)} paired seeds; {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
