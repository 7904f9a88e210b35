"""Everything the operator process remembers, in one object kept in kopf's memo, and the one
path that releases what it remembers about a ModelDeployment that is gone."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tritonop.api.spec import ModelDeployment
from tritonop.autoscale.runner import Autoscalers, Scaling
from tritonop.cache import ObjectCache
from tritonop.events import Event
from tritonop.k8s import KubeClient
from tritonop.owned import Observed, OwnedMemory
from tritonop.repository.local import ManifestCache
from tritonop.rollout import RolloutMemory, forget_metrics
from tritonop.serving import ServingMemory
from tritonop.settings import Settings

Key = tuple[str, str]  # (namespace, name)
READY = Gauge(
    "tritonop_modeldeployment_ready", "1 when the ModelDeployment's Ready condition is True.", ["namespace", "name"]
)


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
class OperatorState:
    kube: KubeClient
    settings: Settings = field(default_factory=Settings)
    cache: ObjectCache = field(default_factory=ObjectCache)
    owned: OwnedMemory = field(default_factory=OwnedMemory)
    serving: ServingMemory = field(default_factory=ServingMemory)
    autoscalers: Autoscalers = field(default_factory=Autoscalers)
    manifests: ManifestCache = field(default_factory=ManifestCache)  # verified versions, by file identity
    settled: dict[str, Settled] = field(default_factory=dict)  # md uid -> its last quiet full reconcile
    carried: dict[str, Carried] = field(default_factory=dict)  # md uid -> a light evaluation's handover
    rollouts: RolloutMemory = field(default_factory=RolloutMemory)  # canary analysis windows

    @classmethod
    def from_settings(cls, settings: Settings, kube: KubeClient) -> OperatorState:
        return cls(
            kube=kube,
            settings=settings,
            autoscalers=Autoscalers(settings.autoscale_period_seconds, settings.autoscale_report_seconds),
        )

    async def release(self, key: Key, uid: str | None) -> None:
        """Forget a deleted ModelDeployment (deleted itself, or with its namespace): its control
        key, learned config, failed loads, apply refusals, verified manifests no other one uses,
        autoscaler (and its HTTP session) and its metric series."""
        if uid:
            self.owned.forget(uid)
            self.serving.forget(uid)
            self.manifests.forget(uid)
            self.settled.pop(uid, None)
            self.carried.pop(uid, None)
            self.rollouts.forget(uid)
        await self.autoscalers.forget(key)
        forget_metrics(*key)
        with contextlib.suppress(KeyError):
            READY.remove(*key)

    def entries(self) -> dict[str, int]:
        """Sizes of every per-object map (the soak benchmark watches them return to empty)."""
        sizes = {
            "control_keys": len(self.owned.control_keys),
            "apply_refusals": len(self.owned.refusals),
            "learned_configs": len(self.serving.learned_configs),
            "failed_loads": sum(len(f) for f in self.serving.failed_loads.values()),
            "autoscalers": len(self.autoscalers.states),
            "autoscaler_pod_samples": self.autoscalers.tracked_pods(),
            "verified_manifests": len(self.manifests),
            "settled": len(self.settled),
            "carried": len(self.carried),
            "canary_windows": len(self.rollouts.windows),
        }
        for kind, objects in self.cache.objects.items():
            sizes[f"cache_{kind}"] = len(objects)
        return sizes


class EntriesCollector(Collector):
    """tritonop_state_entries{map}: the sizes, read at scrape time."""

    def __init__(self, *sources: Callable[[], dict[str, int]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tritonop_state_entries", "Entries in the operator's in-process maps, by map.", labels=["map"]
        )
        for source in self.sources:
            for name, size in source().items():
                family.add_metric([name], size)
        yield family
