"""A canary rollout's I/O edge: per-version counters read from each server, the analysis window
kept between reconciles, the operator's metrics. Decisions are canary.py's (pure).

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

from tritonop import canary
from tritonop.api.spec import ModelDeployment, RolloutStatus
from tritonop.canary import Decision, PodView, VersionCounters
from tritonop.clock import Clock
from tritonop.status import PodFacts
from tritonop.triton import TritonServer

ANALYSES = Counter("tritonop_canary_analyses_total", "Canary analyses by result.", ["namespace", "name", "result"])
ROLLBACKS = Counter("tritonop_canary_rollbacks_total", "Canary rollbacks.", ["namespace", "name"])
STEP = Gauge("tritonop_canary_step", "The canary's current step (0: none under way).", ["namespace", "name"])
WEIGHT = Gauge("tritonop_canary_weight_percent", "The canary step's weight (percent).", ["namespace", "name"])
Counters = dict[str, dict[int, VersionCounters]]  # pod name -> version -> counters


@dataclass
class Window:
    key: tuple[int, int, tuple[str, ...]]  # (canary version, step, canary pods): a change restarts it
    baseline: Counters
    started: float  # monotonic


@dataclass
class RolloutMemory:
    """What the process remembers about one ModelDeployment's canary."""

    window: Window | None = None  # the analysis window


def pod_versions(md: ModelDeployment, pods: list[dict[str, Any]], target: int | None) -> dict[str, int | None] | None:
    """What each pod serves this reconcile (None: not a canary, every pod gets the target)."""
    if md.spec.rollout.canary_settings is None:
        return None
    names = [pod["metadata"]["name"] for pod in pods]
    previous = md.status.rollout
    if canary.starts(previous, target, md.status.active_version, md.generation):
        # A new version: nothing switches until the rollout has chosen its canary pods.
        return dict.fromkeys(names, md.status.active_version)
    return canary.assignment(previous, names, target)


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
        return canary.parse_version_counters(await TritonServer(ip, "").metrics_text(), model)

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
) -> Decision:
    """The next status.rollout, after this reconcile's servers converged."""
    spec = md.spec.rollout.canary_settings
    previous = md.status.rollout
    if spec is None:
        memory.window = None
        STEP.labels(md.namespace, md.name).set(0)
        return Decision(previous if previous is not None and not previous.active else None)
    views = [PodView(f.name, f.ready, f.ready_versions, f.config_current) for f in facts]
    window, age, current = None, None, None
    analysing = previous is not None and previous.phase in ("Progressing", "Paused") and previous.step_started_at
    if not analysing:
        memory.window = None  # a step's window begins once its canary pods serve, not before
    if previous is not None and analysing:
        ready_ips = {f.name: ips[f.name] for f in facts if f.ready and f.name in ips}
        current = await read_counters(ready_ips, md.model_name)  # servers that do not answer are left out
        key = window_key(previous)
        kept = memory.window
        if current is not None and (kept is None or kept.key != key):
            memory.window = Window(key, current, clock.monotonic())
        elif current is not None and kept is not None:
            window = canary.window_sides(
                kept.baseline, current, previous.canary_pods, previous.canary_version, previous.stable_version
            )
            age = clock.monotonic() - kept.started
    decision = canary.advance(previous, spec, md.generation, target, active_version, views, window, age, now)
    rollout = decision.rollout
    if decision.checked and current is not None and rollout is not None:
        memory.window = Window(window_key(rollout), current, clock.monotonic())
    if rollout is None or not rollout.active:
        memory.window = None
    record(md, previous, rollout, decision)
    return decision


def window_key(rollout: RolloutStatus) -> tuple[int, int, tuple[str, ...]]:
    return (rollout.canary_version, rollout.step, tuple(rollout.canary_pods))


def record(
    md: ModelDeployment, previous: RolloutStatus | None, rollout: RolloutStatus | None, decision: Decision
) -> None:
    labels = (md.namespace, md.name)
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
