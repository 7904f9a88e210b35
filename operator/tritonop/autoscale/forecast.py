"""Pure: the demand a pod asked for now will meet, one lead time ahead.

A pod asked for now serves only after the deployment's lead time (replica write -> Ready with the
target version loaded; measured, see `LeadTime`). The policy therefore sizes for the most demand
expected over that horizon, plus headroom for this forecast's error:
- trend: two exponential averages of the demand (10 s and 120 s); a linear ramp makes them differ
  by slope x (120 - 10), so the slope is read from their difference (only rises are projected);
- profile: demand by time of day (5-minute buckets) and of week (1-hour buckets), learned online
  from the deployment's own traffic, each bucket an exponential average over the periods seen.
  Once the buckets around now and ahead are known, the profile's peak over the horizon relative
  to now scales today's level (the level is today's, the shape is learned);
- error: every few seconds a forecast is remembered and later compared with the peak demand that
  really came within its horizon; the shortfall, in units of sqrt(demand) (Poisson noise scales
  so), joins the last ERROR_SAMPLES shortfalls, and the headroom is their ERROR_QUANTILE: bursts
  that recur (a tenth of the forecasts or more missed them) are planned for, a one-off level
  shift is not (after one lead time the level itself has moved), and smooth traffic keeps little.
  Learned headroom never plans past the highest demand seen recently (a decaying maximum): it
  exists for bursts like the ones seen, and at a burst's top there is nothing above to plan for.
- the lead time's length: each demand reading is a rate over a few seconds (the pod reader's
  window: 3 s for requests, 16 s for tokens; Prometheus' 30 s), so it carries that window's
  Poisson noise, sqrt(rate / window). A shortfall is the highest reading over the horizon, so it
  holds the largest of n such noises, n = horizon / window, which grows as sqrt(2 ln n); the
  recent peak, the highest reading of minutes, holds as much. So over a 300 s lead both cover a
  far higher quantile of the demand at any one moment than over a 10 s lead, while a latency
  target counts each moment's requests. The expected largest noise beyond a FAST_SECONDS
  horizon's (the level's own averaging time) comes off each shortfall and, for the lead time, off
  the recent peak: the headroom covers a moment's demand alike at every lead (short leads keep
  it all; the rate's swings between readings are still paid for, bench/README Part 14).
Everything is bounded: two profiles of 288 and 168 numbers, at most MAX_PENDING forecasts and
ERROR_SAMPLES shortfalls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from statistics import NormalDist

FAST_SECONDS = 10.0
SLOW_SECONDS = 120.0
DAY = 86_400
WEEK = 7 * DAY
DAY_BUCKET = 300
WEEK_BUCKET = 3_600
MONDAY = 4 * DAY  # 1970-01-05, the first Monday after the epoch: the weekly profile starts there
PROFILE_WEIGHT = 0.5  # a new period's bucket against what earlier periods taught
MIN_RATE = 0.1  # req/s: below this a profile ratio means nothing
ERROR_PRIOR = 2.0  # shortfall before enough forecasts were checked, in sqrt(req/s) (two Poisson sigmas)
ERROR_SAMPLES = 64  # the shortfalls of the last this many checked forecasts
MIN_ERROR_SAMPLES = 8  # fewer checked than this: the prior
ERROR_QUANTILE = 0.9
RECENT_PEAK_SECONDS = 300.0  # the recent peak decays towards the level with this time constant
MAX_PENDING = 32
DEFAULT_LEAD_SECONDS = 30.0  # before any pod start was measured (never assume seconds)
PENDING_EXPIRY_SECONDS = 3_600.0  # a pod not serving an hour after it was asked for: stop waiting
# Until the traffic has been watched this long, the prior headroom stays as a floor, uncapped: a
# few minutes of calm say nothing about the bursts to come (what the spare replicas did before).
WARM_UP_SECONDS = 600.0
LEAD_SAMPLES = 5  # the lead time is the longest of the last few measured starts


@dataclass(frozen=True)
class Profile:
    """Mean demand per bucket of a period (a day or a week), learned online."""

    period: int
    bucket: int
    values: tuple[float | None, ...]
    offset: int = 0  # seconds after the epoch where bucket 0 starts (the epoch was a Thursday)
    current: int = -1  # absolute bucket number being accumulated
    total: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls, period: int, bucket: int, offset: int = 0) -> Profile:
        return cls(period, bucket, (None,) * (period // bucket), offset)

    @property
    def known(self) -> int:
        return sum(v is not None for v in self.values)

    def observe(self, wall: float, demand: float) -> Profile:
        bucket = int((wall - self.offset) // self.bucket)
        if bucket == self.current:
            return replace(self, total=self.total + demand, count=self.count + 1)
        values = self.values
        if self.current >= 0 and self.count:
            mean = self.total / self.count
            index = self.current % len(values)
            old = values[index]
            learned = mean if old is None else (1 - PROFILE_WEIGHT) * old + PROFILE_WEIGHT * mean
            values = (*values[:index], learned, *values[index + 1 :])
        return Profile(self.period, self.bucket, values, self.offset, bucket, demand, 1)

    def at(self, wall: float) -> float | None:
        """Demand the profile expects at this moment: linear between bucket centres."""
        position = (wall - self.offset) / self.bucket - 0.5
        below = math.floor(position)
        size = len(self.values)
        first, second = self.values[below % size], self.values[(below + 1) % size]
        if first is None or second is None:
            return None
        fraction = position - below
        return first + (second - first) * fraction

    def peak_ratio(self, wall: float, horizon: float) -> float | None:
        """The profile's highest demand over [wall, wall + horizon] relative to now's."""
        now = self.at(wall)
        if now is None:
            return None
        steps = max(1, math.ceil(horizon / (self.bucket / 2)))
        peak = now
        for step in range(1, steps + 1):
            value = self.at(wall + horizon * step / steps)
            if value is None:
                return None
            peak = max(peak, value)
        return peak / max(now, MIN_RATE)


@dataclass(frozen=True)
class LeadTime:
    """Measured pod starts: from the replica write that asked for a pod to that pod serving."""

    samples: tuple[float, ...] = ()
    pending: tuple[tuple[float, int], ...] = ()  # (written at, replicas asked for) not yet all ready

    @property
    def seconds(self) -> float:
        return max(self.samples) if self.samples else DEFAULT_LEAD_SECONDS

    def observe(self, now: float, ready: int, replicas_before: int, replicas_after: int) -> LeadTime:
        """Ready replicas seen now; a write from replicas_before to replicas_after just happened."""
        samples = list(self.samples)
        pending = []
        for written, asked in self.pending:
            if ready >= asked:
                samples.append(now - written)
            elif asked <= replicas_after and now - written <= PENDING_EXPIRY_SECONDS:
                # (a later scale-down below it: that pod will never come)
                pending.append((written, asked))
        if replicas_after > replicas_before and replicas_after > ready:
            pending.append((now, replicas_after))
        return LeadTime(tuple(samples[-LEAD_SAMPLES:]), tuple(pending[-MAX_PENDING:]))


@dataclass(frozen=True)
class Forecast:
    """What the forecaster remembers between evaluations."""

    fast: float | None = None
    slow: float | None = None
    at: float | None = None  # when fast/slow were last updated
    daily: Profile = field(default_factory=lambda: Profile.empty(DAY, DAY_BUCKET))
    weekly: Profile = field(default_factory=lambda: Profile.empty(WEEK, WEEK_BUCKET, MONDAY))
    errors: tuple[float, ...] = ()  # recent shortfalls, in sqrt(req/s), oldest first
    recent_peak: float = 0.0  # decaying maximum of the smoothed demand
    # (made at, horizon end, forecast peak, highest smoothed demand seen since)
    pending: tuple[tuple[float, float, float, float], ...] = ()
    last_pending: float = float("-inf")
    watched_since: float | None = None  # when this forecast first saw demand
    reading_seconds: float | None = None  # the window each demand reading is a rate over (None: unknown)

    def level(self) -> float:
        return self.fast or 0.0

    def slope(self) -> float:
        if self.fast is None or self.slow is None:
            return 0.0
        return (self.fast - self.slow) / (SLOW_SECONDS - FAST_SECONDS)

    @property
    def error(self) -> float:
        """The ERROR_QUANTILE of the recent shortfalls (the prior until enough were checked)."""
        if len(self.errors) < MIN_ERROR_SAMPLES:
            return ERROR_PRIOR
        ranked = sorted(self.errors)
        return ranked[min(len(ranked) - 1, int(ERROR_QUANTILE * len(ranked)))]

    def peak(self, wall: float | None, lead: float) -> tuple[float, str]:
        """The most demand expected over the next `lead` seconds, and which model said so."""
        level = self.level()
        best, source = level, "level"
        rising = level + max(0.0, self.slope()) * (lead + FAST_SECONDS)
        if rising > best:
            best, source = rising, "trend"
        if wall is not None:
            for profile, name in ((self.weekly, "weekly profile"), (self.daily, "daily profile")):
                ratio = profile.peak_ratio(wall, lead)
                if ratio is not None:
                    if level * ratio > best:
                        best, source = level * ratio, name
                    break
        return best, source

    def headroom(self, peak: float, lead: float) -> float:
        """Extra demand to plan for on top of the forecast peak (req/s): the error's quantile, up to
        the recent peak once learned (the prior alone is not capped: nothing was seen yet). The
        recent peak is the largest reading of minutes, so over a lead time of minutes it too
        plans for the moment's demand: the lead's readings' largest noise comes off it."""
        extra = self.error * math.sqrt(max(peak, 1.0))
        if len(self.errors) < MIN_ERROR_SAMPLES:
            return extra
        noise = reading_noise_excess(lead, self.reading_seconds) * math.sqrt(max(peak, 1.0))
        return max(0.0, min(extra, self.recent_peak - noise - peak))

    def warming(self, now: float) -> bool:
        """The traffic has not been watched for WARM_UP_SECONDS yet."""
        return self.watched_since is None or now - self.watched_since < WARM_UP_SECONDS

    def observe(
        self, now: float, wall: float | None, demand: float, lead: float, reading_seconds: float | None = None
    ) -> Forecast:
        """One demand reading (a rate over `reading_seconds`) at `now`; `wall` places it in the day."""
        reading_seconds = reading_seconds if reading_seconds is not None else self.reading_seconds
        fast, slow = demand, demand
        if self.fast is not None and self.slow is not None and self.at is not None:
            dt = max(0.0, now - self.at)
            fast = self.fast + (1 - math.exp(-dt / FAST_SECONDS)) * (demand - self.fast)
            slow = self.slow + (1 - math.exp(-dt / SLOW_SECONDS)) * (demand - self.slow)
        daily, weekly = self.daily, self.weekly
        if wall is not None:
            daily, weekly = daily.observe(wall, demand), weekly.observe(wall, demand)
        errors = list(self.errors)
        # Settle the forecasts whose horizon has passed; the others see this demand.
        pending = []
        for made, end, peak, seen in self.pending:
            seen = max(seen, demand)
            if now >= end:
                noise = reading_noise_excess(end - made, reading_seconds)
                errors.append(max(0.0, (seen - peak) / math.sqrt(max(peak, 1.0)) - noise))
            else:
                pending.append((made, end, peak, seen))
        errors = errors[-ERROR_SAMPLES:]
        recent_peak = demand
        if self.at is not None:
            decay = math.exp(-max(0.0, now - self.at) / RECENT_PEAK_SECONDS)
            recent_peak = max(demand, fast + (self.recent_peak - fast) * decay)
        state = replace(
            self,
            fast=fast,
            slow=slow,
            at=now,
            daily=daily,
            weekly=weekly,
            errors=tuple(errors),
            recent_peak=recent_peak,
            watched_since=self.watched_since if self.watched_since is not None else now,
            reading_seconds=reading_seconds,
        )
        if now - self.last_pending >= max(5.0, lead / (MAX_PENDING - 2)):
            peak, _ = state.peak(wall, lead)
            pending.append((now, now + lead, peak, fast))
            state = replace(state, last_pending=now)
        return replace(state, pending=tuple(pending[-MAX_PENDING:]))


def expected_largest_normal(n: float) -> float:
    """The expected largest of n independent standard normal draws (Blom's approximation)."""
    if n <= 1.0:
        return 0.0
    return NormalDist().inv_cdf((n - 0.375) / (n + 0.25))


def reading_noise_excess(horizon: float, reading_seconds: float | None) -> float:
    """How much more of the readings' own Poisson noise the highest reading over `horizon` holds
    than over FAST_SECONDS, in the shortfalls' units (sqrt(req/s) per sqrt(req/s) of demand:
    a reading's noise is sqrt(rate / window), so 1 / sqrt(window) there)."""
    if not reading_seconds or reading_seconds <= 0:
        return 0.0
    sigmas = expected_largest_normal(horizon / reading_seconds) - expected_largest_normal(
        FAST_SECONDS / reading_seconds
    )
    return max(0.0, sigmas) / math.sqrt(reading_seconds)
