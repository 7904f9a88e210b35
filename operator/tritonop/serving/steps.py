"""The steps on one pod's server, as plan() or next_swap_step() chose them: load beside (4 and 5,
one load request), or load alone; swap (a-c) and load back. What happens is told (Events) and
remembered (the timed load, the pod's failure, a swap that is needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tritonop.api.spec import ModelDeployment
from tritonop.clock import Clock, wall_stamp
from tritonop.events import EventRecorder
from tritonop.render.model_config import from_json
from tritonop.serving.gates import Gates
from tritonop.serving.memory import FailedLoad, ServingMemory, SwapNeed
from tritonop.serving.plan import Action, Kind, LoadResult, Probe, does_not_fit, wanted_config
from tritonop.triton import ServerUnreachable, TritonApi, TritonError


@dataclass
class PodSteps:
    """One pod's server, for the steps of one reconcile."""

    pod: dict[str, Any]
    server: TritonApi
    md: ModelDeployment
    memory: ServingMemory
    events: EventRecorder
    clock: Clock
    gates: Gates

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def model(self) -> str:
        return self.md.model_name

    async def load(self, action: Action, probe: Probe, wanted: str | None, version: int | None) -> LoadResult:
        """A load plan() chose: steps 4 and 5, or the wanted config alone (a new server, a config
        change, a retire, Recreate/Rolling). One load request either way. A failure is
        remembered for this pod; a server that does not answer is nobody's failure."""
        started = self.clock.monotonic()
        try:
            if wanted is None:  # plan(): learn_first
                wanted = await self.learn_config(version)
            if action.kind is Kind.LOAD_BESIDE and version is not None:
                if not await self.load_beside(wanted, action.old, version):
                    return LoadResult(tuple(await self.server.ready_versions(self.model)), None)
            else:
                if action.kind is Kind.RETIRE:
                    self.events.normal("RetiringVersion", f"version(s) {list(action.old)} on {self.name}")
                else:
                    latest = version or "latest"
                    self.events.normal("LoadingVersion", f"version {latest} of {self.model} on {self.name}")
                await self.server.load(self.model, wanted)
            self.timed(version, action.mode, self.clock.monotonic() - started)
            self.memory.failed_loads.pop(self.pod["metadata"]["uid"], None)
            ready = await self.server.ready_versions(self.model)
            return LoadResult(tuple(ready), await self.server.model_config(self.model))
        except ServerUnreachable as error:
            # The pod is going away or its server restarting: nothing to blame on the model,
            # and the next reconcile (pod events, resync) finds it again or finds it gone.
            md = self.md
            self.events.log.info("%s/%s: %s unreachable during load: %s", md.namespace, md.name, self.name, error)
            return LoadResult(probe.versions, None, unreachable=True)
        except TritonError as error:
            message = str(error).strip()
            self.remember_failure(wanted, message)
            self.events.warning("LoadFailed", f"{self.name}: {message}")
            try:
                still = tuple(await self.server.ready_versions(self.model))
            except TritonError:
                still = probe.versions
            return LoadResult(still, None, message)

    def timed(self, version: int | None, mode: str, seconds: float) -> None:
        """A load that succeeded, timed: status.lastLoad, and a new pod's start (serving/startup.py)."""
        self.memory.timed_load(self.name, self.pod["metadata"]["uid"], version, mode, seconds, wall_stamp(self.clock))

    async def learn_config(self, version: int | None) -> str:
        """Step 2 with nothing known of the repository's config: Triton loads it as-is, the
        operator learns it from Triton and reloads exactly the target version."""
        self.events.normal("Loading", f"{self.model} on {self.name} with the repository's config")
        await self.server.load(self.model, None)
        base = from_json(await self.server.model_config(self.model))
        self.memory.learned_config = base
        return wanted_config(base, self.md, version)

    async def load_beside(self, wanted: str, old: tuple[int, ...], version: int) -> bool:
        """Steps 4 and 5 in one load request: the wanted config (the target only). Triton loads the
        target while the old versions keep answering, and once it is READY unloads them after their
        in-flight requests. The old versions are not in the request, so Triton never reloads them,
        and the target is loaded once: two copies in device memory at most. False: the target does
        not fit beside them (they still serve); the switch goes pod by pod."""
        self.events.normal("LoadingVersion", f"version {version} on {self.name} beside {list(old)}")
        try:
            await self.server.load(self.model, wanted)
        except TritonError as error:
            if not does_not_fit(error):
                raise
            self.memory.swap = self.memory.swap or SwapNeed(version, str(error).strip())
            self.events.warning(
                "VersionDoesNotFitTwice",
                f"{self.name}: version {version} does not fit beside {list(old)} ({str(error).strip()[:300]}); "
                "switching pod by pod",
            )
            return False
        self.events.normal("RetiringVersion", f"version(s) {list(old)} on {self.name}: {version} is ready")
        return True

    async def swap(self, wanted: str | None, probe: Probe, version: int | None) -> LoadResult:
        """Steps a-c: out of service (gate closed), drained, old versions unloaded, the target
        loaded alone. The caller reopens the gate (step 6) whatever the pod serves then."""
        old = [v for v in probe.versions if v != version]
        self.events.normal("SwappingVersion", f"{self.name}: version {old} -> {version}, out of service meanwhile")
        await self.gates.close_gate(self.pod, f"swapping {self.model} version {old} -> {version}")
        try:
            await self.gates.drained(self.pod, self.server)
            await self.server.unload(self.model)
            await self.gates.unloaded(self.server)
            started = self.clock.monotonic()
            await self.server.load(self.model, wanted)
            self.timed(version, "Swap", self.clock.monotonic() - started)
        except TritonError as error:
            return await self.load_back(probe, old, wanted, str(error).strip())
        ready = await self.server.ready_versions(self.model)
        self.events.normal(
            "VersionSwapped", f"{self.name}: serving version {version} (swapped: it did not fit beside {old})"
        )
        return LoadResult(tuple(ready), await self.server.model_config(self.model))

    async def load_back(self, probe: Probe, old: list[int], wanted: str | None, message: str) -> LoadResult:
        """Step c failed: the config the pod served before, so it serves what it served."""
        self.events.warning("LoadFailed", f"{self.name}: {message}; loading version(s) {old} back")
        if probe.config is not None:
            try:
                await self.server.load(self.model, json.dumps(probe.config))
            except TritonError as again:
                self.events.warning("LoadFailed", f"{self.name}: cannot load version(s) {old} back: {again}")
        try:
            still = tuple(await self.server.ready_versions(self.model))
        except TritonError:
            still = ()
        self.remember_failure(wanted, message)
        return LoadResult(still, probe.config if still else None, message)

    def remember_failure(self, wanted: str | None, message: str) -> None:
        """Retried after FAILED_LOAD_RETRY_SECONDS, or at once with another config."""
        self.memory.failed_loads[self.pod["metadata"]["uid"]] = FailedLoad(wanted, message, self.clock.monotonic())
