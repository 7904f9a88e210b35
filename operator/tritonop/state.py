"""Everything the operator process holds, in one object kept in kopf's memo (clients, settings,
the clock, the informer cache, the per-object memory), and the one path that releases what it
remembers about a ModelDeployment that is gone."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tritonop.autoscale.runner import Autoscalers, tracked_pods
from tritonop.autoscale.runner import forget_metrics as forget_autoscaler_metrics
from tritonop.canary.runner import forget_metrics as forget_canary_metrics
from tritonop.clock import Clock, SystemClock
from tritonop.informer import ObjectCache
from tritonop.k8s import KubeApi
from tritonop.memory import Key, Memory
from tritonop.repository.manifests import ManifestCache
from tritonop.serving.startup import forget_metrics as forget_startup_metrics
from tritonop.settings import Settings
from tritonop.staging import forget_metrics as forget_staging_metrics
from tritonop.triton import TritonApi, TritonServer

READY = Gauge(
    "tritonop_modeldeployment_ready", "1 when the ModelDeployment's Ready condition is True.", ["namespace", "name"]
)


@dataclass
class OperatorState:
    kube: KubeApi
    # The one Triton client: a server at (pod IP, control key). Unit tests pass in-memory fakes.
    triton: Callable[[str, str], TritonApi] = TritonServer
    settings: Settings = field(default_factory=Settings)
    cache: ObjectCache = field(default_factory=ObjectCache)
    clock: Clock = field(default_factory=SystemClock)
    memory: Memory = field(default_factory=Memory)  # one record per ModelDeployment, by uid
    autoscalers: Autoscalers = field(default_factory=Autoscalers)  # cadence and policy (state: in memory)
    # Verified versions, by file identity: shared by every object that serves the same files.
    manifests: ManifestCache = field(default_factory=ManifestCache)

    @classmethod
    def from_settings(cls, settings: Settings, kube: KubeApi, clock: Clock | None = None) -> OperatorState:
        clock = clock or SystemClock()
        return cls(
            kube=kube,
            settings=settings,
            clock=clock,
            autoscalers=Autoscalers(settings.autoscale_period_seconds, settings.autoscale_report_seconds, clock),
        )

    async def release(self, key: Key, uid: str | None) -> None:
        """Forget a deleted ModelDeployment (deleted itself, or with its namespace): its record
        (closing the autoscaler's HTTP session), its claims on verified manifests no other one
        uses, and its metric series."""
        uid = uid or self.memory.uid_of(key)
        record = self.memory.pop(uid, None) if uid else None
        if record is not None:
            await record.close()
        if uid:
            self.manifests.forget(uid)
        forget_autoscaler_metrics(*key)
        forget_canary_metrics(*key)
        forget_startup_metrics(*key)
        forget_staging_metrics(*key)
        with contextlib.suppress(KeyError):
            READY.remove(*key)

    async def close(self) -> None:
        """At shutdown: close every record's sessions."""
        for record in self.memory.values():
            await record.close()

    def entries(self) -> dict[str, int]:
        """Sizes of what is remembered per object (the soak benchmark watches them return to empty)."""
        records = list(self.memory.values())
        sizes = {
            "objects": len(records),
            "control_keys": sum(r.owned.control_key is not None for r in records),
            "apply_refusals": sum(len(r.owned.refusals) for r in records),
            "learned_configs": sum(r.serving.learned_config is not None for r in records),
            "failed_loads": sum(len(r.serving.failed_loads) for r in records),
            "pod_starts": sum(len(r.serving.starts) for r in records),
            "autoscalers": sum(r.autoscaler is not None for r in records),
            "autoscaler_pod_samples": sum(tracked_pods(r.autoscaler) for r in records),
            "verified_manifests": len(self.manifests),
            "settled": sum(r.settled is not None for r in records),
            "carried": sum(r.carried is not None for r in records),
            "canary_windows": sum(r.canary.window is not None for r in records),
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
