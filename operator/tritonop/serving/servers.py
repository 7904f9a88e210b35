"""The servers of one ModelDeployment, for one reconcile: measure new pods' starts (startup.py),
probe each server (step 1), learn the base config (step 2), plan each pod and perform its
action, or take the swap's next step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tritonclient.grpc import model_config_pb2

from tritonop.api.spec import ModelDeployment
from tritonop.clock import Clock
from tritonop.events import EventRecorder
from tritonop.facts import PodFacts, PodStart, StagingGate, node_of, wanted_version
from tritonop.informer import ObjectCache
from tritonop.k8s import PodConditions
from tritonop.names import ANNOTATION_ROLLOUT_HASH
from tritonop.render.model_config import from_json, override_problem
from tritonop.repository.report import RepositoryReport
from tritonop.serving.gates import Gates, Sleep
from tritonop.serving.memory import LoadInFlight, ServingMemory, SwapNeed
from tritonop.serving.plan import Action, Kind, LoadResult, Probe, config_is_current, plan, wanted_config
from tritonop.serving.startup import container_started, measure_starts
from tritonop.serving.steps import PodSteps
from tritonop.serving.swap import SwapKind, SwapPod, next_swap_step, swap_blocked, swap_notice
from tritonop.triton import TritonApi, TritonError, TritonServer


@dataclass(frozen=True)
class Target:
    """What every server should serve."""

    version: int | None  # None: the repository's highest (Triton's "latest")
    repository: RepositoryReport
    control_key: str
    rollout_hash: str  # the pod template's hash: with Recreate/Rolling, older pods are left alone
    # A canary: what each pod (by name) serves instead of `version` (canary.assignment).
    pod_versions: Mapping[str, int | None] | None = None
    staging: StagingGate | None = None  # spec.model.cache: loads wait for their version on the node

    def version_for(self, pod: Mapping[str, Any]) -> int | None:
        return wanted_version(self.pod_versions, pod["metadata"]["name"], self.version)

    def staged_at(self, pod: Mapping[str, Any]) -> str | None:
        """When the pod's version was ready in its node's cache (None: no cache)."""
        version = self.version_for(pod)
        if self.staging is None or version is None:
            return None
        return self.staging.staged_at.get((node_of(pod), version))


# A reconcile waits this long for a load (tests and small models: the whole load).
LOAD_WAIT_SECONDS = 10.0
# A server container this young that does not answer yet is looked at again soon (reconcile.py's
# STARTING_REQUEUE_SECONDS): its load, and so the pod's Ready, should not wait for the next
# ordinary look. Past this, a slow server is looked at as often as anything converging.
SERVER_START_WATCH_SECONDS = 30.0


@dataclass(frozen=True)
class Running:
    """A running pod, its server, and how the server answered (step 1)."""

    pod: dict[str, Any]
    server: TritonApi
    probe: Probe

    @property
    def uid(self) -> str:
        return _uid(self.pod)


@dataclass(frozen=True)
class Converged:
    pods: list[PodFacts]
    config_problem: str | None = None  # overrides that cannot load with the repository's config
    swap: str | None = None  # a pod-by-pod swap is under way or pending: what status should say
    swap_blocked: str | None = None  # one replica, no allowSwapDowntime: why the switch waits
    starts: tuple[PodStart, ...] = ()  # new pods' starts measured now (startup.py)


def pod_facts(pod: dict[str, Any]) -> PodFacts:
    """What Kubernetes says about a pod (Triton not asked yet)."""
    status = pod.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    waiting: dict[str, Any] = next(
        (c["state"]["waiting"] for c in status.get("containerStatuses") or [] if c.get("state", {}).get("waiting")),
        {},
    )
    return PodFacts(
        name=pod["metadata"]["name"],
        scheduled=scheduled.get("status") != "False" and bool(pod.get("spec", {}).get("nodeName")),
        unschedulable_message=scheduled.get("message") if scheduled.get("reason") == "Unschedulable" else None,
        ready=conditions.get("Ready", {}).get("status") == "True",
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message", ""),
    )


@dataclass
class Servers:
    """The servers of one ModelDeployment, for one reconcile."""

    kube: PodConditions
    cache: ObjectCache
    memory: ServingMemory
    md: ModelDeployment
    events: EventRecorder
    clock: Clock
    connect: Callable[[str, str], TritonApi] = TritonServer  # (pod IP, control key) -> its server
    sleep: Sleep = asyncio.sleep  # the swap's waits
    # A reconcile waits this long for a load; a longer one (a large model) goes on in the
    # background while later reconciles serve the other pods (a new pod does not wait for another
    # pod's load to end before its own begins).
    load_wait: float = LOAD_WAIT_SECONDS
    gates: Gates = field(init=False)

    def __post_init__(self) -> None:
        self.gates = Gates(self.kube, self.cache, self.md.model_name, self.clock, self.sleep)

    async def converge(self, pods: list[dict[str, Any]], target: Target) -> Converged:
        """Bring every running pod's server to the target (steps 1-6); facts for every pod, and the
        starts of new pods that became Ready (watched before this reconcile's loads)."""
        self.memory.keep_only_pods({_uid(pod) for pod in pods})
        starts = measure_starts(self.memory.starts, pods, self.md.namespace, self.md.name, target.staged_at)
        return replace(await self.to_target(pods, target), starts=starts)

    async def to_target(self, pods: list[dict[str, Any]], target: Target) -> Converged:
        """Steps 1-6 on every running pod, or the swap's next step."""
        started = [pod for pod in pods if pod.get("status", {}).get("phase") == "Running" and _pod_ip(pod)]
        servers = [self.connect(_pod_ip(pod), target.control_key) for pod in started]
        probes = await asyncio.gather(*map(self.probe, servers))
        running = [Running(*one) for one in zip(started, servers, probes, strict=True)]
        base = self.base_config(target.repository, probes)
        # Overrides Triton would refuse with the repository's config: load nothing, say why.
        problem = override_problem(base, self.md.spec.model.config) if base is not None else None
        need = self.memory.swap
        if need is not None and need.version != target.version:
            self.memory.swap = need = None  # the spec moved on
        # A canary switches chosen pods side by side; the pod-by-pod swap is for a plain switch.
        if need is not None and problem is None and not target.repository.blocks_load and target.pod_versions is None:
            return await self.converge_by_swap(pods, running, base, target, need)
        converged = await asyncio.gather(*(self.converge_one(one, base, target, problem) for one in running))
        swap = swap_notice(self.memory.swap, len(running)) if self.memory.swap is not None else None
        return Converged(_every_pod(pods, converged), problem, swap)

    async def converge_by_swap(
        self,
        pods: list[dict[str, Any]],
        running: list[Running],
        base: model_config_pb2.ModelConfig | None,
        target: Target,
        need: SwapNeed,
    ) -> Converged:
        """Steps a-c: one pod swapped per reconcile, only while every other pod serves. A server
        with nothing loaded (a new pod) has nothing to swap: it loads the target at once."""
        facts: dict[str, PodFacts] = {}
        for one in running:
            facts[one.uid] = await self.converge_one(one, base, target, None, swapping=True)
        swap_pods = [SwapPod(uid, f.ready, f.serves(target.version)) for uid, f in facts.items()]
        allow = self.md.spec.rollout.allow_swap_downtime
        step = next_swap_step(swap_pods, need, allow, self.memory.failed_loads, self.clock.monotonic())
        notice: str | None = swap_notice(need, len(running))
        blocked = None
        if step.kind is SwapKind.DONE:
            self.memory.swap = notice = None
            self.events.normal("VersionSwapped", f"version {target.version} on every pod, swapped one pod at a time")
        elif step.kind is SwapKind.BLOCKED:
            blocked = swap_blocked(need, target.version)
        elif step.kind is SwapKind.ANNOUNCE:
            # Said in status (and an Event) before anything is taken out of service.
            self.memory.swap = replace(need, announced=True)
            self.events.normal("SwapPending", swap_notice(need, len(running)))
        elif step.kind is SwapKind.BACK_OFF and step.pod is not None:
            facts[step.pod] = replace(facts[step.pod], load_error=step.error)  # the swap failed: retried later
        elif step.kind is SwapKind.SWAP and step.pod is not None:
            one = next(one for one in running if one.uid == step.pod)
            facts[one.uid] = await self.swap(one, base, target, facts[one.uid])
        return Converged(_every_pod(pods, facts.values()), None, notice, blocked)

    async def swap(
        self, one: Running, base: model_config_pb2.ModelConfig | None, target: Target, facts: PodFacts
    ) -> PodFacts:
        """Steps a-c on the pod next in turn, then step 6: its gate reopens whatever it serves."""
        wanted = wanted_config(base, self.md, target.version) if base is not None else None
        result = await self.steps(one).swap(wanted, one.probe, target.version)
        current = config_is_current(result.config, list(result.versions), wanted, target.version)
        facts = replace(facts, ready_versions=result.versions, config_current=current, load_error=result.error)
        await self.gates.open_gate(one.pod, facts.ready_versions)
        return facts

    async def probe(self, server: TritonApi) -> Probe:
        """Step 1: live?, the versions READY (the repository index), the config it loaded."""
        if not await server.is_live():
            return Probe(live=False)
        try:
            versions = await server.ready_versions(self.md.model_name)
            config = await server.model_config(self.md.model_name) if versions else None
        except TritonError:
            return Probe(live=False)
        return Probe(True, tuple(versions), config)

    def base_config(self, report: RepositoryReport, probes: Iterable[Probe]) -> model_config_pb2.ModelConfig | None:
        """Step 2: the repository's config: read by the operator, else learned from a serving pod."""
        if report.blocks_load:
            return None  # the repository is broken or still being verified: load nothing new
        if report.readable and report.config is not None:
            if report.checked_by != "operator":
                # From a verification Job's verdict: later verdicts come from status, without it.
                self.memory.learned_config = report.config
            return report.config
        for probe in probes:
            if probe.config:
                self.memory.learned_config = from_json(probe.config)
                break
        return self.memory.learned_config

    async def converge_one(
        self,
        one: Running,
        base: model_config_pb2.ModelConfig | None,
        target: Target,
        problem: str | None,
        *,
        swapping: bool = False,
    ) -> PodFacts:
        """Plan one pod (steps 2-5), perform the action, open its gate once it serves (step 6)."""
        pod, probe = one.pod, one.probe
        in_place = self.md.spec.rollout.in_place
        in_flight = self.loading(_uid(pod), probe)
        # With Recreate/Rolling, old pods keep their version until the Deployment replaces them.
        managed = in_place or pod["metadata"].get("annotations", {}).get(ANNOTATION_ROLLOUT_HASH) == target.rollout_hash
        version = target.version_for(pod)
        wanted = wanted_config(base, self.md, version) if base is not None else None
        # A canary's way back (its pods return to the stable version) is not blocked by the check of
        # the version under test: the stable one was verified when it rolled out.
        blocks = target.repository.blocks_load and version == target.version
        failed = self.memory.failed_loads.get(_uid(pod))
        unstaged = target.staging is not None and target.staging.blocks(node_of(pod), version, bool(probe.versions))
        action = plan(
            probe,
            wanted,
            version,
            failed,
            self.clock.monotonic(),
            managed=managed,
            in_place=in_place,
            config_problem=problem is not None,
            repository_blocks=blocks,
            swapping=swapping,
            staging_blocks=unstaged,
        )
        if action.kind is Kind.NOT_LIVE:
            return replace(pod_facts(pod), starting=self.just_started(pod))
        result = LoadResult(probe.versions, probe.config)
        if in_flight is not None:
            # A load under way, or just ended (the probe may predate its end): nothing new is asked
            # of this server in this reconcile.
            result = in_flight
        elif action.kind is Kind.BACK_OFF:
            result = LoadResult(probe.versions, None, action.error)
        elif action.loads:
            result = await self.load(one, action, probe, wanted, version)
        current = config_is_current(result.config, list(result.versions), wanted, version)
        facts = replace(
            pod_facts(pod),
            live=True,
            ready_versions=result.versions,
            config_current=current or (not managed and bool(result.versions)),
            load_error=result.error,
            awaiting_replacement=not managed,
            unreachable=result.unreachable,
            awaiting_staging=action.kind is Kind.AWAITING_STAGING,
        )
        if facts.serves(version if managed else None):
            await self.gates.open_gate(pod, facts.ready_versions)
        return facts

    def just_started(self, pod: Mapping[str, Any]) -> bool:
        """Its server container started less than SERVER_START_WATCH_SECONDS ago: tritonserver is
        usually live within a second, and the load should begin the moment it is."""
        started = container_started(pod.get("status") or {})
        return started is not None and self.clock.time() - started < SERVER_START_WATCH_SECONDS

    def steps(self, one: Running, events: EventRecorder | None = None) -> PodSteps:
        return PodSteps(one.pod, one.server, self.md, self.memory, events or self.events, self.clock, self.gates)

    async def load(
        self, one: Running, action: Action, probe: Probe, wanted: str | None, version: int | None
    ) -> LoadResult:
        """The load, waited for up to load_wait; past that it goes on in the background, and the
        pod shows what its server serves meanwhile."""
        events = EventRecorder(self.events.log, self.events.subject)
        task = asyncio.create_task(self.steps(one, events).load(action, probe, wanted, version))
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self.load_wait)
        except TimeoutError:
            self.memory.loading[one.uid] = LoadInFlight(task, events)
            self.events.record_all(events.events)  # said so far (LoadingVersion)
            events.events.clear()
            return LoadResult(probe.versions, probe.config)
        self.events.record_all(events.events)
        return result

    def loading(self, uid: str, probe: Probe) -> LoadResult | None:
        """A background load of this pod: still under way (the pod as probed shows), or its
        result once it ended (taken once, with what it said); None: no load in the background."""
        in_flight = self.memory.loading.get(uid)
        if in_flight is None:
            return None
        if not in_flight.task.done():
            return LoadResult(probe.versions, probe.config)
        del self.memory.loading[uid]
        self.events.record_all(in_flight.events.events)
        if in_flight.task.cancelled() or in_flight.task.exception() is not None:
            return None  # plan again from the probe
        return in_flight.task.result()


def _uid(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["uid"])


def _pod_ip(pod: dict[str, Any]) -> str:
    return str(pod.get("status", {}).get("podIP") or "")


def _every_pod(pods: list[dict[str, Any]], facts: Iterable[PodFacts]) -> list[PodFacts]:
    """Facts for every pod: those a server answered for, Kubernetes' own for the others."""
    by_name = {f.name: f for f in facts}
    return [by_name.get(pod["metadata"]["name"]) or pod_facts(pod) for pod in pods]
