"""A seeded discrete-event token-level model of LLM serving, replaying the Azure LLM traces 2023.

    PYTHONPATH=operator .venv/bin/python bench/llm_sim.py --trace code,conv --seeds 10
    PYTHONPATH=operator .venv/bin/python bench/llm_sim.py --trace conv --policies tritonop,clairvoyant --json

What is simulated:
- requests: the trace's own (bench/data/azure_llm_2023_{code,conv}.csv.gz: arrival, context
  tokens, generated tokens), each moved by a uniform jitter of +-`--jitter-s` (per seed, the same
  for every policy); a gateway sends each to the ready replica with the fewest requests (running
  + waiting; `--routing round-robin` for a plain Service);
- each replica: the engine loop of model_repo/tokens, calibrated against it on the real
  tritonserver (bench/llm_calibrate.py; figures in bench/README.md): continuous batching, one step
  serves every running request one token, a step takes step_ms + step_ms_per_request x batch +
  prefill_ms_per_token x the prompt tokens admitted in it, whose first token ends that step; a
  request runs only while prompt + generated tokens fit the KV-cache budget (and max_running),
  first come first served, else it waits. TTFT: arrival to the end of its first step (+ the
  measured first-response overhead); ITL of a request: the mean gap between its tokens;
- pods: a start delay uniform in `--pod-start-s` (60-90 s) from the replica write to Ready, a GPU
  held from the write; scale-down removes not-ready pods first, then the ready ones with the least
  work; a removed pod gets no new requests, finishes its own, then gives its GPU back;
- policies, each deciding on what it could read on a cluster:
  - tritonop: tritonop.autoscale.token_policy.decide every second, on a 15 s window of the
    vLLM families (TTFT and ITL histograms as percentiles and means, token counters, the
    running/waiting/KV-cache gauges) and Triton's request count;
  - keda-waiting: KEDA's Prometheus scaler on sum(vllm:num_requests_waiting), threshold
    `--keda-threshold` per replica (AverageValue), the HPA's algorithm: 15 s sync, tolerance 0.1,
    scale-up at most max(2x, +4) per sync, 300 s scale-down stabilization;
  - kv-cache: the same HPA on the mean KV-cache usage, target 0.7 (AIBrix's / llm-d's
    saturation signal);
  - hpa-gpu: the same HPA on GPU utilisation (DCGM's: the fraction of time the engine ran a
    step), target 0.7;
  - clairvoyant: knows the trace and the true engine; each second, sizes with token_policy.size
    for the most tokens any 10 s within the next longest pod start + 10 s bring (no error);
    a cost bound, not a latency guarantee.
  A rule's target can be named in the policy: keda-waiting-1 (threshold 1 waiting request per
  replica), kv-cache-50 (50% KV-cache usage), hpa-gpu-50 (50% GPU utilisation); fixed-N: N replicas.

Printed: per trace and policy, mean over paired seeds with 95% confidence half-widths: the share
of requests meeting both targets (TTFT <= --ttft-ms, the request's mean ITL <= --itl-ms), its p95
TTFT and ITL, GPU-seconds (pods from the replica write to gone) and their multiple of
clairvoyant's; then tritonop's paired differences from each rule.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT / "operator", ROOT / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from autoscale_sim import mean_ci, parse_start  # noqa: E402
from traces import azure_2023_requests  # noqa: E402

from tritonop.autoscale import token_policy  # noqa: E402
from tritonop.autoscale.metrics import RECENT_SECONDS  # noqa: E402
from tritonop.autoscale.token_policy import TokenDecision, TokenHistory, TokenObservation, TokenTargets  # noqa: E402

TRACES = ("code", "conv")
POLICIES = ("tritonop", "keda-waiting", "kv-cache", "hpa-gpu", "clairvoyant")
WINDOW_S = 15.0  # tritonop's observation window (the operator reads the last 16 scrapes)
CLAIRVOYANT_BUCKET_S = 10.0


@dataclass(frozen=True)
class Engine:
    """model_repo/tokens as measured on tritonserver (bench/llm_calibrate.py; see bench/README.md)."""

    step_ms: float = 15.03
    step_ms_per_request: float = 1.84
    prefill_ms_per_token: float = 0.0100
    token_overhead_ms: float = 1.6  # each response's way to the client (TTFT alone at 0 prompt tokens - a step)
    kv_tokens: int = 32768
    max_running: int = 64

    def step_s(self, batch: int, prefill_tokens: int) -> float:
        return (self.step_ms + self.step_ms_per_request * batch + self.prefill_ms_per_token * prefill_tokens) / 1000


@dataclass(frozen=True)
class Settings:
    engine: Engine = Engine()
    ttft_ms: float = 500.0
    itl_ms: float = 50.0
    percentile: float = 95.0
    pod_start_s: tuple[float, float] = (60.0, 90.0)
    min_replicas: int = 1
    max_replicas: int = 16
    jitter_s: float = 0.5
    routing: str = "least"
    keda_threshold: float = 3.0
    kv_target: float = 0.7
    gpu_target: float = 0.7
    hpa_sync_s: float = 15.0
    hpa_down_window_s: float = 300.0
    tritonop_down_window_s: float = 300.0
    limit_s: float | None = None  # replay only the trace's first seconds


@dataclass(frozen=True)
class TraceRequest:
    at: float
    prompt: int
    generated: int


def load_trace(name: str) -> list[TraceRequest]:
    return [TraceRequest(at, max(1, prompt), max(1, generated)) for at, prompt, generated in azure_2023_requests(name)]


class Request:
    __slots__ = ("arrival", "done_step", "first", "generated", "last", "pod", "prompt")

    def __init__(self, arrival: float, prompt: int, generated: int) -> None:
        self.arrival = arrival
        self.prompt = prompt
        self.generated = generated
        self.first: float | None = None
        self.last: float | None = None
        self.done_step = 0
        self.pod: Pod | None = None

    @property
    def reserved(self) -> int:
        return self.prompt + self.generated

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.arrival

    @property
    def itl(self) -> float:
        """The mean gap between this request's tokens (0 with one token)."""
        assert self.first is not None and self.last is not None
        return (self.last - self.first) / (self.generated - 1) if self.generated > 1 else 0.0


