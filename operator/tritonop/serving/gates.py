"""The pods' readiness gates (tritonop.dev/model-ready) and waiting for a pod taken out of
service: opening a gate (step 6), closing one for a swap (step a), waiting until the pod is not
Ready and its clients have moved (step b) and until its versions are unloaded (step c)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tritonop.clock import Clock, wall_stamp
from tritonop.informer import ObjectCache
from tritonop.k8s import PodConditions
from tritonop.names import MODEL_READY_GATE, PRESTOP_SLEEP_SECONDS
from tritonop.triton import TritonApi

SWAP_DRAIN_TIMEOUT_SECONDS = 120.0  # a swapping pod's queue and gate: at most this long
SWAP_GRACE_SECONDS = float(PRESTOP_SLEEP_SECONDS)  # after the pod shows not Ready: load balancers catch up
SWAP_POLL_SECONDS = 0.25
SWAP_QUIET_SECONDS = 2.0  # no request finished on a swapping pod for this long: its clients have moved

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Gates:
    """The readiness gates of one ModelDeployment's pods, and the waits of a swap."""

    kube: PodConditions
    cache: ObjectCache
    model: str
    clock: Clock
    sleep: Sleep = asyncio.sleep

    def conditions(self, pod: dict[str, Any]) -> dict[str, str | None]:
        """The pod's conditions as last seen (the cache holds this process's own writes too)."""
        live = self.cache.get("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"]) or pod
        return {c.get("type"): c.get("status") for c in live.get("status", {}).get("conditions") or []}

    async def open_gate(self, pod: dict[str, Any], versions: tuple[int, ...]) -> None:
        """Step 6: the pod gets traffic, once it serves (what it serves is the caller's to judge)."""
        if self.conditions(pod).get(MODEL_READY_GATE) == "True" or not versions:
            return
        await self.set_gate(
            pod, "True", "ModelLoaded", f"serving {self.model} version(s) {','.join(map(str, versions))}"
        )

    async def close_gate(self, pod: dict[str, Any], message: str) -> None:
        """Step a: load balancers stop sending the pod traffic (a swap takes it out of service)."""
        await self.set_gate(pod, "False", "SwappingVersion", message)

    async def set_gate(self, pod: dict[str, Any], status: str, reason: str, message: str) -> None:
        patched = await self.kube.patch_pod_condition(
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {
                "type": MODEL_READY_GATE,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": wall_stamp(self.clock),
            },
        )
        if patched is not None:  # read-your-writes
            self.cache.store("Pod", {**patched, "kind": "Pod"})

    async def drained(self, pod: dict[str, Any], server: TritonApi) -> None:
        """Step b: Kubernetes shows the pod not Ready (load balancers drop it), then the pod's
        clients have gone: nothing queued and no request finished for SWAP_QUIET_SECONDS. A
        Service drops a pod for new connections only; kept-alive connections (HTTP keep-alive,
        gRPC channels until their maximum age) go on sending to it until they reconnect. At
        most SWAP_DRAIN_TIMEOUT_SECONDS for all of it."""
        deadline = self.clock.monotonic() + SWAP_DRAIN_TIMEOUT_SECONDS
        while self.clock.monotonic() < deadline:
            if self.conditions(pod).get("Ready") != "True":
                break
            await self.sleep(SWAP_POLL_SECONDS)
        await self.sleep(SWAP_GRACE_SECONDS)
        finished, quiet_since = None, self.clock.monotonic()
        while self.clock.monotonic() < deadline:
            activity = await server.request_activity(self.model)
            if activity.finished != finished:
                finished, quiet_since = activity.finished, self.clock.monotonic()
            elif activity.pending == 0 and self.clock.monotonic() - quiet_since >= SWAP_QUIET_SECONDS:
                return
            await self.sleep(SWAP_POLL_SECONDS)

    async def unloaded(self, server: TritonApi) -> None:
        """Step c: every version fully unloaded (not UNLOADING): only then is its device memory free."""
        deadline = self.clock.monotonic() + SWAP_DRAIN_TIMEOUT_SECONDS
        while self.clock.monotonic() < deadline:
            states = await server.model_versions(self.model)
            if all(state.state not in ("READY", "LOADING", "UNLOADING") for state in states):
                return
            await self.sleep(SWAP_POLL_SECONDS)
