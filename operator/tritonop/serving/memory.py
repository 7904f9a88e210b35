"""What the process remembers about one ModelDeployment's servers (its part of tritonop.memory's
record): the config learned from Triton, each pod's failed load, a swap that is needed, the
latest timed load, each pod's start as it is measured, the loads that outlasted their reconcile.
Memory only: an operator restart starts it empty."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tritonclient.grpc import model_config_pb2

from tritonop.api.status import LoadStatus

if TYPE_CHECKING:
    from tritonop.events import EventRecorder
    from tritonop.serving.plan import LoadResult

# A load that failed is retried after this long, or at once when the config to load changes.
FAILED_LOAD_RETRY_SECONDS = 20.0


@dataclass(frozen=True)
class SwapNeed:
    """The target version does not fit beside the old one: switch pod by pod."""

    version: int | None
    message: str  # Triton's refusal
    announced: bool = False  # status has said so (one replica: before the downtime)


@dataclass(frozen=True)
class FailedLoad:
    config_json: str | None
    message: str
    at: float  # monotonic

    def recent(self, now: float) -> bool:
        """Within FAILED_LOAD_RETRY_SECONDS: not retried yet."""
        return now - self.at < FAILED_LOAD_RETRY_SECONDS


@dataclass(frozen=True)
class LoadInFlight:
    """A load that outlasted the reconcile that asked for it (a large model takes minutes): it
    goes on while later reconciles serve the other pods, and the first one after it ended takes
    its result and posts what it said."""

    task: asyncio.Task[LoadResult]
    events: EventRecorder  # its own: the reconcile that started it has posted its events


@dataclass(frozen=True)
class StartWatch:
    """One pod's start as this process watches it (serving/startup.py)."""

    load: LoadStatus | None = None  # its latest Initial load (a server with nothing loaded), once timed
    done: bool = False  # measured (observed once), or a start this process did not see from the beginning


@dataclass
class ServingMemory:
    """What the process remembers about one ModelDeployment's servers."""

    # The repository config learned from Triton where the operator cannot read the storage itself.
    learned_config: model_config_pb2.ModelConfig | None = None
    failed_loads: dict[str, FailedLoad] = field(default_factory=dict)  # pod uid -> its failed load
    swap: SwapNeed | None = None  # a switch that must go pod by pod
    last_load: LoadStatus | None = None  # the latest timed load
    starts: dict[str, StartWatch] = field(default_factory=dict)  # pod uid -> its start, watched once
    loading: dict[str, LoadInFlight] = field(default_factory=dict)  # pod uid -> its load under way

    def timed_load(self, pod: str, uid: str, version: int | None, mode: str, seconds: float, at: str) -> None:
        """A load that succeeded; at: when it finished (metav1.Time). A watched pod's Initial load
        times its start's load phase (the latest one: a server that restarted before Ready loads again)."""
        load = LoadStatus.model_validate(
            {"version": version, "seconds": round(seconds, 3), "mode": mode, "pod": pod, "completedAt": at}
        )
        self.last_load = load
        watch = self.starts.get(uid)
        if mode == "Initial" and watch is not None and not watch.done:
            self.starts[uid] = StartWatch(load)

    def keep_only_pods(self, pod_uids: set[str]) -> None:
        """Drop the failures and starts of pods that are gone."""
        for pod_uid in [p for p in self.failed_loads if p not in pod_uids]:
            del self.failed_loads[pod_uid]
        for pod_uid in [p for p in self.starts if p not in pod_uids]:
            del self.starts[pod_uid]
        for pod_uid in [p for p in self.loading if p not in pod_uids]:
            self.loading.pop(pod_uid).task.cancel()

    def cancel_loads(self) -> None:
        """The object is gone (or this process stops): nothing waits for these loads' results."""
        for load in self.loading.values():
            load.task.cancel()
        self.loading.clear()