class Pod:
    def __init__(self, uid: int, created: float, ready_at: float) -> None:
        self.uid = uid
        self.created = created
        self.ready_at = ready_at
        self.ready = False
        self.deleted = False
        self.gone_at: float | None = None
        self.waiting: deque[Request] = deque()
        self.running = 0
        self.finishing: list[tuple[int, int, Request]] = []  # (done step, order, request)
        self.admitted: list[Request] = []  # in the step under way
        self.reserved = 0
        self.steps = 0
        self.stepping = False
        self.busy_s = 0.0  # total time spent in steps (GPU utilisation)
        self.step_started = 0.0

    @property
    def load(self) -> int:
        return self.running + len(self.waiting)


@dataclass
class Window:
    """Cumulative counters, sampled once a second: the policies' metrics are their differences."""

    at: float
    arrivals: int
    prompt_tokens: int
    generation_tokens: int
    busy_s: float


@dataclass
class RunResult:
    policy: str
    trace: str
    seed: int
    requests: int = 0
    within: int = 0
    ttft_p95_ms: float = 0.0
    itl_p95_ms: float = 0.0
    gpu_seconds: float = 0.0
    ready_replica_seconds: float = 0.0
    max_replicas: int = 0
    replicas: list[int] = field(default_factory=list)  # pods holding a GPU, each second
    decisions: list[tuple[float, int, str]] = field(default_factory=list)

    @property
    def attainment(self) -> float:
        return 100.0 * self.within / max(1, self.requests)


