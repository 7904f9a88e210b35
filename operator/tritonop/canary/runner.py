"""A canary rollout's I/O edge: per-version counters read from each server, the analysis window
kept between reconciles, the operator's metrics. Decisions are steps.py's (pure).

The window's baseline lives in process memory: after an operator restart the rollout resumes
at the step status.rollout names, and its analysis window starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from tritonop.api.spec import ModelDeployment
from tritonop.api.status import RolloutStatus
from tritonop.canary.counters import Counters, Sides, VersionCounters, parse_version_counters, window_sides
from tritonop.canary.pods import PodView, assignment
from tritonop.canary.steps import StepOutcome, advance, starts
from tritonop.clock import Clock
from tritonop.facts import PodFacts
from tritonop.triton import TritonServer

ANALYSES = Counter("tritonop_canary_analyses_total", "Canary analyses by result.", ["namespace", "name", "result"])
ROLLBACKS = Counter("tritonop_canary_rollbacks_total", "Canary rollbacks.", ["namespace", "name"])
STEP = Gauge("tritonop_canary_step", "The canary's current step (0: none under way).", ["namespace", "name"])
WEIGHT = Gauge("tritonop_canary_weight_percent", "The canary step's weight (percent).", ["namespace", "name"])
WindowKey = tuple[int, int, tuple[str, ...]]  # (canary version, step, canary pods): a change restarts it


@dataclass
class Window:
    key: WindowKey
    baseline: Counters
    started: float  # monotonic


@dataclass
class RolloutMemory:
    """What the process remembers about one ModelDeployment's canary."""

    window: Window | None = None  # the analysis window

    def measure(self, clock: Clock, rollout: RolloutStatus, current: Counters) -> tuple[Sides | None, float | None]:
        """The window's sides and age (seconds) so far; (None, None) where it starts now (a new step
        or canary pods, or the first read since the operator started)."""
        kept, key = self.window, window_key(rollout)
        if kept is None or kept.key != key:
            self.window = Window(key, current, clock.monotonic())
            return None, None
        sides = window_sides(
            kept.baseline, current, rollout.canary_pods, rollout.canary_version, rollout.stable_version
        )
        return sides, clock.monotonic() - kept.started

    def settle(self, clock: Clock, decision: StepOutcome, current: Counters | None) -> None:
        """An analysis restarts the window from this read; an inconclusive one (too little
        traffic) keeps counting from the same read, so a canary with little traffic gathers its
        evidence over longer windows instead of pausing forever; the next analysis is due one
        interval later. A rollout no longer under way drops the window."""
        rollout = decision.rollout
        if decision.checked and current is not None and rollout is not None:
            kept = self.window
            if decision.counts == ("Inconclusive",) and kept is not None and kept.key == window_key(rollout):
                self.window = Window(kept.key, kept.baseline, clock.monotonic())
            else:
                self.window = Window(window_key(rollout), current, clock.monotonic())
        if rollout is None or not rollout.active:
            self.window = None


def window_key(rollout: RolloutStatus) -> WindowKey:
    return (rollout.canary_version, rollout.step, tuple(rollout.canary_pods))


def pod_versions(md: ModelDeployment, pods: list[dict[str, Any]], target: int | None) -> dict[str, int | None] | None:
    """What each pod serves this reconcile (None: not a canary, every pod gets the target)."""
    if md.spec.rollout.canary_settings is None:
        return None
    names = [pod["metadata"]["name"] for pod in pods]
    previous = md.status.rollout
    if starts(previous, target, md.status.active_version, md.generation):
        # A new version: nothing switches until the rollout has chosen its canary pods.
        return dict.fromkeys(names, md.status.active_version)
    return assignment(previous, names, target)


def hold_replicas(md: ModelDeployment, replicas: int, deployment: dict[str, Any] | None) -> int:
    """During a canary the autoscaler does not scale down: the analysis needs its pods."""
    rollout = md.status.rollout
    current = (deployment or {}).get("spec", {}).get("replicas")
    if rollout is None or not rollout.active or current is None:
        return replicas
    return max(replicas, int(current))


async def read_counters(pods: Mapping[str, str], model: str) -> Counters:
    """pods: name -> ip of ready servers; a server that does not answer is left out."""

    async def one(ip: str) -> dict[int, VersionCounters]:
        return parse_version_counters(await TritonServer(ip, "").metrics_text(), model)

    names = list(pods)
    results = await asyncio.gather(*(one(pods[name]) for name in names), return_exceptions=True)
    return {name: result for name, result in zip(names, results, strict=True) if not isinstance(result, BaseException)}


async def progress(
    memory: RolloutMemory,
    clock: Clock,
    md: ModelDeployment,
    target: int | None,
    active_version: int | None,
    facts: list[PodFacts],
    ips: Mapping[str, str],
    now: str,
) -> StepOutcome:
    """The next status.rollout, after this reconcile's servers converged."""
    spec = md.spec.rollout.canary_settings
    previous = md.status.rollout
    if spec is None:
        memory.window = None
        STEP.labels(md.namespace, md.name).set(0)
        return StepOutcome(previous if previous is not None and not previous.active else None)
    views = [PodView(f.name, f.ready, f.ready_versions, f.config_current) for f in facts]
    window, age, current = None, None, None
    if previous is None or previous.phase not in ("Progressing", "Paused") or not previous.step_started_at:
        memory.window = None  # a step's window begins once its canary pods serve, not before
    else:
        ready_ips = {f.name: ips[f.name] for f in facts if f.ready and f.name in ips}
        current = await read_counters(ready_ips, md.model_name)  # servers that do not answer are left out
        window, age = memory.measure(clock, previous, current)
    tokens = md.spec.autoscaling.token_latency if md.spec.autoscaling is not None else None
    quantile = tokens.percentile / 100 if tokens is not None else 0.95
    decision = advance(previous, spec, md.generation, target, active_version, views, window, age, now, quantile)
    memory.settle(clock, decision, current)
    record(md, previous, decision)
    return decision


def record(md: ModelDeployment, previous: RolloutStatus | None, decision: StepOutcome) -> None:
    labels = (md.namespace, md.name)
    rollout = decision.rollout
    for result in decision.counts:
        ANALYSES.labels(*labels, result).inc()
    if rollout is not None and rollout.phase == "RolledBack" and (previous is None or previous.phase != "RolledBack"):
        ROLLBACKS.labels(*labels).inc()
    running = rollout is not None and rollout.phase in ("Progressing", "Paused")
    STEP.labels(*labels).set(rollout.step if running and rollout is not None else 0)
    WEIGHT.labels(*labels).set(rollout.weight if running and rollout is not None else 0)


def forget_metrics(namespace: str, name: str) -> None:
    for gauge in (STEP, WEIGHT):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
