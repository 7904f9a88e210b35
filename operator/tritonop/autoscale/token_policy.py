"""Pure: replicas for a generative (streaming) model, from its TTFT and ITL targets.

A continuous-batching engine (vLLM, TensorRT-LLM's in-flight batcher, model_repo/tokens) runs one
loop per replica: each step serves every running request one token, and prefills the requests it
admits. A step takes

    step = a + b x batch + c x prompt tokens admitted in it

so over any stretch of time T a busy replica spends a x steps + b x tokens generated + c x prompt
tokens. Per replica and second, with G generation and P prompt tokens/s:

    1 = a / ITL + b x G + c x P          (steps/s = 1 / step time; the mean ITL is the step time)

`StepModel` learns a (ms per step), b (ms per generated token) and c (ms per prompt token) online
from that identity, by least squares over the deployment's own windows (exponential forgetting,
a weak prior) - the capacity per replica in tokens/s: 1/c prompt tokens/s, and B/(a + b B)
generation tokens/s at batch B. The work a replica does, rho = b G + c P, is its busy fraction
beyond the fixed step overhead, and the mean step time is then a / (1 - rho): a processor-sharing
server. The targets decide how busy a replica may run (as `queueing.allowed_utilisation` does for
request/response models):

- ITL at the percentile: k x a / (1 - rho) <= target, where k (the percentile over the mean, from
  the window's histogram: prefills stall a step, batches vary) is learned;
- TTFT at the percentile: r x (TTFT_STEPS x a / (1 - rho) + c x mean prompt) <= target: a request
  waits for the running step, then its own step with its prefill; r (percentile over that model)
  is learned from windows without KV-cache waits.
A looser target lets replicas run busier (fewer replicas), a tighter one idler. A target at or
below what an idle replica delivers (k a for ITL, r (TTFT_STEPS a + c prompt) for TTFT) cannot be
met by adding replicas: it is reported, and the replicas are sized for MIN_UTILISATION.

Replicas wanted = the most of:
- work: (b G + c P) x the forecast peak over the lead time (forecast.Forecast on the request rate:
  trend, daily/weekly profile, learned error) over the allowed rho;
- KV cache: the caches in use (usage x ready replicas), grown by the waiting requests' share and by
  the longer requests the planned ITL makes, at the fill a cache of M requests keeps without
  overflowing one time in twenty (1 - 1.65 / sqrt(M));
- pressure: requests waiting while the caches are near full mean demand not yet served: at least
  one replica more than ready.
- burst: while the short window (`recent`, the last 5 s) has TTFT or ITL over target, the same
  sizing from its figures too: a burst of a few seconds is a third of a 15 s window's mean (the
  KPA's panic window), and the replicas it brings stay for the scale-down window, for the next;
- spare, while the forecast has watched the traffic for less than its warm-up (10 minutes): the
  request/response policy's reserve, WARM_UP_SPARE replicas shrinking with the load; it holds
  before the step model is learned too (the load then at the model's prior).
Scale-up is immediate; scale-down waits for the stabilization window (the highest recommendation
in it) and then removes half of the surplus at most every third of the window. The window is the
spec's at most: it shrinks, down to MIN_HOLD_FRACTION of it, while the demand forecast has been
right, i.e. while its learned error (the shortfalls' quantile, in Poisson sigmas) stays under
the prior's two sigmas (`hold_seconds`). Smooth traffic then gives back replicas sooner; bursty
traffic, whose forecast misses by many sigmas, keeps the whole window, which is what holds
replicas between its bursts.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from tritonop.autoscale.forecast import ERROR_PRIOR, Forecast, LeadTime
from tritonop.autoscale.policy import FAR_BELOW, SPARE_DECAY, WARM_UP_SPARE

MAX_UTILISATION = 0.9
MIN_UTILISATION = 0.1
TTFT_STEPS = 1.5  # a request waits for half a running step, then its own step
PRIOR = (20.0, 1.0, 0.05)  # a (ms), b (ms/token), c (ms/prompt token): a weak start
PRIOR_WEIGHT = 0.05  # the prior counts as this many (typical) windows: it only steadies the start
FORGET_SECONDS = 1800.0  # a window's weight halves every FORGET_SECONDS x ln 2
MIN_BATCH_FOR_MODEL = 2.0  # learn the step model only from windows where the engine was busy
MIN_WINDOWS = 5  # learned windows before sizing from the model; before: the latency fallback
RATIO_SAMPLES = 60  # k and r are medians of the last this many samples
ITL_RATIO_PRIOR, TTFT_RATIO_PRIOR = 1.5, 2.0
RATIO_BOUNDS = (1.0, 10.0)
KV_Z = 1.65  # a cache of M requests is filled to M - z sqrt(M) on average (Poisson occupancy)
KV_MIN_FILL = 0.5
KV_DURATION_CAP = 2.0  # requests grow longer (or shorter) at the planned ITL by at most this factor
KV_FULL = 0.9  # waiting requests with the caches this full: pressure
DOWN_STEPS_PER_WINDOW = 3
MIN_HOLD_FRACTION = 0.2  # a confident forecast shortens the scale-down window at most to this share
RATE_SECONDS = 120.0  # the per-request costs average over this long
FALLBACK_UP = 2.0  # before the model is learned: above target, scale by the ratio, at most 2x
MAX_SEARCH = 10_000  # replicas: the KV search stops here (max_replicas caps it anyway)


@dataclass(frozen=True)
class TokenTargets:
    """The spec's token objectives and bounds."""

    ttft_ms: float | None
    itl_ms: float | None
    percentile: float = 95.0
    min_replicas: int = 1
    max_replicas: int = 8
    scale_down_stabilization_seconds: float = 300.0
    spare_replicas: int | None = None  # spec.autoscaling.spareReplicas: a floor (0: none); unset: the warm-up reserve