class Simulation:
    def __init__(self, trace: list[TraceRequest], name: str, policy: str, seed: int, settings: Settings) -> None:
        self.settings = settings
        self.engine = settings.engine
        self.policy = policy
        rng = random.Random(seed)
        end = settings.limit_s if settings.limit_s is not None else math.inf
        j = settings.jitter_s
        self.requests = sorted(
            (Request(max(0.0, r.at + rng.uniform(-j, j)), r.prompt, r.generated) for r in trace if r.at < end),
            key=lambda r: r.arrival,
        )
        self.start_rng = random.Random(seed * 7919 + 1)
        self.result = RunResult(policy, name, seed)
        self.now = 0.0
        self.events: list[tuple[float, int, int, Any]] = []
        self.order = 0
        self.pods: list[Pod] = []
        self.next_uid = 0
        self.rr = 0
        self.desired = 0
        # Cumulative counters (all pods) and per-window TTFT / ITL samples.
        self.arrivals = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.busy_gone_s = 0.0
        self.ttft_log: list[tuple[float, float]] = []  # (at, ttft s) of first tokens
        self.itl_log: list[tuple[float, float, int]] = []  # (at, step s, tokens with that gap)
        self.samples: deque[Window] = deque(maxlen=64)
        self.waiting_at_gateway: deque[Request] = deque()
        self.arrival_times = [r.arrival for r in self.requests]
        self.controller = make_controller(self, policy)

    # -- events --------------------------------------------------------------------------------
    ARRIVAL, STEP_END, READY, CONTROL, SAMPLE = range(5)

    def at(self, when: float, kind: int, payload: Any = None) -> None:
        self.order += 1
        heapq.heappush(self.events, (when, self.order, kind, payload))

    def run(self) -> RunResult:
        initial = self.controller.initial()
        for _ in range(initial):
            pod = self._new_pod(0.0)
            pod.ready = True
        self.desired = initial
        self.controller.started(initial)
        for request in self.requests:
            self.at(request.arrival, Simulation.ARRIVAL, request)
        self.at(0.0, Simulation.SAMPLE)
        self.at(self.controller.first_delay(), Simulation.CONTROL)
        last_arrival = self.requests[-1].arrival if self.requests else 0.0
        finished = 0
        total = len(self.requests)
        while self.events:
            when, _, kind, payload = heapq.heappop(self.events)
            self.now = when
            if kind == Simulation.ARRIVAL:
                self.arrivals += 1
                self._route(payload)
            elif kind == Simulation.STEP_END:
                finished += self._step_end(payload)
            elif kind == Simulation.READY:
                self._ready(payload)
            elif kind == Simulation.CONTROL:
                if when <= last_arrival or finished < total:
                    self.at(when + self.controller.step(), Simulation.CONTROL)
            elif kind == Simulation.SAMPLE:
                self._sample()
                if when <= last_arrival or finished < total:
                    self.at(when + 1.0, Simulation.SAMPLE)
        self._finish()
        return self.result

    # -- serving ------------------------------------------------------------------------------
    def ready_pods(self) -> list[Pod]:
        return [p for p in self.pods if p.ready and not p.deleted]

    def _route(self, request: Request) -> None:
        ready = self.ready_pods()
        if not ready:
            self.waiting_at_gateway.append(request)
            return
        if self.settings.routing == "least":
            pod = min(ready, key=lambda p: (p.load, p.uid))
        else:
            self.rr += 1
            pod = ready[self.rr % len(ready)]
        request.pod = pod
        pod.waiting.append(request)
        if not pod.stepping:
            self._start_step(pod)

    def _start_step(self, pod: Pod) -> None:
        e = self.engine
        admitted = []
        while pod.waiting and pod.running < e.max_running and pod.reserved + pod.waiting[0].reserved <= e.kv_tokens:
            request = pod.waiting.popleft()
            pod.reserved += request.reserved
            pod.running += 1
            request.done_step = pod.steps + request.generated
            heapq.heappush(pod.finishing, (request.done_step, self.order, request))
            self.order += 1
            admitted.append(request)
        if pod.running == 0:
            pod.stepping = False
            return
        prefill = sum(r.prompt for r in admitted)
        pod.admitted = admitted
        pod.stepping = True
        pod.step_started = self.now
        self.at(self.now + e.step_s(pod.running, prefill), Simulation.STEP_END, pod)

    def _step_end(self, pod: Pod) -> int:
        duration = self.now - pod.step_started
        pod.busy_s += duration
        pod.steps += 1
        batch = pod.running
        self.generation_tokens += batch
        fresh = len(pod.admitted)
        overhead = self.engine.token_overhead_ms / 1000
        for request in pod.admitted:
            request.first = self.now + overhead
            self.prompt_tokens += request.prompt
            self.ttft_log.append((self.now, request.first - request.arrival))
        if batch > fresh:
            self.itl_log.append((self.now, duration, batch - fresh))
        pod.admitted = []
        finished = 0
        while pod.finishing and pod.finishing[0][0] <= pod.steps:
            _, _, request = heapq.heappop(pod.finishing)
            request.last = self.now + overhead
            pod.running -= 1
            pod.reserved -= request.reserved
            finished += 1
        if pod.deleted and pod.running == 0 and not pod.waiting:
            pod.stepping = False
            self._gone(pod)
            return finished
        self._start_step(pod)
        return finished

    # -- pods ---------------------------------------------------------------------------------
    def _new_pod(self, ready_at: float) -> Pod:
        pod = Pod(self.next_uid, self.now, ready_at)
        self.next_uid += 1
        self.pods.append(pod)
        return pod

    def _ready(self, pod: Pod) -> None:
        if pod.deleted:
            return
        pod.ready = True
        while self.waiting_at_gateway:
            self._route(self.waiting_at_gateway.popleft())

    def _gone(self, pod: Pod) -> None:
        pod.gone_at = self.now
        self.busy_gone_s += pod.busy_s
        self.pods.remove(pod)

    def set_replicas(self, replicas: int) -> None:
        replicas = max(self.settings.min_replicas, min(self.settings.max_replicas, replicas))
        self.desired = replicas
        active = [p for p in self.pods if not p.deleted]
        low, high = self.settings.pod_start_s
        for _ in range(replicas - len(active)):
            pod = self._new_pod(self.now + self.start_rng.uniform(low, high))
            self.at(pod.ready_at, Simulation.READY, pod)
        if replicas < len(active):
            ranked = sorted(active, key=lambda p: (p.ready, p.load, -p.uid))
            for pod in ranked[: len(active) - replicas]:
                pod.deleted = True
                was_ready, pod.ready = pod.ready, False
                if not was_ready or (pod.running == 0 and not pod.waiting):
                    self._gone(pod)

    # -- metrics ------------------------------------------------------------------------------
    def busy_total(self) -> float:
        """Engine time spent in steps, all pods ever (a step under way counts up to now)."""
        total = self.busy_gone_s
        for pod in self.pods:
            total += pod.busy_s + (self.now - pod.step_started if pod.stepping else 0.0)
        return total

    def _sample(self) -> None:
        self.samples.append(
            Window(self.now, self.arrivals, self.prompt_tokens, self.generation_tokens, self.busy_total())
        )
        self.result.replicas.append(len(self.pods))
        self.result.ready_replica_seconds += len(self.ready_pods())

    def window_start(self, seconds: float) -> Window:
        for sample in self.samples:
            if self.now - sample.at <= seconds + 1e-9:
                return sample
        return self.samples[0]

    def gauges(self) -> tuple[float, float, float]:
        """Running, waiting (summed over ready pods) and mean KV-cache usage of the ready pods."""
        ready = self.ready_pods()
        running = float(sum(p.running for p in ready))
        waiting = float(sum(len(p.waiting) for p in ready)) + len(self.waiting_at_gateway)
        usage = statistics.fmean(p.reserved / self.engine.kv_tokens for p in ready) if ready else 0.0
        return running, waiting, usage

    def observation(self, seconds: float = WINDOW_S) -> TokenObservation:
        start = self.window_start(seconds)
        span = max(1e-9, self.now - start.at)
        q = self.settings.percentile / 100
        ttfts = sorted(t for at, t in self.ttft_log[bisect.bisect_left(self.ttft_log, (start.at, -1.0)) :])
        gaps = self.itl_log[bisect.bisect_left(self.itl_log, (start.at, -1.0, 0)) :]
        running, waiting, usage = self.gauges()
        return TokenObservation(
            window_seconds=span,
            ready_replicas=len(self.ready_pods()),
            arrival_rate=(self.arrivals - start.arrivals) / span,
            prompt_tokens_per_second=(self.prompt_tokens - start.prompt_tokens) / span,
            generation_tokens_per_second=(self.generation_tokens - start.generation_tokens) / span,
            ttft_ms=1000 * ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None,
            itl_ms=1000 * weighted_quantile(gaps, q) if gaps else None,
            ttft_mean_ms=1000 * statistics.fmean(ttfts) if ttfts else None,
            itl_mean_ms=1000 * sum(d * n for _, d, n in gaps) / sum(n for _, _, n in gaps) if gaps else None,
            running=running,
            waiting=waiting,
            kv_cache_usage=usage,
            wall_time=None,
        )

    def utilisation(self, seconds: float) -> float:
        """Mean GPU utilisation of the pods over the window (busy time over pod time)."""
        start = self.window_start(seconds)
        span = max(1e-9, self.now - start.at)
        return (self.busy_total() - start.busy_s) / span / max(1, len(self.ready_pods()))

    # -- results ------------------------------------------------------------------------------
    def _finish(self) -> None:
        result = self.result
        done = [r for r in self.requests if r.last is not None]
        t, i = self.settings.ttft_ms / 1000, self.settings.itl_ms / 1000
        result.requests = len(self.requests)
        result.within = sum(1 for r in done if r.ttft <= t and r.itl <= i)
        ttfts = sorted(r.ttft for r in done)
        itls = sorted(r.itl for r in done if r.generated > 1)
        result.ttft_p95_ms = 1000 * ttfts[int(0.95 * (len(ttfts) - 1))] if ttfts else 0.0
        result.itl_p95_ms = 1000 * itls[int(0.95 * (len(itls) - 1))] if itls else 0.0
        result.gpu_seconds = float(sum(result.replicas))
        result.max_replicas = max(result.replicas, default=0)


