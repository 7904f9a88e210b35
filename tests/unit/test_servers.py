"""Servers.converge end to end against in-memory Triton servers and pods (tests/unit/fakes.py):
the in-place switch, failed loads and their back-off, the pod-by-pod swap when a version does
not fit twice, and an operator restart in the middle of one. Time is a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tests.unit.fakes import CUDA_OOM, FakeClock, FakeKube, FakeTriton, FakeTritons, base_config, make_pod
from tritonop.api.spec import ModelDeployment
from tritonop.events import Event, EventRecorder
from tritonop.facts import PodFacts
from tritonop.informer import ObjectCache
from tritonop.names import MODEL_READY_GATE
from tritonop.repository.report import RepositoryReport
from tritonop.serving import (
    FAILED_LOAD_RETRY_SECONDS,
    SWAP_DRAIN_TIMEOUT_SECONDS,
    SWAP_GRACE_SECONDS,
    SWAP_POLL_SECONDS,
    SWAP_QUIET_SECONDS,
    Converged,
    Servers,
    ServingMemory,
    Target,
)

GATE = MODEL_READY_GATE
BROKEN = "corrupt weights file: truncated at byte 4096"


def model_deployment(
    version: int, replicas: int, config: dict[str, Any] | None = None, **rollout: Any
) -> ModelDeployment:
    model = {"name": "m", "repository": "file:///r", "version": version, **({"config": config} if config else {})}
    spec = {
        "model": model,
        "replicas": replicas,
        "rollout": {"strategy": "InPlace", **rollout},
    }
    return ModelDeployment.from_body({"metadata": {"name": "m", "namespace": "n", "uid": "u"}, "spec": spec})


def report(readable: bool = True) -> RepositoryReport:
    return RepositoryReport(readable, versions=[1, 2, 3], config=base_config() if readable else None)


@dataclass
class World:
    """One ModelDeployment (switching to version 2) with its pods and servers; reconcile() is one
    Servers.converge."""

    md: ModelDeployment
    kube: FakeKube
    tritons: FakeTritons
    clock: FakeClock = field(default_factory=FakeClock)
    cache: ObjectCache = field(default_factory=ObjectCache)
    memory: ServingMemory = field(default_factory=ServingMemory)
    events: list[Event] = field(default_factory=list)  # every reconcile's, in order
    repository: RepositoryReport = field(default_factory=report)

    def reconcile(self) -> Converged:
        pods = self.kube.pod_list()
        for pod in pods:  # the watch: the cache holds what the API server holds
            self.cache.store("Pod", pod)
        recorder = EventRecorder(logging.LoggerAdapter(logging.getLogger("test")), "n/m")
        connect, sleep = self.tritons.connect, self.clock.sleep  # the fakes in place of TritonServer, asyncio.sleep
        servers = Servers(self.kube, self.cache, self.memory, self.md, recorder, self.clock, connect, sleep)
        target = Target(self.md.spec.model.version, self.repository, "key", "hash")
        converged = asyncio.run(servers.converge(pods, target))
        self.events.extend(recorder.events)
        return converged

    def reasons(self) -> list[str]:
        reasons = [event.reason for event in self.events]
        self.events.clear()
        return reasons

    def server(self, name: str) -> FakeTriton:
        return self.tritons.servers[f"10.0.0.{ord(name) - ord('a') + 1}"]

    def gate_patches(self) -> list[tuple[str, str]]:
        return [(pod, status) for pod, kind, status in self.kube.patches if kind == GATE]


def world(*servers: FakeTriton, gates: tuple[str | None, ...] = (), kubelet: bool = True, **rollout: Any) -> World:
    """Pods a, b, c... at 10.0.0.1, .2, .3..., each with its server (gate True unless `gates` says)."""
    names = [chr(ord("a") + i) for i in range(len(servers))]
    ips = [f"10.0.0.{i + 1}" for i in range(len(servers))]
    gate_of = list(gates) + ["True"] * (len(servers) - len(gates))
    pods = [make_pod(name, ip, gate=gate) for name, ip, gate in zip(names, ips, gate_of, strict=True)]
    return World(
        model_deployment(2, len(servers), **rollout),
        FakeKube(*pods, kubelet=kubelet),
        FakeTritons(dict(zip(ips, servers, strict=True))),
    )


def by_name(converged: Converged) -> dict[str, PodFacts]:
    return {pod.name: pod for pod in converged.pods}


def test_in_place_switch_loads_the_target_once_and_opens_the_gate_of_a_new_pod() -> None:
    w = world(FakeTriton().serve(1), FakeTriton().serve(1), FakeTriton(), gates=("True", "True", "False"))
    facts = by_name(w.reconcile())
    assert w.server("a").calls == w.server("b").calls == ["load [2]"]
    assert w.server("c").calls == ["load [2]"]  # a new server loads the target alone
    assert all(w.server(name).ready == {2} for name in "abc")
    assert all(facts[name].serves(2) and facts[name].load_error is None for name in "abc")
    assert w.reasons().count("RetiringVersion") == 2
    assert w.gate_patches() == [("c", "True")]  # a and b served all along: their gates stay open
    assert w.kube.condition("c", "Ready") == "True"
    assert w.memory.last_load is not None and w.memory.last_load.version == 2
    assert w.tritons.keys == {"key"}
    # Converged: nothing more to do.
    w.reconcile()
    assert w.server("a").calls == ["load [2]"] and w.reasons() == []


def test_a_switch_loads_the_target_once_and_never_reloads_the_old_version() -> None:
    # Python-backend servers on a fresh repository (FakeTriton.writes_bytecode): version 1's folder
    # changed after it loaded, so a load request listing 1 would reload it. Memory for two copies.
    w = world(*(FakeTriton(capacity=2).serve(1) for _ in range(2)))
    w.reconcile()
    assert [(w.server(name).loads, w.server(name).in_place) for name in "ab"] == [([2], [])] * 2
    assert all(w.server(name).ready == {2} for name in "ab") and w.memory.swap is None
    # Back to 1, with new overrides at once: again one load each, of 1; 2 is not touched.
    w.md = model_deployment(1, 2, {"maxBatchSize": 4})
    facts = by_name(w.reconcile())
    assert [(w.server(name).loads, w.server(name).in_place) for name in "ab"] == [([2, 1], [])] * 2
    assert all(facts[name].serves(1) and facts[name].config_current for name in "ab")
    assert "VersionDoesNotFitTwice" not in w.reasons()


def test_a_switch_left_half_done_is_finished_without_reloading_the_old_version() -> None:
    w = world(FakeTriton(writes_bytecode=False).serve(1, 2))  # both serve (an earlier operator's beside load)
    facts = by_name(w.reconcile())["a"]
    assert w.server("a").calls == ["load [2]"] and facts.serves(2)
    assert (w.server("a").loads, w.server("a").in_place) == ([], [2])  # 2 updated in place, 1 unloaded
    assert "RetiringVersion" in w.reasons()


def test_the_first_side_by_side_load_is_timed_as_such() -> None:
    w = world(FakeTriton().serve(1))
    w.reconcile()
    assert w.memory.last_load is not None
    assert (w.memory.last_load.version, w.memory.last_load.mode, w.memory.last_load.pod) == (2, "SideBySide", "a")


def test_a_failed_load_keeps_the_old_version_and_is_retried_after_the_back_off() -> None:
    w = world(FakeTriton(broken={2: BROKEN}).serve(1))
    facts = by_name(w.reconcile())["a"]
    assert (facts.ready_versions, facts.load_error, facts.config_current) == ((1,), BROKEN, False)
    assert w.server("a").ready == {1} and w.reasons() == ["LoadingVersion", "LoadFailed"]
    w.clock.advance(FAILED_LOAD_RETRY_SECONDS - 1)
    assert by_name(w.reconcile())["a"].load_error == BROKEN  # still said, not tried again
    assert w.server("a").calls == ["load [2]"] and w.reasons() == []
    w.clock.advance(1)
    w.reconcile()
    assert w.server("a").calls == ["load [2]", "load [2]"] and "LoadFailed" in w.reasons()
    # Fixed in the repository: the next retry loads it, and the failure is forgotten.
    w.server("a").broken.clear()
    w.clock.advance(FAILED_LOAD_RETRY_SECONDS)
    assert by_name(w.reconcile())["a"].serves(2)
    assert w.memory.failed_loads == {}


def test_a_changed_config_is_loaded_at_once_after_a_failure() -> None:
    w = world(FakeTriton(broken={2: BROKEN}).serve(1))
    w.reconcile()
    w.md = model_deployment(2, 1, {"maxBatchSize": 4})
    assert by_name(w.reconcile())["a"].load_error == BROKEN  # no time passed: tried at once, failed again
    assert w.server("a").calls == ["load [2]", "load [2]"]
    assert json.loads(w.memory.failed_loads["uid-a"].config_json or "{}")["max_batch_size"] == 4
    w.server("a").broken.clear()
    w.md = model_deployment(2, 1, {"maxBatchSize": 2})
    assert by_name(w.reconcile())["a"].serves(2) and w.memory.failed_loads == {}
    config = w.server("a").config
    assert config is not None and config["max_batch_size"] == 2


def test_a_server_that_does_not_answer_is_nobodys_failure() -> None:
    w = world(FakeTriton(no_answer={"load"}).serve(1))
    facts = by_name(w.reconcile())["a"]
    assert facts.unreachable and facts.load_error is None and facts.ready_versions == (1,)
    assert w.memory.failed_loads == {} and "LoadFailed" not in w.reasons()


def test_the_repositorys_config_is_learned_from_triton_when_the_operator_cannot_read_it() -> None:
    w = world(FakeTriton())
    w.repository = report(readable=False)
    facts = by_name(w.reconcile())["a"]
    assert w.server("a").calls == ["load as-is", "load [2]"]
    assert facts.serves(2) and w.memory.learned_config is not None
    assert w.memory.learned_config.max_batch_size == 8


def test_pods_of_an_older_template_await_their_replacement() -> None:
    w = world(FakeTriton().serve(1), strategy="Rolling")
    facts = by_name(w.reconcile())["a"]  # the pod's rollout hash is "hash", the target's too: managed
    assert facts.serves(2)
    old = world(FakeTriton().serve(1), strategy="Rolling")
    old.kube.pods[("n", "a")]["metadata"]["annotations"] = {}
    facts = by_name(old.reconcile())["a"]
    assert facts.awaiting_replacement and facts.ready_versions == (1,) and old.server("a").calls == []


def test_overrides_that_cannot_load_load_nothing() -> None:
    w = world(FakeTriton().serve(1))
    w.md = model_deployment(2, 1, {"maxBatchSize": 2, "dynamicBatching": {"preferredBatchSizes": [4]}})
    converged = w.reconcile()
    assert converged.config_problem is not None and "max_batch_size 2" in converged.config_problem
    assert w.server("a").calls == []


def test_a_version_that_does_not_fit_twice_is_swapped_pod_by_pod() -> None:
    w = world(*(FakeTriton(capacity=1).serve(1) for _ in range(3)))
    w.server("b").pending = [3.0, 1.0, 0.0]  # requests still queued when b leaves the Service
    w.server("b").finished = [10.0, 14.0, 15.0]  # kept-alive clients still sending, then gone
    first = w.reconcile()
    assert all(w.server(name).calls == ["load [2]"] for name in "abc")
    assert w.reasons().count("VersionDoesNotFitTwice") == 3
    assert first.swap is not None and CUDA_OOM in first.swap and first.swap_blocked is None
    assert all(facts.ready_versions == (1,) and facts.load_error is None for facts in first.pods)
    # Said first, nothing taken out of service yet.
    assert w.reconcile().swap is not None and w.reasons() == ["SwapPending"] and w.gate_patches() == []
    for turn, name in enumerate("abc"):
        converged = w.reconcile()
        assert w.reasons() == ["SwappingVersion", "VersionSwapped"]
        assert w.server(name).calls == ["load [2]", "unload", "load [2]"]
        assert by_name(converged)[name].serves(2) and converged.swap is not None
        assert [w.server(other).ready for other in "abc"[turn + 1 :]] == [{1}] * (2 - turn)
        assert w.gate_patches()[-2:] == [(name, "False"), (name, "True")]
        assert w.kube.condition(name, "Ready") == "True"
    # One gate closed at a time, reopened before the next pod's.
    assert w.gate_patches() == [(name, status) for name in "abc" for status in ("False", "True")]
    assert w.server("b").pending == [0.0] and w.server("b").finished == [15.0]  # drained: queue empty, clients gone
    assert w.memory.last_load is not None and (w.memory.last_load.mode, w.memory.last_load.pod) == ("Swap", "c")
    done = w.reconcile()
    assert done.swap is None and w.memory.swap is None and w.reasons() == ["VersionSwapped"]
    assert all(facts.serves(2) for facts in done.pods)


def test_a_swap_waits_for_ready_false_and_the_queue_at_most_the_drain_timeout() -> None:
    w = world(*(FakeTriton(capacity=1).serve(1) for _ in range(2)), kubelet=False)
    w.server("a").pending = [7.0]  # never drains
    w.server("a").unloading_reads = 3
    w.reconcile()
    w.reconcile()
    started = w.clock.monotonic()
    w.reconcile()
    assert w.server("a").calls == ["load [2]", "unload", "load [2]"]
    assert SWAP_GRACE_SECONDS in w.clock.slept
    waited = w.clock.monotonic() - started
    assert SWAP_DRAIN_TIMEOUT_SECONDS <= waited < SWAP_DRAIN_TIMEOUT_SECONDS + SWAP_GRACE_SECONDS + 2


def test_a_swap_unloads_only_once_kept_alive_clients_have_stopped_sending() -> None:
    # Out of the Service, the pod still gets requests over connections opened before (HTTP
    # keep-alive, gRPC channels until their maximum age): 40 polls with a request finished each.
    w = world(*(FakeTriton(capacity=1).serve(1) for _ in range(2)))
    w.server("a").finished = [float(count) for count in range(1, 41)]
    w.reconcile()
    w.reconcile()
    started = w.clock.monotonic()
    w.reconcile()
    assert w.server("a").calls == ["load [2]", "unload", "load [2]"] and w.server("a").finished == [40.0]
    waited = w.clock.monotonic() - started
    assert waited >= SWAP_GRACE_SECONDS + 39 * SWAP_POLL_SECONDS + SWAP_QUIET_SECONDS


def test_one_replica_swaps_only_when_downtime_is_allowed() -> None:
    w = world(FakeTriton(capacity=1).serve(1))
    first = w.reconcile()
    assert first.swap is not None and "does not serve during the swap" in first.swap
    blocked = w.reconcile()
    assert blocked.swap_blocked is not None
    assert "spec.rollout.allowSwapDowntime" in blocked.swap_blocked and CUDA_OOM in blocked.swap_blocked
    assert w.server("a").ready == {1} and w.gate_patches() == [] and "SwapPending" not in w.reasons()
    w.md = model_deployment(2, 1, allowSwapDowntime=True)
    announced = w.reconcile()
    assert announced.swap_blocked is None and w.reasons() == ["SwapPending"] and w.server("a").ready == {1}
    swapped = w.reconcile()
    assert by_name(swapped)["a"].serves(2) and w.gate_patches() == [("a", "False"), ("a", "True")]


def test_the_second_swap_candidate_waits_while_the_first_has_a_failed_load() -> None:
    w = world(FakeTriton(capacity=1, broken={2: BROKEN}).serve(1), FakeTriton(capacity=1).serve(1))
    w.reconcile()
    w.reconcile()
    w.reasons()
    failed = by_name(w.reconcile())
    # a's swap failed: its old version loaded back, its gate reopened, the failure said.
    assert w.server("a").calls == ["load [2]", "unload", "load [2]", "load [1]"]
    assert w.server("a").ready == {1} and failed["a"].load_error == BROKEN
    assert w.gate_patches() == [("a", "False"), ("a", "True")]
    assert w.reasons() == ["SwappingVersion", "LoadFailed"]
    # Within the back-off the swap waits for a: b (Ready, behind) is not taken in its place.
    w.clock.advance(FAILED_LOAD_RETRY_SECONDS - 1)
    waiting = by_name(w.reconcile())
    assert waiting["a"].load_error == BROKEN and waiting["b"].load_error is None
    assert w.server("b").calls == ["load [2]"] and len(w.gate_patches()) == 2 and w.reasons() == []
    # After it, a is tried again (fixed meanwhile), then b.
    w.server("a").broken.clear()
    w.clock.advance(1)
    assert by_name(w.reconcile())["a"].serves(2)
    assert by_name(w.reconcile())["b"].serves(2)
    assert w.reconcile().swap is None


def test_after_an_operator_restart_the_pod_a_swap_took_out_of_service_goes_first() -> None:
    # c's gate was closed by a swap the previous process began; the new process remembers nothing.
    w = world(*(FakeTriton(capacity=1).serve(1) for _ in range(3)), gates=("True", "True", "False"))
    assert w.kube.condition("c", "Ready") == "False"
    first = w.reconcile()  # the side-by-side load fails as before: the swap resumes
    assert first.swap is not None and w.memory.swap is not None
    assert by_name(first)["c"].ready_versions == (1,) and w.gate_patches() == []
    w.reconcile()
    assert "SwapPending" in w.reasons()
    w.reconcile()
    assert w.server("c").calls == ["load [2]", "unload", "load [2]"]
    assert w.server("a").calls == w.server("b").calls == ["load [2]"]
    assert w.gate_patches() == [("c", "False"), ("c", "True")]
    assert w.kube.condition("c", "Ready") == "True"


def test_after_a_restart_a_pod_the_swap_had_unloaded_loads_the_target_at_once() -> None:
    w = world(FakeTriton(capacity=1).serve(1), FakeTriton(capacity=1), gates=("True", "False"))
    facts = by_name(w.reconcile())
    assert w.server("b").calls == ["load [2]"] and facts["b"].serves(2)
    assert w.gate_patches() == [("b", "True")]


def test_a_long_load_goes_on_in_the_background_and_a_new_pod_does_not_wait_for_it() -> None:
    """A large model's load takes minutes. The reconcile waits for it only up to load_wait; then
    the load goes on, the pod shows what its server serves meanwhile, and a pod that starts in
    the meantime begins its own load at once (before, it waited for the first load to end)."""

    async def scenario() -> None:
        slow_a, slow_b = asyncio.Event(), asyncio.Event()
        w = world(FakeTriton(hold=slow_a))
        pods = w.kube.pod_list()

        async def reconcile(pods: list[dict[str, Any]]) -> Converged:
            recorder = EventRecorder(logging.LoggerAdapter(logging.getLogger("test")), "n/m")
            servers = Servers(
                w.kube, w.cache, w.memory, w.md, recorder, w.clock, w.tritons.connect, w.clock.sleep, load_wait=0.01
            )
            for pod in pods:
                w.cache.store("Pod", pod)
            converged = await servers.converge(pods, Target(2, w.repository, "key", "hash"))
            w.events.extend(recorder.events)
            return converged

        facts = by_name(await reconcile(pods))
        assert w.server("a").calls == ["load [2]"] and not facts["a"].serves(2)
        assert w.reasons() == ["LoadingVersion"] and set(w.memory.loading) == {"uid-a"}
        # Pod b starts while a's load goes on: its load is asked for in the next reconcile.
        w.tritons.servers["10.0.0.2"] = FakeTriton(hold=slow_b)
        w.kube.add(make_pod("b", "10.0.0.2", gate="False"))
        pods = w.kube.pod_list()
        facts = by_name(await reconcile(pods))
        assert w.server("a").calls == ["load [2]"]  # not asked again while under way
        assert w.server("b").calls == ["load [2]"] and not facts["b"].serves(2)
        assert set(w.memory.loading) == {"uid-a", "uid-b"}
        # a's load ends: the next reconcile takes its result and opens its gate, b still loads.
        slow_a.set()
        await asyncio.sleep(0)
        facts = by_name(await reconcile(pods))
        assert facts["a"].serves(2) and not facts["b"].serves(2) and set(w.memory.loading) == {"uid-b"}
        assert w.server("a").calls == ["load [2]"] and w.memory.last_load is not None
        slow_b.set()
        await asyncio.sleep(0)
        facts = by_name(await reconcile(pods))
        assert facts["b"].serves(2) and w.memory.loading == {}
        assert ("b", "True") in w.gate_patches()

    asyncio.run(scenario())


def test_a_pod_gone_mid_load_has_its_load_forgotten() -> None:
    async def scenario() -> None:
        w = world(FakeTriton(hold=asyncio.Event()))
        recorder = EventRecorder(logging.LoggerAdapter(logging.getLogger("test")), "n/m")
        servers = Servers(
            w.kube, w.cache, w.memory, w.md, recorder, w.clock, w.tritons.connect, w.clock.sleep, load_wait=0.01
        )
        await servers.converge(w.kube.pod_list(), Target(2, w.repository, "key", "hash"))
        task = w.memory.loading["uid-a"].task
        await servers.converge([], Target(2, w.repository, "key", "hash"))
        await asyncio.sleep(0)
        assert w.memory.loading == {} and task.cancelled()

    asyncio.run(scenario())
