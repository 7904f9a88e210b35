"""Offered-load traces for the autoscaling benchmarks, and their seeded arrivals.

A trace is an offered rate per second (requests/s, piecewise constant over each second), 4-10
minutes long, between 3 and 30 requests/s: the range one to eight replicas of the benchmark's
100 ms model cover. The same definitions drive the simulator (bench/autoscale_sim.py) and the
cluster benchmark (bench/autoscale_policies.py).

Arrivals are a Poisson process with that rate, drawn from a seed: every policy replayed with the
same seed sees exactly the same request times (paired comparisons).

- step: the cluster bench's trace (5 req/s, a 6x step to 30, ramp down, tail), 240 s;
- ramp: 4 -> 28 req/s over 4 minutes, hold, back down, 480 s;
- diurnal: two compressed days (4 minutes each): night 3 req/s, midday 28, with a morning shoulder;
- spikes: 6 req/s with five short 4x bursts (8-15 s), 360 s;
- noisy: steady 15 req/s with correlated rate noise (lognormal, ~25% per second), 300 s;
- replay: shaped like the per-minute invocation counts of the Azure Functions 2019 traces
  (Shahrad et al., "Serverless in the Wild", ATC '20): a diurnal trend, bursty minute-to-minute
  variation and a few multi-minute surges, 60 "minutes" of 6 s each, rescaled to 3-30 req/s.
  The data cannot be fetched here, so the series is generated from that published shape with a
  fixed seed; it is not the recorded data.

A CSV file with header `second,rate` is a trace too (`load_csv`): one row per second, rate in
requests/s (seconds missing between rows keep the previous rate).
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trace:
    name: str
    rates: tuple[float, ...]  # offered requests/s during second i

    @property
    def seconds(self) -> int:
        return len(self.rates)

    def rate_at(self, second: float) -> float:
        index = math.floor(second)
        return self.rates[index] if 0 <= index < len(self.rates) else 0.0

    @property
    def requests(self) -> float:
        return sum(self.rates)


def _segments(name: str, segments: list[tuple[int, int, float, float]]) -> Trace:
    """(start second, end second, start rate, end rate): linear within each segment, sampled at
    each second's start (as the cluster bench sets its load generator's rate once a second)."""
    rates: list[float] = []
    for start, end, first, last in segments:
        for second in range(start, end):
            rates.append(first + (last - first) * (second - start) / (end - start))
    return Trace(name, tuple(rates))


# The cluster bench's step trace: warm-up, step burst, ramp down, tail.
STEP_SEGMENTS = [(0, 45, 5.0, 5.0), (45, 105, 30.0, 30.0), (105, 165, 30.0, 5.0), (165, 240, 5.0, 5.0)]
STEP_BURST_START = 45


def step() -> Trace:
    return _segments("step", STEP_SEGMENTS)


def ramp() -> Trace:
    return _segments(
        "ramp",
        [(0, 30, 4.0, 4.0), (30, 270, 4.0, 28.0), (270, 330, 28.0, 28.0), (330, 420, 28.0, 4.0), (420, 480, 4.0, 4.0)],
    )


def diurnal() -> Trace:
    day = 240  # one compressed day: 4 minutes
    rates = []
    for second in range(2 * day):
        phase = 2 * math.pi * (second % day) / day
        main = 0.5 - 0.5 * math.cos(phase)  # 0 at midnight, 1 at noon
        shoulder = 0.15 * math.exp(-(((second % day) - 0.3 * day) ** 2) / (2 * (0.05 * day) ** 2))  # morning bump
        rates.append(3.0 + 25.0 * min(1.0, main + shoulder))
    return Trace("diurnal", tuple(rates))


def spikes() -> Trace:
    base, factor = 6.0, 4.0
    bursts = [(40, 10), (100, 8), (170, 15), (235, 10), (300, 12)]  # (start second, seconds)
    rates = [base] * 360
    for start, length in bursts:
        for second in range(start, start + length):
            rates[second] = base * factor
    return Trace("spikes", tuple(rates))


def noisy() -> Trace:
    rng = random.Random(20261127)
    level, sigma, memory = 15.0, 0.25, 0.8
    noise, rates = 0.0, []
    for _ in range(300):
        noise = memory * noise + math.sqrt(1 - memory**2) * rng.gauss(0.0, sigma)
        rates.append(min(30.0, max(3.0, level * math.exp(noise - sigma**2 / 2))))
    return Trace("noisy", tuple(rates))


def replay() -> Trace:
    """Per-minute counts shaped like an Azure Functions application's (see the module docstring)."""
    rng = random.Random(2019)
    minutes, seconds_per_minute = 60, 6
    counts, noise = [], 0.0
    surges = {12: 1.8, 13: 2.4, 14: 1.6, 33: 2.2, 47: 1.7, 48: 2.6, 49: 2.0}
    for minute in range(minutes):
        trend = 1.0 + 0.8 * math.sin(math.pi * minute / minutes)  # part of a day's rise and fall
        noise = 0.7 * noise + math.sqrt(1 - 0.7**2) * rng.gauss(0.0, 0.35)
        timer = 1.3 if minute % 15 == 0 else 1.0  # timer-triggered work on quarter hours
        counts.append(trend * math.exp(noise) * timer * surges.get(minute, 1.0))
    low, high = min(counts), max(counts)
    per_minute = [3.0 + 27.0 * (c - low) / (high - low) for c in counts]
    rates = []
    for minute, value in enumerate(per_minute):
        following = per_minute[min(minute + 1, minutes - 1)]
        for step_ in range(seconds_per_minute):
            rates.append(value + (following - value) * step_ / seconds_per_minute)
    return Trace("replay", tuple(rates))


def constant(rate: float, seconds: int = 300) -> Trace:
    return Trace(f"constant-{rate:g}", tuple([rate] * seconds))


SUITE = {"step": step, "ramp": ramp, "diurnal": diurnal, "spikes": spikes, "noisy": noisy, "replay": replay}


def load_csv(path: Path) -> Trace:
    rates: dict[int, float] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"second", "rate"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV header 'second,rate'")
        for row in reader:
            second, rate = int(float(row["second"])), float(row["rate"])
            if second < 0 or rate < 0:
                raise ValueError(f"{path}: negative second or rate in {row}")
            rates[second] = rate
    if not rates:
        raise ValueError(f"{path}: no rows")
    series, current = [], 0.0
    for second in range(max(rates) + 1):
        current = rates.get(second, current)
        series.append(current)
    return Trace(path.stem, tuple(series))


def get(name: str) -> Trace:
    """A suite trace by name, `constant-R` (R req/s for 300 s), or a CSV file's path."""
    if name in SUITE:
        return SUITE[name]()
    if name.startswith("constant-"):
        return constant(float(name.removeprefix("constant-")))
    path = Path(name)
    if path.suffix == ".csv":
        return load_csv(path)
    raise ValueError(f"unknown trace {name!r}: one of {', '.join(SUITE)}, constant-R, or a .csv file")


def arrivals(trace: Trace, seed: int) -> list[float]:
    """Poisson arrival times (seconds) with the trace's per-second rate, the same for a given seed."""
    rng = random.Random(f"arrivals:{trace.name}:{seed}")
    times: list[float] = []
    for second, rate in enumerate(trace.rates):
        if rate <= 0:
            continue
        # Exponential gaps within the second: a Poisson process at this second's rate.
        at = second + rng.expovariate(rate)
        while at < second + 1:
            times.append(at)
            at += rng.expovariate(rate)
    return times