def weighted_quantile(gaps: list[tuple[float, float, int]], q: float) -> float:
    ranked = sorted((d, n) for _, d, n in gaps)
    total = sum(n for _, n in ranked)
    rank, seen = q * total, 0
    for d, n in ranked:
        seen += n
        if seen >= rank:
            return d
    return ranked[-1][0]


# -- policies ---------------------------------------------------------------------------------


class Controller:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def initial(self) -> int:
        """Every policy starts with what the clairvoyant sizing wants for the first minute."""
        return clairvoyant_replicas(self.sim, 0.0, 60.0)

    def first_delay(self) -> float:
        return 1.0

    def started(self, replicas: int) -> None:
        """The initial replicas are running (a scale-down window starts holding them now, as the
        HPA's does when it first sees a target: its recommendations begin with the current count)."""

    def step(self) -> float:
        raise NotImplementedError


def targets_of(settings: Settings, window: float) -> TokenTargets:
    return TokenTargets(
        settings.ttft_ms,
        settings.itl_ms,
        settings.percentile,
        settings.min_replicas,
        settings.max_replicas,
        window,
    )


class Tritonop(Controller):
    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.history = TokenHistory()
        self.targets = targets_of(sim.settings, sim.settings.tritonop_down_window_s)

    def started(self, replicas: int) -> None:
        self.history = TokenHistory(recommendations=((0.0, replicas),))

    def step(self) -> float:
        sim = self.sim
        # The operator's pod reader keeps one scrape a second: the short window is its last few.
        observation = replace(sim.observation(), recent=sim.observation(RECENT_SECONDS))
        decision: TokenDecision = token_policy.decide(observation, self.targets, sim.desired, self.history, sim.now)
        self.history = decision.history
        if decision.replicas != sim.desired:
            sim.result.decisions.append((sim.now, decision.replicas, decision.reason))
            sim.set_replicas(decision.replicas)
        return 1.0


