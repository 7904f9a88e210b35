"""What the process remembers about a ModelDeployment goes when it goes: one release path."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from pathlib import Path

from tritonop.api.spec import ModelDeployment
from tritonop.autoscale.metrics import CounterSample, PodMetricsReader
from tritonop.autoscale.runner import AutoscalerState
from tritonop.facts import PodStart
from tritonop.k8s import Credentials, KubeClient
from tritonop.owned import Refusal
from tritonop.serving import FailedLoad
from tritonop.serving.memory import StartWatch
from tritonop.serving.startup import POD_STARTUP, observe
from tritonop.state import READY, OperatorState

# No request is made: the client only has to exist.
KUBE = KubeClient(Credentials("https://127.0.0.1:1", ssl.create_default_context(), None, None))


def model(name: str, uid: str) -> ModelDeployment:
    return ModelDeployment.from_body(
        {"metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": {"model": {"repository": "file:///r"}}}
    )


def remember_everything(state: OperatorState, md: ModelDeployment) -> PodMetricsReader:
    record = state.memory.of(md)
    record.owned.control_key = "key"
    record.owned.refusals["Deployment"] = Refusal("h", "refused")
    record.serving.learned_config = object()  # type: ignore[assignment]
    record.serving.failed_loads.update({"pod-1": FailedLoad(None, "boom", 0.0), "pod-2": FailedLoad(None, "x", 0.0)})
    record.serving.starts.update({"pod-1": StartWatch(done=True), "pod-2": StartWatch()})
    observe(md.namespace, md.name, PodStart("pod-1", "2026-01-01T00:00:00Z", 9.0, 1.0, 2.0, 3.0, 2.0, 1.0))
    reader = PodMetricsReader()
    reader.samples["pod-1"] = deque([CounterSample(0.0, 0, 0, 0, 0, 0)])
    record.autoscaler = AutoscalerState(reader=reader, source="pods", period=5.0)
    READY.labels(md.namespace, md.name).set(1)
    uid = md.uid
    state.manifests.store(Path(f"/repo/{uid}/1"), (), None)
    state.manifests.lookup(Path(f"/repo/{uid}/1"), (), uid)
    state.manifests.lookup(Path("/repo/shared/1"), (), uid)
    state.manifests.store(Path("/repo/shared/1"), (), None)
    return reader


def test_release_empties_every_map() -> None:
    state = OperatorState(kube=KUBE)
    empty = state.entries()
    assert set(empty.values()) == {0}
    remember_everything(state, model("a", "uid-a"))
    remember_everything(state, model("b", "uid-b"))
    assert state.entries()["failed_loads"] == 4 and state.entries()["autoscalers"] == 2
    assert state.entries()["objects"] == 2 and state.entries()["autoscaler_pod_samples"] == 2
    assert state.entries()["pod_starts"] == 4

    asyncio.run(state.release(("ns", "a"), "uid-a"))
    after_one = state.entries()
    assert after_one["control_keys"] == after_one["autoscalers"] == after_one["learned_configs"] == 1
    assert after_one["verified_manifests"] == 2  # b's own, and the one a and b shared
    asyncio.run(state.release(("ns", "b"), "uid-b"))
    assert state.entries() == empty
    assert READY.collect()[0].samples == []
    assert [s for s in POD_STARTUP.collect()[0].samples if s.labels.get("namespace") == "ns"] == []


def test_release_without_a_uid_finds_the_record_by_name() -> None:
    state = OperatorState(kube=KUBE)
    remember_everything(state, model("a", "uid-a"))
    asyncio.run(state.release(("ns", "a"), None))
    assert state.entries()["objects"] == 0


def test_failed_loads_of_pods_that_are_gone_are_dropped() -> None:
    state = OperatorState(kube=KUBE)
    md = model("a", "uid-a")
    remember_everything(state, md)
    serving = state.memory.of(md).serving
    serving.keep_only_pods({"pod-2"})
    assert set(serving.failed_loads) == set(serving.starts) == {"pod-2"}
    serving.keep_only_pods(set())
    assert serving.failed_loads == {} and serving.starts == {}
