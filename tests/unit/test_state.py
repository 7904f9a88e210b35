"""What the process remembers about a ModelDeployment goes when it goes: one release path."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tritonop.autoscale.metrics import CounterSample, PodMetricsReader
from tritonop.autoscale.runner import AutoscalerState
from tritonop.k8s import Credentials, KubeClient
from tritonop.owned import Refusal
from tritonop.serving import FailedLoad
from tritonop.state import READY, OperatorState

# No request is made: the client only has to exist.
KUBE = KubeClient(Credentials("https://127.0.0.1:1", ssl.create_default_context(), None, None))


def remember_everything(state: OperatorState, key: tuple[str, str], uid: str) -> PodMetricsReader:
    state.owned.control_keys[uid] = "key"
    state.owned.refusals[uid] = {"Deployment": Refusal("h", "refused")}
    state.serving.learned_configs[uid] = object()  # type: ignore[assignment]
    state.serving.failed_loads[uid] = {"pod-1": FailedLoad(None, "boom", 0.0), "pod-2": FailedLoad(None, "x", 0.0)}
    reader = PodMetricsReader()
    reader.samples["pod-1"] = __import__("collections").deque([CounterSample(0.0, 0, 0, 0, 0, 0)])
    state.autoscalers.states[key] = AutoscalerState(reader=reader, source="pods", period=5.0)
    READY.labels(*key).set(1)
    state.manifests.store(Path(f"/repo/{uid}/1"), (), None)
    state.manifests.lookup(Path(f"/repo/{uid}/1"), (), uid)
    state.manifests.lookup(Path("/repo/shared/1"), (), uid)
    state.manifests.store(Path("/repo/shared/1"), (), None)
    return reader


def test_release_empties_every_map() -> None:
    state = OperatorState(kube=KUBE)
    empty = state.entries()
    assert set(empty.values()) == {0}
    remember_everything(state, ("ns", "a"), "uid-a")
    remember_everything(state, ("ns", "b"), "uid-b")
    assert state.entries()["failed_loads"] == 4 and state.entries()["autoscalers"] == 2

    asyncio.run(state.release(("ns", "a"), "uid-a"))
    after_one = state.entries()
    assert after_one["control_keys"] == after_one["autoscalers"] == after_one["learned_configs"] == 1
    assert after_one["verified_manifests"] == 2  # b's own, and the one a and b shared
    asyncio.run(state.release(("ns", "b"), "uid-b"))
    assert state.entries() == empty
    assert READY.collect()[0].samples == []


def test_failed_loads_of_pods_that_are_gone_are_dropped() -> None:
    state = OperatorState(kube=KUBE)
    remember_everything(state, ("ns", "a"), "uid-a")
    state.serving.keep_only_pods("uid-a", {"pod-2"})
    assert set(state.serving.failed_loads["uid-a"]) == {"pod-2"}
    state.serving.keep_only_pods("uid-a", set())
    assert "uid-a" not in state.serving.failed_loads