class Hpa(Controller):
    """The HPA's algorithm on one signal (KEDA makes the signal an external metric)."""

    def __init__(self, sim: Simulation, signal: Callable[[], tuple[float, bool]], target: float) -> None:
        super().__init__(sim)
        self.signal = signal  # () -> (value, average-per-pod?) ; False: a total (AverageValue)
        self.target = target
        self.recommendations: list[tuple[float, int]] = []

    def started(self, replicas: int) -> None:
        self.recommendations = [(0.0, replicas)]

    def first_delay(self) -> float:
        return self.sim.settings.hpa_sync_s

    def step(self) -> float:
        sim, s = self.sim, self.sim.settings
        current = sim.desired
        value, per_pod = self.signal()
        ready = max(1, len(sim.ready_pods()))
        if per_pod:
            ratio = value / self.target
            desired = current if abs(ratio - 1) <= 0.1 else math.ceil(ready * ratio)
        else:
            ratio = value / (self.target * ready)
            desired = current if abs(ratio - 1) <= 0.1 else math.ceil(value / self.target)
        desired = max(s.min_replicas, min(desired, max(2 * current, current + 4), s.max_replicas))
        now = sim.now
        self.recommendations = [(t, r) for t, r in self.recommendations if now - t <= s.hpa_down_window_s]
        self.recommendations.append((now, desired))
        if desired < current:
            desired = max(r for _, r in self.recommendations)
        if desired != current:
            sim.result.decisions.append((now, desired, f"{value:.2f} vs {self.target}"))
            sim.set_replicas(desired)
        return s.hpa_sync_s


