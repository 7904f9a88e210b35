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

Long traces (`LONG`, not in `SUITE`): real-time, one rate per second, for a policy that learns a
daily/weekly profile. Both follow the Azure LLM inference trace 2024's coding service (Stojkovic et al.,
"DynamoLLM", HPCA 2025; github.com/Azure/AzurePublicDataset, CC-BY 4.0): its invocations per minute
over 2024-05-10 00:00 - 2024-05-17 00:00 UTC, Friday to Thursday, as bench/data/azure_llm_code_2024_week.csv
holds them. The per-request files are out of reach here, so that CSV is digitized from the dataset's
published figure of them (analysis/AzureLLMInferenceDataset2024.ipynb, by
bench/data/digitize_azure_llm_2024.py): per ~7.2-minute pixel column, the lowest and highest per-minute
count. Per minute, the rate is that band's middle, interpolated, plus seeded AR(1) noise (correlation 0.5,
kept inside the band less the trend's own change across it); so the daily and weekly shape is the
recorded one, the minute-to-minute variation only matches its recorded size. The per-minute series is
rescaled linearly (its minimum to 3 req/s, its maximum to 30) and interpolated per second.
- day: Tuesday 2024-05-14 UTC (trough ~340/min near 08:00, peak ~5850/min near 19:00), 86400 s;
- week: the whole week: five weekdays of that shape (peaks 22-30 req/s) and a quiet weekend (peaks ~9), 604800 s.

Held-out traces (in `LONG`): the Azure LLM inference trace 2023's recorded arrivals (bench/data/README.md),
each second's requests as that second's rate, scaled so the busiest minute averages 30 req/s. No
autoscaling policy here was tuned on them; they check that it generalises.
- azure-code-2023: the coding service, 3,436 s (mean 6.4 req/s; idle gaps, 1-s bursts of up to 167);
- azure-conv-2023: the conversation service, 3,502 s (mean 19 req/s; minute-scale swells).

A CSV file with header `second,rate` is a trace too (`load_csv`): one row per second, rate in
requests/s (seconds missing between rows keep the previous rate).
"""

from __future__ import annotations

import csv
import functools
import gzip
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

# Azure LLM inference trace 2024, coding service, one week of invocations per minute (see the module docstring).
AZURE_CODE_WEEK = Path(__file__).parent / "data" / "azure_llm_code_2024_week.csv"
MINUTES_PER_DAY = 24 * 60


@functools.lru_cache(maxsize=1)
def _azure_code_minutes() -> tuple[float, ...]:
    """Invocations per minute for each minute of the recorded week: the digitized band's middle,
    interpolated between pixel columns, plus seeded correlated noise within the band."""
    centres: list[float] = []
    mids: list[float] = []
    widths: list[float] = []
    with AZURE_CODE_WEEK.open(newline="") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            low, high = float(row["low"]), float(row["high"])
            centres.append(float(row["minute"]))
            mids.append((low + high) / 2)
            widths.append(high - low)
    last = len(centres) - 1
    # The band spans the noise plus the trend's change across the column: keep only the former.
    halves = [
        max(0.0, (widths[i] - abs(mids[min(i + 1, last)] - mids[max(i - 1, 0)]) / 2) / 2) for i in range(last + 1)
    ]
    rng = random.Random(20240514)
    memory, sigma = 0.5, 0.7  # lag-1 correlation; spread in half-bands (a band is the range of ~8 minutes)
    noise, column = 0.0, 0
    minutes: list[float] = []
    for minute in range(7 * MINUTES_PER_DAY):
        at = minute + 0.5
        while column < last - 1 and centres[column + 1] < at:
            column += 1
        f = min(1.0, max(0.0, (at - centres[column]) / (centres[column + 1] - centres[column])))
        mid = mids[column] + (mids[column + 1] - mids[column]) * f
        half = halves[column] + (halves[column + 1] - halves[column]) * f
        noise = memory * noise + math.sqrt(1 - memory**2) * rng.gauss(0.0, sigma)
        minutes.append(mid + half * min(1.0, max(-1.0, noise)))
    return tuple(minutes)


def _per_second(name: str, per_minute: tuple[float, ...] | list[float]) -> Trace:
    """Rescale per-minute values linearly to 3-30 req/s and interpolate them per second."""
    low, high = min(per_minute), max(per_minute)
    scaled = [3.0 + 27.0 * (value - low) / (high - low) for value in per_minute]
    fractions = [step_ / 60 for step_ in range(60)]
    rates: list[float] = []
    for minute, value in enumerate(scaled):
        change = scaled[min(minute + 1, len(scaled) - 1)] - value
        rates.extend([min(30.0, value + change * fraction) for fraction in fractions])
    return Trace(name, tuple(rates))


@functools.lru_cache(maxsize=1)
def day() -> Trace:
    """24 h of the Azure LLM inference 2024 coding trace: Tuesday 2024-05-14 UTC, 86400 s."""
    tuesday = 4  # the recorded week starts on Friday 2024-05-10
    return _per_second("day", _azure_code_minutes()[tuesday * MINUTES_PER_DAY : (tuesday + 1) * MINUTES_PER_DAY])


@functools.lru_cache(maxsize=1)
def week() -> Trace:
    """The Azure LLM inference 2024 coding trace's recorded week (Friday to Thursday, UTC), 604800 s."""
    return _per_second("week", _azure_code_minutes())


