"""A new pod's start-up by phase (serving/startup.py): the pure derivation from the pod and the
timed load, which pods are measured, and the histogram observed once per pod."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tritonop.api.status import LoadStatus
from tritonop.names import CONTAINER_NAME, MODEL_READY_GATE
from tritonop.serving.memory import ServingMemory, StartWatch
from tritonop.serving.startup import forget_metrics, measure_starts, pod_start, watchable


def at(second: int) -> str:
    minute, second = divmod(second, 60)
    return f"2026-03-01T10:{minute:02d}:{second:02d}Z"


def pod(
    *,
    created: int | None = 0,
    scheduled: int | None = 3,
    started: int | None = 10,
    gate: int | None = 40,
    ready: int | None = 41,
    restarts: int = 0,
) -> dict[str, Any]:
    """A pod as the API server shows it, its times in seconds after 10:00:00."""
    conditions: list[dict[str, Any]] = [{"type": "PodScheduled", "status": "True"}]
    if scheduled is not None:
        conditions[0]["lastTransitionTime"] = at(scheduled)
    if gate is not None:
        conditions.append({"type": MODEL_READY_GATE, "status": "True", "lastTransitionTime": at(gate)})
    if ready is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": at(ready)})
    else:
        conditions.append({"type": "Ready", "status": "False", "lastTransitionTime": at(0)})
    state = {"running": {"startedAt": at(started)}} if started is not None else {"waiting": {"reason": "X"}}
    metadata: dict[str, Any] = {"name": "m-0", "namespace": "n", "uid": "uid-0"}
    if created is not None:
        metadata["creationTimestamp"] = at(created)
    return {
        "metadata": metadata,
        "status": {
            "conditions": conditions,
            "containerStatuses": [{"name": CONTAINER_NAME, "restartCount": restarts, "state": state}],
        },
    }


def load(done: int = 39, seconds: float = 12.25, mode: str = "Initial") -> LoadStatus:
    return LoadStatus.model_validate(
        {"version": 2, "seconds": seconds, "mode": mode, "pod": "m-0", "completedAt": at(done)}
    )


def phases(start: Any) -> dict[str, float | None]:
    names = ("scheduling", "container", "server", "staging", "load", "ready", "total")
    return {name: None if getattr(start, name) is None else round(getattr(start, name), 2) for name in names}


def test_the_phases_from_creation_to_ready_add_up() -> None:
    start = pod_start(pod(), load())
    assert start is not None and (start.pod, start.ready_at) == ("m-0", at(41))
    # created 0, scheduled 3, started 10, load 26.75..39, Ready 41
    assert phases(start) == {
        "scheduling": 3.0,
        "container": 7.0,
        "server": 16.75,
        "staging": None,  # no node cache
        "load": 12.25,
        "ready": 2.0,
        "total": 41.0,
    }
    assert sum(v for k, v in phases(start).items() if k != "total" and v is not None) == start.total
    assert set(start.phases()) == {"scheduling", "container", "server", "load", "ready", "total"}


def test_with_a_node_cache_staging_is_cut_out_of_the_servers_start() -> None:
    # Staged 22 s after the container started (a cold node), the load began at 26.75.
    cold = pod_start(pod(), load(), staged_at=at(32))
    assert cold is not None
    assert (phases(cold)["staging"], phases(cold)["server"]) == (
        16.75,
        0.0,
    )  # the copy ended past the load's start: clamped
    cold = pod_start(pod(), load(), staged_at=at(20))
    assert cold is not None and (phases(cold)["staging"], phases(cold)["server"]) == (10.0, 6.75)
    assert sum(v for k, v in phases(cold).items() if k != "total" and v is not None) == cold.total
    # Warm: the node held the version before the pod started.
    warm = pod_start(pod(), load(), staged_at=at(1))
    assert warm is not None and (phases(warm)["staging"], phases(warm)["server"]) == (0.0, 16.75)


def test_not_ready_or_without_a_creation_time_is_not_measured() -> None:
    assert pod_start(pod(ready=None), load()) is None
    assert pod_start(pod(created=None), load()) is None


def test_ready_is_never_before_the_gate_opened() -> None:
    start = pod_start(pod(gate=42, ready=41), load())
    assert start is not None and start.ready_at == at(42) and start.ready == 3.0


def test_a_missing_timestamp_leaves_its_phases_out() -> None:
    no_scheduled = pod_start(pod(scheduled=None), load())
    assert no_scheduled is not None
    assert (no_scheduled.scheduling, no_scheduled.container, no_scheduled.server) == (None, None, 16.75)
    not_running = pod_start(pod(started=None), load())
    assert not_running is not None
    assert (not_running.scheduling, not_running.container, not_running.server) == (3.0, None, None)
    assert not_running.total == 41.0


def test_times_out_of_order_are_clamped_so_the_phases_still_add_up() -> None:
    # The container started after the load began (startedAt rewritten), the load ended after
    # Ready (the operator's clock ahead of the kubelet's), the load began before creation.
    for odd in (pod(started=30), pod(ready=38, gate=38), pod(created=30, scheduled=31, started=32)):
        start = pod_start(odd, load())
        assert start is not None
        parts = [v for k, v in phases(start).items() if k != "total" and v is not None]
        assert min(parts) >= 0 and sum(parts) == pytest.approx(start.total)
        assert start.load == 12.25 and start.total >= start.load


def test_only_starts_seen_from_the_beginning_are_watched() -> None:
    assert watchable(pod(ready=None))
    assert not watchable(pod())  # Ready when first seen: an operator restart finds it serving
    assert not watchable(pod(ready=None, restarts=1))  # its server crashed before: not a start


def count(phase: str, name: str = "startup") -> float | None:
    labels = {"namespace": "n", "name": name, "phase": phase}
    return REGISTRY.get_sample_value("tritonop_pod_startup_seconds_count", labels)


def test_each_pod_is_measured_and_observed_once() -> None:
    memory = ServingMemory()
    starting = pod(ready=None)
    assert measure_starts(memory.starts, [starting], "n", "startup") == ()
    assert memory.starts == {"uid-0": StartWatch()}
    # Its Initial load is timed (a later load of another mode does not replace it).
    memory.timed_load("m-0", "uid-0", 2, "Initial", 12.25, at(39))
    memory.timed_load("m-0", "uid-0", 2, "Reload", 1.0, at(39))
    assert memory.starts["uid-0"].load == load()
    assert measure_starts(memory.starts, [starting], "n", "startup") == ()  # not Ready yet
    ready = pod()
    [start] = measure_starts(memory.starts, [ready], "n", "startup")
    assert start.total == 41.0 and memory.starts == {"uid-0": StartWatch(done=True)}
    for _ in range(3):
        assert measure_starts(memory.starts, [copy.deepcopy(ready)], "n", "startup") == ()
    assert [count(phase) for phase in ("scheduling", "load", "total")] == [1.0, 1.0, 1.0]
    assert count("staging") is None
    memory.keep_only_pods(set())
    assert memory.starts == {}
    forget_metrics("n", "startup")
    assert count("total") is None


def test_a_pod_first_seen_ready_is_never_measured() -> None:
    memory = ServingMemory()
    measure_starts(memory.starts, [pod()], "n", "restarted")
    memory.timed_load("m-0", "uid-0", 2, "Initial", 3.0, at(39))  # its server restarts later
    assert measure_starts(memory.starts, [pod()], "n", "restarted") == ()
    assert memory.starts == {"uid-0": StartWatch(done=True)} and count("total", "restarted") is None