def clairvoyant_replicas(sim: Simulation, start: float, horizon: float) -> int:
    """token_policy.size with the true engine, for the most tokens any CLAIRVOYANT_BUCKET_S of
    the trace brings within [start, start + horizon]."""
    s, e = sim.settings, sim.engine
    arrivals = sim.arrival_times
    lo = bisect.bisect_left(arrivals, start)
    hi = bisect.bisect_right(arrivals, start + horizon)
    best = 1
    targets = targets_of(s, 0.0)
    model = (e.step_ms, e.step_ms_per_request, e.prefill_ms_per_token)
    buckets: dict[int, tuple[float, float, float, float]] = {}
    for request in sim.requests[lo:hi]:
        key = int((request.arrival - start) // CLAIRVOYANT_BUCKET_S)
        g, p, n, kv = buckets.get(key, (0.0, 0.0, 0.0, 0.0))
        buckets[key] = (g + request.generated, p + request.prompt, n + 1, kv + request.reserved * request.generated)
    for g, p, n, kv in buckets.values():
        span = CLAIRVOYANT_BUCKET_S
        wanted, _, allowed = token_policy.size(targets, model, g / span, p / span, p / n, 1.0, 1.0)
        # KV: requests hold their reservation for their tokens at the planned step time.
        step_s = e.step_ms / (1 - allowed.rho) / 1000
        caches = kv / span * step_s / e.kv_tokens
        per_cache = e.kv_tokens * g / kv if kv else 1.0  # requests a cache holds (token-weighted)
        wanted = max(wanted, math.ceil(caches / token_policy.kv_fill(per_cache, 1.0) - 1e-9))
        best = max(best, wanted)
    return max(s.min_replicas, min(s.max_replicas, best))


class Clairvoyant(Controller):
    def step(self) -> float:
        sim = self.sim
        horizon = sim.settings.pod_start_s[1] + CLAIRVOYANT_BUCKET_S
        wanted = clairvoyant_replicas(sim, sim.now, horizon)
        # Scale down only once nothing within the horizon needs more (a pod asked for later would
        # not be ready in time); scale up at once.
        if wanted != sim.desired:
            sim.set_replicas(wanted)
        return 1.0


class Fixed(Controller):
    """N replicas throughout (for experiments and tests)."""

    def __init__(self, sim: Simulation, replicas: int) -> None:
        super().__init__(sim)
        self.replicas = replicas

    def initial(self) -> int:
        return self.replicas

    def step(self) -> float:
        return 60.0


def make_controller(sim: Simulation, policy: str) -> Controller:
    s = sim.settings
    if policy.startswith("fixed-") and policy.removeprefix("fixed-").isdigit():
        return Fixed(sim, int(policy.removeprefix("fixed-")))
    if policy == "tritonop":
        return Tritonop(sim)
    base, _, suffix = policy.rpartition("-")
    if not (base in ("keda-waiting", "kv-cache", "hpa-gpu") and suffix.isdigit()):
        base, suffix = policy, ""
    if base == "keda-waiting":
        threshold = float(suffix) if suffix else s.keda_threshold
        return Hpa(sim, lambda: (sim.gauges()[1], False), threshold)
    if base == "kv-cache":
        return Hpa(sim, lambda: (sim.gauges()[2], True), int(suffix) / 100 if suffix else s.kv_target)
    if base == "hpa-gpu":
        target = int(suffix) / 100 if suffix else s.gpu_target
        return Hpa(sim, lambda: (sim.utilisation(s.hpa_sync_s), True), target)
    if policy == "clairvoyant":
        return Clairvoyant(sim)
    raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}, fixed-N, or a rule with its target")


def simulate(trace: list[TraceRequest], name: str, policy: str, seed: int, settings: Settings) -> RunResult:
    return Simulation(trace, name, policy, seed, settings).run()


# -- reports ----------------------------------------------------------------------------------