@dataclass(frozen=True)
class TokenObservation:
    """What the backend's metrics said over the last window, over ready replicas (all pods summed)."""

    window_seconds: float
    ready_replicas: int
    arrival_rate: float  # requests/s (Triton counts a decoupled request when execute() returns)
    prompt_tokens_per_second: float
    generation_tokens_per_second: float
    ttft_ms: float | None = None  # at the targets' percentile
    itl_ms: float | None = None
    ttft_mean_ms: float | None = None  # the histograms' sum / count
    itl_mean_ms: float | None = None
    running: float = 0.0  # requests being generated now
    waiting: float = 0.0  # requests held back now (KV cache or batch slots)
    kv_cache_usage: float | None = None  # fraction of the KV cache in use, mean over the pods
    wall_time: float | None = None
    # The same figures over the last metrics.RECENT_SECONDS (None: not measured, e.g. from a Prometheus
    # that scrapes every 15-30 s). While its TTFT or ITL is over target, replicas are sized from
    # it too: a burst of a few seconds is a third of a 15 s window's mean (the KPA's panic window).
    recent: TokenObservation | None = None


@dataclass(frozen=True)
class StepModel:
    """Least squares of 1 = a x (1/ITL) + b x G + c x P (per replica, tokens/ms) with forgetting."""

    xtx: tuple[float, ...] = (0.0,) * 9  # 3x3, row-major
    xty: tuple[float, ...] = (0.0,) * 3
    windows: int = 0
    at: float | None = None
    weight: float = 0.0  # the windows' total weight after forgetting

    def observe(self, now: float, inverse_itl: float, generation: float, prompt: float) -> StepModel:
        decay = 1.0 if self.at is None else math.exp(-max(0.0, now - self.at) / FORGET_SECONDS)
        x = (inverse_itl, generation, prompt)
        xtx = tuple(decay * self.xtx[3 * i + j] + x[i] * x[j] for i in range(3) for j in range(3))
        xty = tuple(decay * self.xty[i] + x[i] for i in range(3))
        return StepModel(xtx, xty, self.windows + 1, now, decay * self.weight + 1.0)

    def solve(self) -> tuple[float, float, float]:
        """(a, b, c) in ms; ridge towards PRIOR, scaled per coefficient; never negative."""
        matrix = [list(self.xtx[3 * i : 3 * i + 3]) for i in range(3)]
        vector = list(self.xty)
        if self.weight <= 0:
            return PRIOR
        for i, prior in enumerate(PRIOR):
            # The prior as PRIOR_WEIGHT windows of feature i's mean square, all saying coefficient
            # i is its prior (a ridge towards it, on the data's own scale).
            weight = PRIOR_WEIGHT * max(self.xtx[4 * i] / self.weight, 1e-12)
            matrix[i][i] += weight
            vector[i] += weight * prior
        solution = _solve3(matrix, vector)
        if solution is None:
            return PRIOR
        a, b, c = solution
        return max(a, 0.1), max(b, 0.0), max(c, 0.0)


