"""What the operator process remembers about each ModelDeployment: one record per object (by
uid), made of the owning modules' own parts, so releasing an object is one pop plus closing what
its record holds (kopf's inventory style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonop.api.spec import ModelDeployment
from tritonop.autoscale.runner import AutoscalerState, Scaling
from tritonop.canary.runner import RolloutMemory
from tritonop.events import Event
from tritonop.owned import Observed, OwnedMemory
from tritonop.serving import ServingMemory
from tritonop.staging import NodeList

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Settled:
    """A full reconcile that left nothing converging: what it read, and the replicas it set."""

    fingerprint: tuple[str, ...]  # resourceVersions of the object, its owned objects and pods
    replicas: int
    at: float  # monotonic
    # The object as that reconcile left it (its spec, and the status it wrote): while the
    # resourceVersion stays, the next evaluations need not parse the body again.
    md: ModelDeployment
    observed: Observed  # what it read (its pods are reused while the cache shows no change)


@dataclass(frozen=True)
class Carried:
    """A light evaluation that found more to do: its decision and events, for the full reconcile
    that follows (the autoscaler evaluated already; its Scaled event must not be lost)."""

    scaling: Scaling
    events: tuple[Event, ...]


@dataclass
class ObjectMemory:
    """Everything remembered about one ModelDeployment."""

    key: Key
    owned: OwnedMemory = field(default_factory=OwnedMemory)  # its control key, apply refusals
    serving: ServingMemory = field(default_factory=ServingMemory)  # learned config, failed loads, swap
    canary: RolloutMemory = field(default_factory=RolloutMemory)  # the analysis window
    autoscaler: AutoscalerState | None = None  # its reader (an HTTP session) and what it learned
    settled: Settled | None = None  # its last quiet full reconcile
    carried: Carried | None = None  # a light evaluation's handover to the full reconcile
    eligible_nodes: NodeList | None = None  # cache.nodes EligibleNodes: the nodes last listed

    async def close(self) -> None:
        """Release what the record holds beyond memory (the autoscaler's HTTP session, loads
        still under way)."""
        self.serving.cancel_loads()
        autoscaler, self.autoscaler = self.autoscaler, None
        if autoscaler is not None:
            await autoscaler.reader.close()


class Memory(dict[str, ObjectMemory]):
    """Every ModelDeployment's record, by uid."""

    def of(self, md: ModelDeployment) -> ObjectMemory:
        record = self.get(md.uid)
        if record is None:
            record = self[md.uid] = ObjectMemory((md.namespace, md.name))
        return record

    def uid_of(self, key: Key) -> str | None:
        return next((uid for uid, record in self.items() if record.key == key), None)