# The Azure LLM inference trace 2023's recorded arrivals (bench/data/README.md), used as request
# traffic for the 100 ms model: traces no autoscaling policy here was tuned on.
DATA = Path(__file__).parent / "data"
HELD_OUT_PEAK = 30.0  # req/s: the busiest minute's mean is scaled to the suite's top rate


def azure_2023_requests(name: str) -> list[tuple[float, int, int]]:
    """(arrival s, context tokens, generated tokens) per request of the Azure LLM 2023 trace of a
    service ("code", "conv"), or of a .csv / .csv.gz file in that form (a header line, then rows)."""
    path = Path(name) if name.endswith((".gz", ".csv")) else DATA / f"azure_llm_2023_{name}.csv.gz"
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as handle:
        lines = handle.read().splitlines()[1:]
    rows = []
    for line in lines:
        at, prompt, generated = line.split(",")
        rows.append((float(at), int(prompt), int(generated)))
    return rows


def _recorded_arrivals(name: str, service: str) -> Trace:
    """The recorded requests of one second as that second's rate, scaled so that the busiest
    minute averages HELD_OUT_PEAK: the recorded second-scale bursts stay."""
    offsets = [at for at, _, _ in azure_2023_requests(service)]
    counts = [0] * (math.floor(max(offsets)) + 1)
    for offset in offsets:
        counts[math.floor(offset)] += 1
    busiest_minute = max(sum(counts[max(0, i - 59) : i + 1]) / 60 for i in range(len(counts)))
    scale = HELD_OUT_PEAK / busiest_minute
    return Trace(name, tuple(count * scale for count in counts))


@functools.lru_cache(maxsize=1)
def azure_code_2023() -> Trace:
    """The Azure LLM 2023 coding service's 57 minutes: long idle gaps, bursts of tens of requests
    within a second."""
    return _recorded_arrivals("azure-code-2023", "code")


@functools.lru_cache(maxsize=1)
def azure_conv_2023() -> Trace:
    """The Azure LLM 2023 conversation service's 58 minutes: steadier, with minute-scale swells."""
    return _recorded_arrivals("azure-conv-2023", "conv")


LONG = {"day": day, "week": week, "azure-code-2023": azure_code_2023, "azure-conv-2023": azure_conv_2023}


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
    """A suite or long trace by name, `constant-R` (R req/s for 300 s), or a CSV file's path."""
    if name in SUITE:
        return SUITE[name]()
    if name in LONG:
        return LONG[name]()
    if name.startswith("constant-"):
        return constant(float(name.removeprefix("constant-")))
    path = Path(name)
    if path.suffix == ".csv":
        return load_csv(path)
    raise ValueError(f"unknown trace {name!r}: one of {', '.join([*SUITE, *LONG])}, constant-R, or a .csv file")


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