def _solve3(matrix: list[list[float]], vector: list[float]) -> tuple[float, float, float] | None:
    """Gaussian elimination with partial pivoting (3x3)."""
    rows = [[*matrix[i], vector[i]] for i in range(3)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-15:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(3):
            if r != col:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [rows[r][k] - factor * rows[col][k] for k in range(4)]
    return rows[0][3] / rows[0][0], rows[1][3] / rows[1][1], rows[2][3] / rows[2][2]


@dataclass(frozen=True)
class TokenHistory:
    model: StepModel = field(default_factory=StepModel)
    itl_ratios: tuple[float, ...] = ()
    ttft_ratios: tuple[float, ...] = ()
    # Smoothed rates (RATE_SECONDS): requests/s, prompt and generation tokens/s, KV caches in use;
    # per request, their ratios: what one more request per second costs.
    rates: tuple[float, float, float, float] | None = None
    rates_at: float | None = None
    forecast: Forecast = field(default_factory=Forecast)
    lead: LeadTime = field(default_factory=LeadTime)
    recommendations: tuple[tuple[float, int], ...] = ()  # within the scale-down window
    last_scale_up: float = float("-inf")
    last_scale_down: float = float("-inf")

    def per_request(self) -> tuple[float, float, float]:
        """Prompt tokens, generation tokens and KV caches (x seconds) per request/s."""
        if self.rates is None or self.rates[0] <= 0:
            return 0.0, 0.0, 0.0
        rate, prompt, generation, caches = self.rates
        return prompt / rate, generation / rate, caches / rate

    @property
    def prompt_per_request(self) -> float | None:
        return self.per_request()[0] if self.rates is not None and self.rates[0] > 0 else None

    @property
    def itl_ratio(self) -> float:
        return statistics.median(self.itl_ratios) if self.itl_ratios else ITL_RATIO_PRIOR

    @property
    def ttft_ratio(self) -> float:
        return statistics.median(self.ttft_ratios) if self.ttft_ratios else TTFT_RATIO_PRIOR


@dataclass(frozen=True)
class Allowed:
    """How busy each replica may run, and what limits it."""

    rho: float
    limit: str  # "itl", "ttft" or "none"
    unreachable: str | None = None


@dataclass(frozen=True)
class TokenDecision:
    replicas: int
    recommendation: int
    direction: str
    reason: str
    history: TokenHistory
    unreachable: str | None = None
    utilisation: float | None = None


def _bounded(value: float) -> float:
    low, high = RATIO_BOUNDS
    return min(high, max(low, value))


def allowed_utilisation(
    targets: TokenTargets,
    a_ms: float,
    c_ms: float,
    prompt_tokens: float,
    itl_ratio: float = ITL_RATIO_PRIOR,
    ttft_ratio: float = TTFT_RATIO_PRIOR,
) -> Allowed:
    """The busiest a replica may run with both percentiles at or under their targets."""
    rho, limit, unreachable = MAX_UTILISATION, "none", []
    if targets.itl_ms is not None:
        floor = itl_ratio * a_ms
        if targets.itl_ms <= floor:
            unreachable.append(f"ITL p{targets.percentile:g} {targets.itl_ms:g}ms <= {floor:.0f}ms idle")
            rho, limit = MIN_UTILISATION, "itl"
        else:
            allowed = 1.0 - floor / targets.itl_ms
            if allowed < rho:
                rho, limit = allowed, "itl"
    if targets.ttft_ms is not None:
        budget = targets.ttft_ms / ttft_ratio - c_ms * prompt_tokens  # for the steps, ms
        floor = ttft_ratio * (TTFT_STEPS * a_ms + c_ms * prompt_tokens)
        if budget <= TTFT_STEPS * a_ms:
            unreachable.append(f"TTFT p{targets.percentile:g} {targets.ttft_ms:g}ms <= {floor:.0f}ms idle")
            rho, limit = MIN_UTILISATION, "ttft"
        else:
            allowed = 1.0 - TTFT_STEPS * a_ms / budget
            if allowed < rho:
                rho, limit = allowed, "ttft"
    text = "; ".join(unreachable) or None
    return Allowed(max(MIN_UTILISATION, rho), limit, text)


def kv_fill(running_per_replica: float, usage: float) -> float:
    """The mean fill a cache holding M = running / usage requests keeps without overflowing often."""
    if usage <= 0 or running_per_replica <= 0:
        return 1.0 - KV_Z / math.sqrt(16.0)
    requests = running_per_replica / usage
    return max(KV_MIN_FILL, 1.0 - KV_Z / math.sqrt(max(requests, 1.0)))


def size(
    targets: TokenTargets,
    model: tuple[float, float, float],
    generation: float,
    prompt: float,
    prompt_per_request: float,
    itl_ratio: float = ITL_RATIO_PRIOR,
    ttft_ratio: float = TTFT_RATIO_PRIOR,
    kv_caches: float = 0.0,
    kv_fill_target: float = 1.0,
    kv_step_ms: float | None = None,
) -> tuple[int, str, Allowed]:
    """Replicas for G generation and P prompt tokens/s (already the planned peak), and for the KV
    caches the requests hold (in caches; already grown by waiting requests and the plan), measured
    while steps took kv_step_ms (None: as long as they will): with n replicas each runs
    rho = work / n busy, a step takes a / (1 - rho), and requests hold their cache that much longer
    or shorter; the fewest n whose caches then stay at kv_fill_target."""
    a, b, c = model
    allowed = allowed_utilisation(targets, a, c, prompt_per_request, itl_ratio, ttft_ratio)
    work = b * generation / 1000.0 + c * prompt / 1000.0
    by_work = max(1, math.ceil(work / allowed.rho - 1e-9))
    wanted = by_work
    if kv_caches > 0:
        while wanted < MAX_SEARCH:
            stretch = 1.0
            if kv_step_ms:
                step = a / max(1.0 - work / wanted, 1.0 - MAX_UTILISATION)
                stretch = min(KV_DURATION_CAP, max(1.0 / KV_DURATION_CAP, step / kv_step_ms))
            if kv_caches * stretch / wanted <= kv_fill_target:
                break
            wanted += 1
    reason = (
        f"{generation:.0f}+{prompt:.0f} tok/s (gen+prompt) = {work:.2f} replicas of work at "
        f"a={a:.1f}ms b={b:.2f}ms c={c:.3f}ms, {allowed.rho:.0%} busy for the {allowed.limit} target"
    )
    if wanted > by_work:
        reason += f"; KV cache {kv_caches:.2f} caches, {kv_fill_target:.0%} full each"
    return wanted, reason, allowed


def learn(observation: TokenObservation, history: TokenHistory, now: float) -> TokenHistory:
    """What one window teaches: the step model, the percentile ratios, the prompt size, the forecast."""
    o = observation
    model, itl_ratios, ttft_ratios = history.model, history.itl_ratios, history.ttft_ratios
    if o.ready_replicas > 0 and o.itl_mean_ms:
        g = o.generation_tokens_per_second / o.ready_replicas / 1000.0  # tokens/ms per replica
        p = o.prompt_tokens_per_second / o.ready_replicas / 1000.0
        if g * o.itl_mean_ms >= MIN_BATCH_FOR_MODEL:
            model = model.observe(now, 1.0 / o.itl_mean_ms, g, p)
        if o.itl_ms is not None:
            itl_ratios = (*itl_ratios, _bounded(o.itl_ms / o.itl_mean_ms))[-RATIO_SAMPLES:]
    rates, rates_at = history.rates, history.rates_at
    if o.ready_replicas > 0:
        sample = (
            o.arrival_rate,
            o.prompt_tokens_per_second,
            o.generation_tokens_per_second,
            (o.kv_cache_usage or 0.0) * o.ready_replicas,
        )
        if rates is None or rates_at is None:
            rates = sample
        else:
            weight = 1.0 - math.exp(-max(0.0, now - rates_at) / RATE_SECONDS)
            rates = tuple(old + weight * (new - old) for old, new in zip(rates, sample, strict=True))  # type: ignore[assignment]
        rates_at = now
    history = replace(history, rates=rates, rates_at=rates_at)
    prompt_per_request = history.prompt_per_request
    if o.ttft_ms is not None and o.itl_mean_ms and o.waiting == 0 and prompt_per_request is not None:
        _, _, c = model.solve()
        expected = TTFT_STEPS * o.itl_mean_ms + c * prompt_per_request
        ttft_ratios = (*ttft_ratios, _bounded(o.ttft_ms / expected))[-RATIO_SAMPLES:]
    forecast = history.forecast
    if o.ready_replicas > 0:
        forecast = forecast.observe(now, o.wall_time, o.arrival_rate, history.lead.seconds, o.window_seconds)
    return replace(
        history,
        model=model,
        itl_ratios=itl_ratios,
        ttft_ratios=ttft_ratios,
        forecast=forecast,
    )


def _cache_pressure(observation: TokenObservation) -> str | None:
    """Requests waiting while the KV caches are near full: demand not served yet. (A request that
    arrives during a step waits for the next one in any engine: that alone is none, and counted
    as such it held a replica more for a whole scale-down window.)"""
    usage = observation.kv_cache_usage or 0.0
    if observation.waiting > 0 and usage >= KV_FULL:
        return f"{observation.waiting:.0f} waiting with the KV caches {usage:.0%} full"
    return None


def _fallback(observation: TokenObservation, targets: TokenTargets, current: int) -> tuple[int, str]:
    """Before the step model is learned: the targets themselves, HPA-style, and requests waiting in
    full KV caches (one replica more). Within them, one replica fewer when far below them (as the
    request/response fallback) or when each replica runs fewer requests than the model is learned
    from: such replicas teach nothing and would otherwise never be given back."""
    ratios = []
    if targets.ttft_ms and observation.ttft_ms is not None:
        ratios.append(observation.ttft_ms / targets.ttft_ms)
    if targets.itl_ms and observation.itl_ms is not None:
        ratios.append(observation.itl_ms / targets.itl_ms)
    ready = max(1, observation.ready_replicas)
    if not ratios:
        return current, "no TTFT or ITL measured yet"
    worst = max(ratios)
    if worst > 1.1:
        return max(current, math.ceil(ready * min(worst, FALLBACK_UP))), f"{worst:.2f}x the target, model not learned"
    if (pressure := _cache_pressure(observation)) is not None:
        return max(current, ready + 1), f"{pressure}, model not learned"
    if worst < FAR_BELOW:
        return current - 1, f"{worst:.2f}x the target, far below it, model not learned"
    if worst <= 1.0 and observation.running / ready < MIN_BATCH_FOR_MODEL:
        return current - 1, f"{worst:.2f}x the target, {observation.running / ready:.1f} requests per replica"
    return current, f"{worst:.2f}x the target, model not learned"


def _with_reserve(
    o: TokenObservation,
    targets: TokenTargets,
    model: tuple[float, float, float],
    forecast: Forecast,
    now: float,
    wanted: int,
    reason: str,
) -> tuple[int, str]:
    """At least the spec's spareReplicas, or WARM_UP_SPARE while the forecast has not watched the
    bursts yet (the request/response policy's reserve), replicas' worth idle, shrinking with the
    load (as policy.sized does)."""
    floor: float | None = targets.spare_replicas
    if floor is None and forecast.warming(now):
        floor = WARM_UP_SPARE
    if not floor:
        return wanted, reason
    load = o.generation_tokens_per_second * model[1] / 1000.0 + o.prompt_tokens_per_second * model[2] / 1000.0
    spare = math.ceil(load + floor / (1 + SPARE_DECAY * load) - 1e-9)
    if spare <= wanted:
        return wanted, reason
    learning = " while learning the bursts" if targets.spare_replicas is None else ""
    return spare, f"{reason}; {floor:g} spare{learning}"


def recommend(
    observation: TokenObservation, targets: TokenTargets, current: int, history: TokenHistory, now: float
) -> tuple[int, str, Allowed | None]:
    """Replicas wanted now (before stabilization), why, and the allowed busy fraction."""
    o = observation
    if o.ready_replicas == 0:
        return current, "no ready replica to measure", None
    if o.arrival_rate == 0 and o.running == 0 and o.waiting == 0:
        return targets.min_replicas, "no traffic", None
    if history.model.windows < MIN_WINDOWS:
        wanted, reason = _fallback(o, targets, current)
        # The bursts are as unknown as the engine: the reserve holds from the first window (at the
        # step model's prior until it is learned), not only once the model is.
        wanted, reason = _with_reserve(o, targets, history.model.solve(), history.forecast, now, wanted, reason)
        return wanted, reason, None
    model = history.model.solve()
    wanted, reason, allowed = _sized(o, targets, history, model)
    if (recent := o.recent) is not None and (breach := _over_target(recent, targets)) is not None:
        # A burst shorter than the window: its own rates (and the pods it brings stay for the
        # scale-down window, for the next burst).
        burst, burst_reason, burst_allowed = _sized(recent, targets, history, model)
        if burst > wanted:
            wanted, allowed = burst, burst_allowed
            reason = f"the last {recent.window_seconds:.0f}s over target ({breach}): {burst_reason}"
    wanted, reason = _with_reserve(o, targets, model, history.forecast, now, wanted, reason)
    if (pressure := _cache_pressure(o)) is not None and wanted <= o.ready_replicas:
        wanted = o.ready_replicas + 1
        reason += f"; {pressure}"
    return wanted, reason, allowed


def _over_target(o: TokenObservation, targets: TokenTargets) -> str | None:
    """Which measured percentile is over its target (None: both within, or not measured)."""
    over = []
    if targets.ttft_ms is not None and o.ttft_ms is not None and o.ttft_ms > targets.ttft_ms:
        over.append(f"TTFT {o.ttft_ms:.0f}ms > {targets.ttft_ms:g}ms")
    if targets.itl_ms is not None and o.itl_ms is not None and o.itl_ms > targets.itl_ms:
        over.append(f"ITL {o.itl_ms:.0f}ms > {targets.itl_ms:g}ms")
    return ", ".join(over) or None


def _sized(
    o: TokenObservation, targets: TokenTargets, history: TokenHistory, model: tuple[float, float, float]
) -> tuple[int, str, Allowed]:
    """Replicas from the learned engine (a, b, c) for the planned demand (the forecast's over the
    lead time, or what the window saw if more) and the KV caches it holds."""
    lead = history.lead.seconds
    peak, source = history.forecast.peak(o.wall_time, lead)
    peak = max(peak, o.arrival_rate)
    planned = peak + history.forecast.headroom(peak, lead)  # requests/s to serve one lead time ahead
    prompt_each, generation_each, caches_each = history.per_request()
    # Tokens: what the window saw, or the planned rate at the recent cost per request.
    generation = max(o.generation_tokens_per_second, planned * generation_each)
    prompt = max(o.prompt_tokens_per_second, planned * prompt_each)
    # KV: the caches in use, with the waiting requests' share, or the planned rate's (measured
    # while a step took the window's mean ITL).
    caches = (o.kv_cache_usage or 0.0) * o.ready_replicas
    if o.running > 0:
        caches *= (o.running + o.waiting) / o.running
    caches = max(caches, planned * caches_each)
    fill = kv_fill(o.running / o.ready_replicas, o.kv_cache_usage or 0.0)
    prompt_per_request = prompt_each or (o.prompt_tokens_per_second / o.arrival_rate if o.arrival_rate else 0.0)
    wanted, reason, allowed = size(
        targets,
        model,
        generation,
        prompt,
        prompt_per_request,
        history.itl_ratio,
        history.ttft_ratio,
        caches,
        fill,
        o.itl_mean_ms,
    )
    reason = f"{o.arrival_rate:.1f} req/s, planned {planned:.1f} ({source} + headroom within {lead:.0f}s): " + reason
    return wanted, reason, allowed


def hold_seconds(targets: TokenTargets, forecast: Forecast) -> float:
    """The scale-down window to apply: the spec's, times the forecast's learned error over the
    prior's (two Poisson sigmas), between MIN_HOLD_FRACTION and 1. Before enough forecasts were
    checked the error is the prior itself: the whole window."""
    window = targets.scale_down_stabilization_seconds
    return window * min(1.0, max(MIN_HOLD_FRACTION, forecast.error / ERROR_PRIOR))


def decide(
    observation: TokenObservation, targets: TokenTargets, current: int, history: TokenHistory, now: float
) -> TokenDecision:
    """(observation, targets, current replicas, history, now) -> replicas, why, what was learned."""
    learned = learn(observation, history, now)
    raw, reason, allowed = recommend(observation, targets, current, learned, now)
    raw = max(targets.min_replicas, min(targets.max_replicas, raw))
    # Kept for the spec's whole window (the forecast may lose its confidence), applied over the hold.
    window = targets.scale_down_stabilization_seconds
    recent = (*((t, r) for t, r in learned.recommendations if now - t <= window), (now, raw))
    window = hold_seconds(targets, learned.forecast)
    replicas, last_down = current, learned.last_scale_down
    if raw > current:
        replicas = raw
    elif raw < current:
        held = max(r for t, r in recent if now - t <= window)
        if held >= current:
            reason += f" (held by the {window:.0f}s scale-down window)"
        elif now - max(last_down, learned.last_scale_up) < window / DOWN_STEPS_PER_WINDOW:
            reason += f" (the last scale change was under {window / DOWN_STEPS_PER_WINDOW:.0f}s ago)"
        else:
            replicas = current - math.ceil((current - held) / 2)
            last_down = now
    replicas = max(targets.min_replicas, min(targets.max_replicas, replicas))
    direction = "up" if replicas > current else "down" if replicas < current else "none"
    last_up = now if direction == "up" else learned.last_scale_up
    lead = learned.lead.observe(now, observation.ready_replicas, current, replicas)
    remembered = replace(learned, recommendations=recent, last_scale_up=last_up, last_scale_down=last_down, lead=lead)
    return TokenDecision(
        replicas,
        raw,
        direction,
        reason,
        remembered,
        allowed.unreachable if allowed else None,
        allowed.rho if allowed else None,
    )
