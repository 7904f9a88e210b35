"""A new pod's start-up, measured once per pod: from the pod's own timestamps and the load this
process timed on its server, the phases from creation to Ready. Shown in status.startup
(status.py) and observed in the tritonop_pod_startup_seconds histogram.

    created -scheduling-> scheduled -container-> container started -server-> load began
            -load-> load done -ready-> Ready

- scheduling: metadata.creationTimestamp -> the PodScheduled condition's lastTransitionTime
  (the scheduler; a node provisioned for the pod, on clusters that do that);
- container: -> the tritonserver container's state.running.startedAt (image pull, volumes,
  container creation; restarts before the load, if its server crashed);
- server: -> the load began (the load's completedAt less its seconds): Triton starting until it
  answers the operator's probe (every second while pods start), then the operator's load
  request. A wait before the load (a repository check under way, a failed load retried) counts
  here too. Kubernetes records no time for "Triton answers": the startup probe passing has none,
  and ContainersReady follows the readiness probe, which asks for the model (after the load);
- staging (spec.model.cache): container started -> the node's copy of the version was ready (the
  staging Job's verdict; 0 when it was there already). It overlaps Triton's own start, so it is
  cut out of `server`, which keeps the rest; None without a cache;
- load: the load this process timed (LoadStatus.seconds, milliseconds);
- ready: load done -> the Ready condition's lastTransitionTime (the readiness gate
  tritonop.dev/model-ready opened, then the kubelet's readiness probe passed).

Precision: Kubernetes timestamps are metav1.Time, whole seconds (truncated), and so is the load's
completedAt; each boundary but the load's own length is known to about a second, the operator's
stamps are its own clock's and the others the API server's and kubelet's. The boundaries are put
in order (clamped) so the phases add up to the total.

Which pods: those this process saw from the beginning, not Ready and their server never
restarted when first seen (after an operator restart, running pods are not new starts), measured
once they are Ready after an Initial load this process timed (ServingMemory.starts)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Histogram

from tritonop.api.status import LoadStatus
from tritonop.clock import parse
from tritonop.facts import PodStart
from tritonop.names import CONTAINER_NAME, MODEL_READY_GATE
from tritonop.serving.memory import StartWatch

PHASES = ("scheduling", "container", "server", "staging", "load", "ready", "total")
# Starts take seconds to many minutes (a node provisioned, a large image pulled, tens of GB of weights loaded).
BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
POD_STARTUP = Histogram(
    "tritonop_pod_startup_seconds",
    "New pods' starts, creation to Ready, by phase (scheduling, container, server, load, ready; total), "
    "observed once per pod.",
    ["namespace", "name", "phase"],
    buckets=BUCKETS,
)


def pod_start(pod: Mapping[str, Any], load: LoadStatus, staged_at: str | None = None) -> PodStart | None:
    """Pure: the phases of a pod's start, from the pod and the load this process timed on it (its
    Initial load); None until the pod is Ready (or without its creationTimestamp)."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    created = _at(pod.get("metadata", {}).get("creationTimestamp"))
    done = _at(load.completed_at)
    became_ready = _ready_at(conditions)
    if created is None or done is None or became_ready is None:
        return None
    ready_at, ready_stamp = became_ready
    began = max(done - load.seconds, created)  # clocks apart: a load does not begin before its pod exists
    done = began + load.seconds
    ready = max(ready_at, done)
    scheduled = _within(_true_since(conditions.get("PodScheduled")), created, began)
    started = _within(container_started(status), scheduled if scheduled is not None else created, began)
    staged = None if staged_at is None or started is None else _within(_at(staged_at), started, began)
    return PodStart(
        pod=str(pod.get("metadata", {}).get("name", "")),
        ready_at=ready_stamp,
        total=ready - created,
        scheduling=None if scheduled is None else scheduled - created,
        container=None if started is None or scheduled is None else started - scheduled,
        server=None if started is None else began - (staged if staged is not None else started),
        staging=None if staged is None or started is None else staged - started,
        load=load.seconds,
        ready=ready - done,
    )


def watchable(pod: Mapping[str, Any]) -> bool:
    """Pure: a pod first seen now is a start this process sees from the beginning: not Ready yet,
    and no container of it restarted (an operator restart finds old pods serving or crashing)."""
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    restarted = any(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    return not ready and not restarted


def measure_starts(
    starts: dict[str, StartWatch],
    pods: Iterable[Mapping[str, Any]],
    namespace: str,
    name: str,
    staged_at: Callable[[Mapping[str, Any]], str | None] = lambda pod: None,
) -> tuple[PodStart, ...]:
    """Before this reconcile's loads: pods seen for the first time are watched (or marked done,
    not watchable); watched pods now Ready after their timed Initial load are measured, observed
    in the histogram, and marked done, so each pod is observed once. Oldest Ready first."""
    measured = []
    for pod in pods:
        uid = str(pod["metadata"]["uid"])
        watch = starts.get(uid)
        if watch is None:
            starts[uid] = StartWatch(done=not watchable(pod))
            continue
        if watch.done or watch.load is None:
            continue
        start = pod_start(pod, watch.load, staged_at(pod))
        if start is None:
            continue
        starts[uid] = StartWatch(done=True)
        observe(namespace, name, start)
        measured.append(start)
    return tuple(sorted(measured, key=lambda start: start.ready_at))


def observe(namespace: str, name: str, start: PodStart) -> None:
    for phase, seconds in start.phases().items():
        POD_STARTUP.labels(namespace, name, phase).observe(seconds)


def forget_metrics(namespace: str, name: str) -> None:
    """Drop a ModelDeployment's start-up series (it is gone)."""
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            POD_STARTUP.remove(namespace, name, phase)


def _at(stamp: Any) -> float | None:
    """A metav1.Time as seconds since the epoch (None: absent or not a time)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return parse(stamp).timestamp()
    except ValueError:
        return None


def _true_since(condition: Mapping[str, Any] | None) -> float | None:
    if condition is None or condition.get("status") != "True":
        return None
    return _at(condition.get("lastTransitionTime"))


def _ready_at(conditions: Mapping[Any, Mapping[str, Any]]) -> tuple[float, str] | None:
    """When the pod became Ready (None: it is not): the Ready condition's transition, never
    before its readiness gate opened."""
    if conditions.get("Ready", {}).get("status") != "True":
        return None
    known = []
    for kind in ("Ready", MODEL_READY_GATE):
        condition = conditions.get(kind) or {}
        at = _true_since(condition)
        if at is not None:
            known.append((at, str(condition["lastTransitionTime"])))
    return max(known) if known else None


def container_started(status: Mapping[str, Any]) -> float | None:
    """The server container's state.running.startedAt (the first container where it has another name)."""
    containers = status.get("containerStatuses") or []
    server = next((c for c in containers if c.get("name") == CONTAINER_NAME), containers[0] if containers else {})
    return _at(server.get("state", {}).get("running", {}).get("startedAt"))


def _within(at: float | None, earliest: float, latest: float) -> float | None:
    return None if at is None else min(max(at, earliest), latest)
