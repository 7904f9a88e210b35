"""Bringing every Triton server of a ModelDeployment to the target version and config.

The in-place switch protocol (rollout.strategy InPlace), per running pod, in one reconcile:

1. Probe. Ask the server at the pod IP whether it is live, which versions of the model are
   READY (the repository index: Triton keeps reporting an old version_policy after a
   version-only reload, so the index is the truth) and the config it loaded.
2. Decide what is wanted. The base config is the repository's config.pbtxt when the operator
   can read the repository; else the config a serving pod reports (learned, per ModelDeployment);
   with neither, Triton loads the repository's config as-is once and the operator learns it.
   Wanted = base + the spec's overrides + version_policy {specific: [target]}.
   A broken repository (RepositoryValid=False), or overrides that cannot work with the
   repository's config (preferred batch sizes above its max_batch_size), load nothing: what
   serves keeps serving, and ModelLoaded says why.
3. Current? The pod serves exactly [target] and the fields the operator sets (max_batch_size,
   dynamic_batching, instance counts) are as wanted: nothing to do.
4. Load beside. If the pod serves other versions and not the target, load a config whose
   version_policy lists old + target: Triton loads the target next to the old versions, which
   keep answering. The call returns when the target is READY (or fails).
5. Retire. Load the wanted config (target only): Triton unloads the old versions after their
   in-flight requests finish. No pod restarts; no failed requests.
6. Open the gate. Once the pod serves the target with the wanted config, set its readiness
   gate condition (tritonop.dev/model-ready) True, so Services send it traffic. A pod that
   starts later (scale-up, rescheduling) loads the target in step 4/5 before its gate opens.

When the target does not fit beside the old version (Triton refuses the load in step 4 for lack
of device memory), the switch becomes a pod-by-pod swap, from the next reconcile on:
a. one pod at a time, and only while every other pod is Ready (the PodDisruptionBudget's
   maxUnavailable is 1), close that pod's readiness gate;
b. wait until Kubernetes shows it not Ready (load balancers drop it), then until its queue is
   empty (Triton's pending-request gauge);
c. unload the old version (Triton finishes the requests in flight first), load the target
   alone, and reopen the gate (step 6). If the target fails to load, the old version is loaded
   back and the gate reopened: the pod serves what it served before.
With one replica a swap is downtime: it happens only with spec.rollout.allowSwapDowntime, and
status says so (Progressing=True SwappingVersion, "it does not serve during the swap") and a
SwapPending Event in the reconcile before the swap starts; without it, ModelLoaded=False
InsufficientMemoryForSwitch says what to do. The swap is remembered in memory only: after an
operator restart, the next side-by-side load fails the same way and the swap resumes, taking
first a pod whose gate a swap had already closed. New pods (scale-up) load the target alone.

A load that fails leaves the old version serving; ModelLoaded=False carries Triton's message and
a LoadFailed Warning is posted. The failure is remembered per pod: the same config is retried
after FAILED_LOAD_RETRY_SECONDS, a changed config at once. A server that does not answer at all
(the pod going away, the server restarting) is nobody's failure: the next reconcile looks again.

With Recreate/Rolling, pods whose template is older than the spec keep their version until the
Deployment replaces them (they are "awaiting replacement"); new pods are brought to the target.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tritonclient.grpc import model_config_pb2

from tritonop.api.spec import LoadStatus, ModelDeployment
from tritonop.cache import ObjectCache
from tritonop.clock import Clock, rfc3339
from tritonop.events import EventRecorder
from tritonop.k8s import KubeClient
from tritonop.owned import is_subset
from tritonop.render.model_config import effective_config, from_json, override_problem, to_json
from tritonop.render.objects import ANNOTATION_ROLLOUT_HASH, MODEL_READY_GATE, PRESTOP_SLEEP_SECONDS
from tritonop.repository.local import RepositoryReport
from tritonop.status import PodFacts, wanted_version
from tritonop.triton import ServerUnreachable, TritonError, TritonServer

LOG = logging.getLogger("tritonop.serving")
# A load that failed is retried after this long, or at once when the config to load changes.
FAILED_LOAD_RETRY_SECONDS = 20.0
# How Triton's backends say a load did not fit in device memory (CUDA, TensorRT, PyTorch, ONNX Runtime).
OUT_OF_MEMORY = re.compile(r"out of memory|out_of_memory|memoryallocation|failed to allocate|\boom\b", re.IGNORECASE)
SWAP_DRAIN_TIMEOUT_SECONDS = 120.0  # a swapping pod's queue and gate: at most this long
SWAP_GRACE_SECONDS = float(PRESTOP_SLEEP_SECONDS)  # after the pod shows not Ready: load balancers catch up
SWAP_POLL_SECONDS = 0.25


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


@dataclass(frozen=True)
class Target:
    """What every server should serve."""

    version: int | None  # None: the repository's highest (Triton's "latest")
    repository: RepositoryReport
    control_key: str
    rollout_hash: str  # the pod template's hash: with Recreate/Rolling, older pods are left alone
    # A canary: what each pod (by name) serves instead of `version` (canary.assignment).
    pod_versions: Mapping[str, int | None] | None = None

    def version_for(self, pod: dict[str, Any]) -> int | None:
        return wanted_version(self.pod_versions, pod["metadata"]["name"], self.version)


@dataclass(frozen=True)
class Probe:
    """One server as it answered."""

    live: bool
    versions: tuple[int, ...] = ()
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadResult:
    versions: tuple[int, ...]
    config: dict[str, Any] | None
    error: str | None = None
    unreachable: bool = False


@dataclass(frozen=True)
class Converged:
    pods: list[PodFacts]
    config_problem: str | None = None  # overrides that cannot load with the repository's config
    swap: str | None = None  # a pod-by-pod swap is under way or pending: what status should say
    swap_blocked: str | None = None  # one replica, no allowSwapDowntime: why the switch waits


@dataclass
class ServingMemory:
    """What the process remembers about one ModelDeployment's servers."""

    # The repository config learned from Triton where the operator cannot read the storage itself.
    learned_config: model_config_pb2.ModelConfig | None = None
    failed_loads: dict[str, FailedLoad] = field(default_factory=dict)  # pod uid -> its failed load
    swap: SwapNeed | None = None  # a switch that must go pod by pod
    last_load: LoadStatus | None = None  # the latest timed load

    def timed_load(self, pod: str, version: int | None, mode: str, seconds: float) -> None:
        self.last_load = LoadStatus.model_validate(
            {"version": version, "seconds": round(seconds, 3), "mode": mode, "pod": pod, "completedAt": rfc3339()}
        )

    def keep_only_pods(self, pod_uids: set[str]) -> None:
        """Drop the failures of pods that are gone."""
        for pod_uid in [p for p in self.failed_loads if p not in pod_uids]:
            del self.failed_loads[pod_uid]


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

    kube: KubeClient
    cache: ObjectCache
    memory: ServingMemory
    md: ModelDeployment
    events: EventRecorder
    clock: Clock

    async def converge(self, pods: list[dict[str, Any]], target: Target) -> Converged:
        """Bring every running pod's server to the target (steps 1-6 above); facts for every pod."""
        self.memory.keep_only_pods({pod["metadata"]["uid"] for pod in pods})
        running = [pod for pod in pods if pod.get("status", {}).get("phase") == "Running" and _pod_ip(pod)]
        servers = {pod["metadata"]["uid"]: TritonServer(_pod_ip(pod), target.control_key) for pod in running}
        probes = dict(zip(servers, await asyncio.gather(*map(self.probe, servers.values())), strict=True))
        base = self.base_config(target.repository, probes.values())
        # Overrides Triton would refuse with the repository's config: load nothing, say why.
        problem = override_problem(base, self.md.spec.model.config) if base is not None else None
        need = self.memory.swap
        if need is not None and need.version != target.version:
            self.memory.swap = None  # the spec moved on
            need = None
        # A canary switches chosen pods side by side; the pod-by-pod swap is for a plain switch.
        if need is not None and problem is None and not target.repository.blocks_load and target.pod_versions is None:
            return await self.converge_by_swap(pods, running, servers, probes, base, target, need)
        converged = await asyncio.gather(
            *(
                self.converge_one(
                    pod, servers[pod["metadata"]["uid"]], probes[pod["metadata"]["uid"]], base, target, problem is None
                )
                for pod in running
            )
        )
        by_name = {facts.name: facts for facts in converged}
        swap = None
        need = self.memory.swap
        if need is not None:
            swap = self.swap_notice(need, len(running))
        return Converged([by_name.get(pod["metadata"]["name"]) or pod_facts(pod) for pod in pods], problem, swap)

    def swap_notice(self, need: SwapNeed, replicas: int) -> str:
        downtime = " (one replica: it does not serve during the swap)" if replicas <= 1 else ""
        return (
            f"version {need.version} does not fit beside the loaded version in device memory; switching pod by "
            f"pod, one at a time, while the others serve{downtime}: {need.message[:300]}"
        )

    async def converge_by_swap(
        self,
        pods: list[dict[str, Any]],
        running: list[dict[str, Any]],
        servers: dict[str, TritonServer],
        probes: dict[str, Probe],
        base: model_config_pb2.ModelConfig | None,
        target: Target,
        need: SwapNeed,
    ) -> Converged:
        """Steps a-c: one pod swapped per reconcile, only while every other pod serves. A server
        with nothing loaded (a new pod) has nothing to swap: it loads the target at once."""
        facts = {
            pod["metadata"]["uid"]: await self.converge_one(
                pod,
                servers[pod["metadata"]["uid"]],
                probes[pod["metadata"]["uid"]],
                base,
                target,
                not probes[pod["metadata"]["uid"]].versions,
            )
            for pod in running
        }
        behind = [pod for pod in running if not facts[pod["metadata"]["uid"]].serves(target.version)]
        notice: str | None = self.swap_notice(need, len(running))
        blocked = None
        # A pod already out of service (its gate closed by a swap an earlier process began) goes first.
        candidate = next(
            (pod for pod in behind if not facts[pod["metadata"]["uid"]].ready), behind[0] if behind else None
        )
        failed = self.memory.failed_loads.get(candidate["metadata"]["uid"]) if candidate else None
        if candidate is None:
            self.memory.swap = None
            self.events.normal("VersionSwapped", f"version {target.version} on every pod, swapped one pod at a time")
            notice = None
        elif len(running) <= 1 and not self.md.spec.rollout.allow_swap_downtime:
            blocked = (
                f"version {target.version} does not fit beside the loaded version in device memory "
                f"({need.message[:300]}); with one replica a pod-by-pod swap means downtime: set "
                "spec.rollout.allowSwapDowntime: true to allow it, or run 2 or more replicas"
            )
        elif not need.announced:
            # Said in status (and an Event) before anything is taken out of service.
            self.memory.swap = replace(need, announced=True)
            self.events.normal("SwapPending", self.swap_notice(need, len(running)))
        elif failed is not None and self.clock.monotonic() - failed.at < FAILED_LOAD_RETRY_SECONDS:
            uid = candidate["metadata"]["uid"]
            facts[uid] = replace(facts[uid], load_error=failed.message)  # the swap failed: retried later
        elif all(facts[pod["metadata"]["uid"]].ready for pod in running if pod is not candidate):
            uid = candidate["metadata"]["uid"]
            wanted = self.wanted_config(base, target.version)
            result = await self.swap(candidate, servers[uid], wanted, probes[uid], target.version)
            current = config_is_current(result.config, list(result.versions), wanted, target.version)
            facts[uid] = replace(
                facts[uid], ready_versions=result.versions, config_current=current, load_error=result.error
            )
            await self.open_gate(candidate, facts[uid])
        by_name = {f.name: f for f in facts.values()}
        return Converged(
            [by_name.get(pod["metadata"]["name"]) or pod_facts(pod) for pod in pods], None, notice, blocked
        )

    async def swap(
        self, pod: dict[str, Any], server: TritonServer, wanted: str | None, probe: Probe, target: int | None
    ) -> LoadResult:
        md = self.md
        name = pod["metadata"]["name"]
        old = [v for v in probe.versions if v != target]
        self.events.normal("SwappingVersion", f"{name}: version {old} -> {target}, out of service meanwhile")
        await self.set_gate(pod, "False", "SwappingVersion", f"swapping {md.model_name} version {old} -> {target}")
        try:
            await self.drained(pod, server)
            await server.unload(md.model_name)
            await self.unloaded(server)
            started = self.clock.monotonic()
            await server.load(md.model_name, wanted)
            self.memory.timed_load(name, target, "Swap", self.clock.monotonic() - started)
        except TritonError as error:
            message = str(error).strip()
            self.events.warning("LoadFailed", f"{name}: {message}; loading version(s) {old} back")
            if probe.config is not None:
                try:
                    await server.load(md.model_name, json.dumps(probe.config))
                except TritonError as again:
                    self.events.warning("LoadFailed", f"{name}: cannot load version(s) {old} back: {again}")
            try:
                still = tuple(await server.ready_versions(md.model_name))
            except TritonError:
                still = ()
            self.memory.failed_loads[pod["metadata"]["uid"]] = FailedLoad(
                wanted, message, self.clock.monotonic()
            )
            return LoadResult(still, probe.config if still else None, message)
        ready = await server.ready_versions(md.model_name)
        self.events.normal("VersionSwapped", f"{name}: serving version {target} (swapped: it did not fit beside {old})")
        return LoadResult(tuple(ready), await server.model_config(md.model_name))

    async def drained(self, pod: dict[str, Any], server: TritonServer) -> None:
        """Kubernetes shows the pod not Ready (load balancers drop it), and its queue is empty."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        deadline = self.clock.monotonic() + SWAP_DRAIN_TIMEOUT_SECONDS
        while self.clock.monotonic() < deadline:
            live = self.cache.get("Pod", namespace, name) or pod
            conditions = {c.get("type"): c.get("status") for c in live.get("status", {}).get("conditions") or []}
            if conditions.get("Ready") != "True":
                break
            await asyncio.sleep(SWAP_POLL_SECONDS)
        await asyncio.sleep(SWAP_GRACE_SECONDS)
        while self.clock.monotonic() < deadline and await server.pending_requests(self.md.model_name) > 0:
            await asyncio.sleep(SWAP_POLL_SECONDS)

    async def unloaded(self, server: TritonServer) -> None:
        """Every version fully unloaded (not UNLOADING): only then is its device memory free."""
        deadline = self.clock.monotonic() + SWAP_DRAIN_TIMEOUT_SECONDS
        while self.clock.monotonic() < deadline:
            states = await server.model_versions(self.md.model_name)
            if all(state.state not in ("READY", "LOADING", "UNLOADING") for state in states):
                return
            await asyncio.sleep(SWAP_POLL_SECONDS)

    async def probe(self, server: TritonServer) -> Probe:
        if not await server.is_live():
            return Probe(live=False)
        try:
            versions = await server.ready_versions(self.md.model_name)
            config = await server.model_config(self.md.model_name) if versions else None
        except TritonError:
            return Probe(live=False)
        return Probe(True, tuple(versions), config)

    def base_config(self, report: RepositoryReport, probes: Iterable[Probe]) -> model_config_pb2.ModelConfig | None:
        """The repository's config: read by the operator, else learned from a serving pod."""
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

    def wanted_config(self, base: model_config_pb2.ModelConfig | None, version: int | None) -> str | None:
        if base is None:
            return None
        md = self.md
        return to_json(effective_config(base, md.model_name, md.spec.model.config, [version] if version else None))

    async def converge_one(
        self,
        pod: dict[str, Any],
        server: TritonServer,
        probe: Probe,
        base: model_config_pb2.ModelConfig | None,
        target: Target,
        may_load: bool,
    ) -> PodFacts:
        facts = pod_facts(pod)
        if not probe.live:
            return facts
        in_place = self.md.spec.rollout.in_place
        # With Recreate/Rolling, old pods keep their version until the Deployment replaces them.
        managed = in_place or pod["metadata"].get("annotations", {}).get(ANNOTATION_ROLLOUT_HASH) == target.rollout_hash
        version = target.version_for(pod)
        wanted = self.wanted_config(base, version)
        result = LoadResult(probe.versions, probe.config)
        current = config_is_current(probe.config, list(probe.versions), wanted, version)
        # A canary's way back (its pods return to the stable version) is not blocked by the check of
        # the version under test: the stable one was verified when it rolled out.
        blocked = target.repository.blocks_load and version == target.version
        if managed and not current and may_load and not blocked:
            result = await self.load(pod, server, wanted, probe.versions, version, in_place)
            current = config_is_current(result.config, list(result.versions), wanted, version)
        facts = replace(
            facts,
            live=True,
            ready_versions=result.versions,
            config_current=current or (not managed and bool(result.versions)),
            load_error=result.error,
            awaiting_replacement=not managed,
            unreachable=result.unreachable,
        )
        if facts.serves(version if managed else None):
            await self.open_gate(pod, facts)
        return facts

    async def load(
        self,
        pod: dict[str, Any],
        server: TritonServer,
        wanted: str | None,
        versions: tuple[int, ...],
        target: int | None,
        in_place: bool,
    ) -> LoadResult:
        """Load the wanted config on one server (steps 4 and 5)."""
        md = self.md
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        failed = self.memory.failed_loads.get(uid)
        if failed and failed.config_json == wanted and self.clock.monotonic() - failed.at < FAILED_LOAD_RETRY_SECONDS:
            return LoadResult(versions, None, failed.message)
        started = self.clock.monotonic()
        mode = "Initial" if not versions else "SideBySide" if in_place and target not in (*versions, None) else "Reload"
        try:
            if wanted is None:
                # Nothing known about the repository's config: let Triton load it as-is, then
                # learn the config from Triton and reload exactly the target version.
                self.events.normal("Loading", f"{md.model_name} on {name} with the repository's config")
                await server.load(md.model_name, None)
                base = from_json(await server.model_config(md.model_name))
                self.memory.learned_config = base
                wanted = self.wanted_config(base, target)
            old = [v for v in versions if v != target]
            if in_place and old and target is not None and target not in versions and wanted is not None:
                # Zero downtime: serve old and new side by side, then retire the old one.
                both = effective_config(
                    from_json(json.loads(wanted)), md.model_name, md.spec.model.config, sorted({*old, target})
                )
                self.events.normal("LoadingVersion", f"version {target} on {name} beside {old}")
                try:
                    await server.load(md.model_name, to_json(both))
                except TritonError as error:
                    if isinstance(error, ServerUnreachable) or not OUT_OF_MEMORY.search(str(error)):
                        raise
                    # Does not fit twice: the old version still serves; switch pod by pod instead.
                    self.memory.swap = self.memory.swap or SwapNeed(target, str(error).strip())
                    self.events.warning(
                        "VersionDoesNotFitTwice",
                        f"{name}: version {target} does not fit beside {old} ({str(error).strip()[:300]}); "
                        "switching pod by pod",
                    )
                    return LoadResult(tuple(await server.ready_versions(md.model_name)), None)
                self.events.normal("RetiringVersion", f"version(s) {old} on {name}: {target} is ready")
            else:
                self.events.normal("LoadingVersion", f"version {target or 'latest'} of {md.model_name} on {name}")
            await server.load(md.model_name, wanted)
            self.memory.timed_load(name, target, mode, self.clock.monotonic() - started)
            self._forget_failure(uid)
            ready = await server.ready_versions(md.model_name)
            return LoadResult(tuple(ready), await server.model_config(md.model_name))
        except ServerUnreachable as error:
            # The pod is going away or its server restarting: nothing to blame on the model,
            # and the next reconcile (pod events, resync) finds it again or finds it gone.
            self.events.log.info("%s/%s: %s unreachable during load: %s", md.namespace, md.name, name, error)
            return LoadResult(versions, None, unreachable=True)
        except TritonError as error:
            message = str(error).strip()
            self.memory.failed_loads[uid] = FailedLoad(wanted, message, self.clock.monotonic())
            self.events.warning("LoadFailed", f"{name}: {message}")
            try:
                still = tuple(await server.ready_versions(md.model_name))
            except TritonError:
                still = versions
            return LoadResult(still, None, message)

    def _forget_failure(self, pod_uid: str) -> None:
        self.memory.failed_loads.pop(pod_uid, None)

    async def open_gate(self, pod: dict[str, Any], facts: PodFacts) -> None:
        """Step 6: the pod's readiness gate, so it gets traffic only once it serves the target."""
        live = self.cache.get("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"]) or pod
        conditions = {c.get("type"): c.get("status") for c in live.get("status", {}).get("conditions") or []}
        if conditions.get(MODEL_READY_GATE) == "True" or not facts.ready_versions:
            return
        versions = ",".join(map(str, facts.ready_versions))
        await self.set_gate(pod, "True", "ModelLoaded", f"serving {self.md.model_name} version(s) {versions}")

    async def set_gate(self, pod: dict[str, Any], status: str, reason: str, message: str) -> None:
        patched = await self.kube.patch_pod_condition(
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {
                "type": MODEL_READY_GATE,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(),
            },
        )
        if patched is not None:  # read-your-writes
            self.cache.store("Pod", {**patched, "kind": "Pod"})


def _pod_ip(pod: dict[str, Any]) -> str:
    return str(pod.get("status", {}).get("podIP") or "")


def config_is_current(loaded: dict[str, Any] | None, ready: list[int], wanted: str | None, target: int | None) -> bool:
    """The server serves exactly the target version, with the fields the operator sets as wanted.

    Versions come from the repository index: after a reload that only changes versions, Triton
    keeps reporting the previous version_policy in the model config."""
    if loaded is None:
        return False
    if ready != ([target] if target is not None else ready[-1:]) or not ready:
        return False
    if wanted is None:
        return True
    desired = json.loads(wanted)
    for key in ("max_batch_size", "dynamic_batching"):
        if key in desired and not is_subset(_numbers(desired[key]), _numbers(loaded.get(key))):
            return False
    wanted_counts = [g.get("count", 1) for g in desired.get("instance_group", [])]
    loaded_counts = [g.get("count", 1) for g in loaded.get("instance_group", [])]
    return not wanted_counts or wanted_counts == loaded_counts


def _numbers(value: Any) -> Any:
    """Triton prints int64 fields as strings in JSON; compare them as numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value