def summarize(runs: list[RunResult], clairvoyant: list[RunResult] | None) -> dict[str, Any]:
    def figure(values: list[float], digits: int) -> tuple[float, float]:
        mean, half = mean_ci(values)
        return round(mean, digits), round(half, digits)

    row: dict[str, Any] = {"policy": runs[0].policy, "trace": runs[0].trace, "seeds": len(runs)}
    for key, values, digits in (
        ("attainment", [r.attainment for r in runs], 2),
        ("gpu_seconds", [r.gpu_seconds for r in runs], 0),
        ("ttft_p95_ms", [r.ttft_p95_ms for r in runs], 0),
        ("itl_p95_ms", [r.itl_p95_ms for r in runs], 1),
    ):
        row[key], row[f"{key}_ci95"] = figure(values, digits)
    row["max_replicas"] = max(r.max_replicas for r in runs)
    row["attainment_by_seed"] = [round(r.attainment, 2) for r in runs]
    row["gpu_seconds_by_seed"] = [r.gpu_seconds for r in runs]
    row["requests"] = runs[0].requests
    if clairvoyant:
        row["x_clairvoyant"] = round(row["gpu_seconds"] / statistics.fmean(r.gpu_seconds for r in clairvoyant), 2)
    return row


def paired(runs: list[RunResult], baseline: list[RunResult]) -> dict[str, Any]:
    """runs minus baseline, seed by seed: mean and 95% half-width."""
    att = mean_ci([a.attainment - b.attainment for a, b in zip(runs, baseline, strict=True)])
    gpu = mean_ci([a.gpu_seconds - b.gpu_seconds for a, b in zip(runs, baseline, strict=True)])
    return {
        "vs": baseline[0].policy,
        "attainment_diff": round(att[0], 2),
        "attainment_diff_ci95": round(att[1], 2),
        "gpu_seconds_diff": round(gpu[0], 0),
        "gpu_seconds_diff_ci95": round(gpu[1], 0),
    }


def print_tables(rows: list[dict[str, Any]], diffs: list[dict[str, Any]]) -> None:
    print(
        "| trace | policy | both targets met, % | GPU-seconds | x clairvoyant | p95 TTFT ms | p95 ITL ms | max pods |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['trace']} | {r['policy']} | {r['attainment']:.2f} ± {r['attainment_ci95']:.2f} | "
            f"{r['gpu_seconds']:.0f} ± {r['gpu_seconds_ci95']:.0f} | {r.get('x_clairvoyant', '')} | "
            f"{r['ttft_p95_ms']:.0f} ± {r['ttft_p95_ms_ci95']:.0f} | "
            f"{r['itl_p95_ms']:.1f} ± {r['itl_p95_ms_ci95']:.1f} | "
            f"{r['max_replicas']} |"
        )
    if diffs:
        print()
        print("| trace | tritonop minus | attainment, points | GPU-seconds |")
        print("|---|---|---|---|")
        for d in diffs:
            print(
                f"| {d['trace']} | {d['vs']} | {d['attainment_diff']:+.2f} ± {d['attainment_diff_ci95']:.2f} | "
                f"{d['gpu_seconds_diff']:+.0f} ± {d['gpu_seconds_diff_ci95']:.0f} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default="code,conv", help="comma list of code, conv or FILE.csv[.gz]")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--ttft-ms", type=float, default=500.0)
    parser.add_argument("--itl-ms", type=float, default=50.0)
    parser.add_argument("--pod-start-s", type=parse_start, default=(60.0, 90.0))
    parser.add_argument("--max-replicas", type=int, default=16)
    parser.add_argument("--routing", choices=("least", "round-robin"), default="least")
    parser.add_argument("--keda-threshold", type=float, default=3.0, help="waiting requests per replica")
    parser.add_argument("--limit-s", type=float, help="replay only the trace's first seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    settings = Settings(
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        pod_start_s=args.pod_start_s,
        max_replicas=args.max_replicas,
        routing=args.routing,
        keda_threshold=args.keda_threshold,
        limit_s=args.limit_s,
    )
    policies = args.policies.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    rows, diffs = [], []
    started = time.monotonic()
    for name in args.trace.split(","):
        trace = load_trace(name)
        runs = {p: [simulate(trace, name, p, seed, settings) for seed in seeds] for p in policies}
        clairvoyant = runs.get("clairvoyant")
        for p in policies:
            rows.append(summarize(runs[p], clairvoyant))
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
        if "tritonop" in runs:
            for p in policies:
                if p != "tritonop":
                    diffs.append({"trace": name, **paired(runs["tritonop"], runs[p])})
                    if args.json:
                        print(json.dumps(diffs[-1]), flush=True)
    if not args.json:
        print_tables(rows, diffs)
    print(f"\n{len(seeds)} paired seeds; {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
