"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Several operator processes may run at once (a hot standby, or old and new pods during a rolling
upgrade). All of them watch, so a standby's view is warm; only the holder of the Lease
reconciles. The rules, client-go's:

- A Lease is free when it has no holder, or when its record has not changed for
  leaseDurationSeconds *as observed by this process's own clock* (no trust in other clocks).
- Every write is a PUT with the resourceVersion read before it: of two candidates, the API
  server lets exactly one win (409 for the other).
- The leader renews every retry period; if it cannot renew for renew_deadline (shorter than the
  lease duration), it stops leading before anyone else may take over.
- On a clean shutdown the leader releases the Lease (holder cleared), so an upgrade hands over
  in about one retry period instead of a whole lease duration.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from tritonop.clock import micro_time
from tritonop.k8s import KubeApi, KubeError

LOG = logging.getLogger("tritonop.leader")
LEADING = Gauge("tritonop_leader", "1 while this process holds the leader Lease (reconciles), 0 on standby.")
TRANSITIONS = Counter("tritonop_leader_transitions_total", "Times this process started or stopped leading.", ["to"])


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str = "tritonop-leader"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs retry period < renew deadline < lease duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


def default_identity() -> str:
    """The pod name (the hostname in a pod) plus a random part: two processes never share one."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        kube: KubeApi,
        config: ElectionConfig,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
    ) -> None:
        self.kube = kube
        self.config = config
        self.identity = config.identity or default_identity()
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.leading = False
        self.observed_spec: dict[str, Any] | None = None
        self.observed_at = 0.0  # monotonic time the observed record last changed
        self.last_renew = 0.0
        LEADING.set(0)

    @property
    def holder(self) -> str | None:
        return (self.observed_spec or {}).get("holderIdentity") or None

    async def run(self) -> None:
        """Campaign, lead, and campaign again after losing the Lease, until cancelled."""
        config = self.config
        LOG.info("leader election: %s campaigning for lease %s/%s", self.identity, config.namespace, config.name)
        waiting_for: str | None = None
        while True:
            try:
                # One attempt may not outlast the renew deadline (a hung request must not keep
                # a leader that can no longer prove it is one).
                held = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=config.renew_deadline / 2)
            except (TimeoutError, KubeError, OSError) as error:
                LOG.warning("leader election: cannot read or write the lease: %s", error)
                held = False
            now = time.monotonic()
            if held:
                self.last_renew = now
                if not self.leading:
                    self._start_leading()
            elif self.leading and self.holder not in (None, self.identity):
                self._stop_leading(f"{self.holder} holds the lease now")
            elif self.leading and now - self.last_renew >= config.renew_deadline:
                self._stop_leading(f"could not renew for {config.renew_deadline:.0f}s")
            if not self.leading and self.holder and self.holder != waiting_for:
                waiting_for = self.holder
                LOG.info("leader election: standing by; %s holds the lease", waiting_for)
            await asyncio.sleep(config.retry_period)

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at its next retry."""
        if not self.leading:
            return
        self._stop_leading("shutting down")
        try:
            lease = await self.kube.get("Lease", self.config.namespace, self.config.name)
            if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(),
            }
            await self.kube.replace(lease)
            LOG.info("leader election: released lease %s/%s", self.config.namespace, self.config.name)
        except (TimeoutError, KubeError, OSError) as error:
            LOG.warning("leader election: could not release the lease (it will expire): %s", error)

    async def try_acquire_or_renew(self) -> bool:
        config = self.config
        now = datetime.datetime.now(datetime.UTC)
        wanted_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(config.lease_duration)),
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": 0,
        }
        lease = await self.kube.get("Lease", config.namespace, config.name)
        if lease is None:
            await self.kube.create(
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": config.name, "namespace": config.namespace},
                    "spec": wanted_spec,
                }
            )
            self._observe(wanted_spec)
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or None
        duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
        if holder and holder != self.identity and time.monotonic() - self.observed_at < duration:
            return False  # held by someone else, and we have seen it renewed recently
        if holder == self.identity:
            wanted_spec["acquireTime"] = spec.get("acquireTime") or wanted_spec["acquireTime"]
            wanted_spec["leaseTransitions"] = spec.get("leaseTransitions") or 0
        else:
            wanted_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = wanted_spec
        try:
            await self.kube.replace(lease)  # carries the resourceVersion we read: one winner
        except KubeError as error:
            if error.status == 409:
                return False
            raise
        self._observe(wanted_spec)
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        if self.observed_spec is None or _record(spec) != _record(self.observed_spec):
            self.observed_spec = spec
            self.observed_at = time.monotonic()

    def _start_leading(self) -> None:
        self.leading = True
        LEADING.set(1)
        TRANSITIONS.labels("leader").inc()
        LOG.info("leader election: %s became the leader", self.identity)
        self.on_started_leading()

    def _stop_leading(self, why: str) -> None:
        self.leading = False
        LEADING.set(0)
        TRANSITIONS.labels("standby").inc()
        LOG.warning("leader election: %s stopped leading: %s", self.identity, why)
        self.on_stopped_leading()


def _record(spec: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
