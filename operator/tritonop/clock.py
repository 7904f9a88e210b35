"""Timestamps in the formats the Kubernetes API uses (one place for every writer)."""

from __future__ import annotations

import datetime
import time
from typing import Protocol


class Clock(Protocol):
    """Where the operator reads time: intervals (monotonic) and where in the day it is (time).
    Injected (kept in the operator's state), so the simulator and tests can drive it."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


def rfc3339(at: datetime.datetime | None = None) -> str:
    """A metav1.Time (seconds): conditions, Events, pod conditions."""
    return (at or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_stamp(clock: Clock) -> str:
    """The clock's wall time as a metav1.Time (seconds, truncated): what the operator stamps on
    what it times (loads, readiness gates), so the simulator and tests can drive it."""
    return rfc3339(datetime.datetime.fromtimestamp(clock.time(), datetime.UTC))


def micro_time(at: datetime.datetime | None = None) -> str:
    """A metav1.MicroTime (microseconds): Lease renewals."""
    return (at or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(stamp: str) -> datetime.datetime:
    """A metav1.Time or MicroTime as written by rfc3339/micro_time (or the API server)."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
