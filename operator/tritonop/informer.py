"""The owned objects as the operator last saw them: an informer's store, fed by kopf's watches.

A reconcile reads its Deployment, Service, PodDisruptionBudget and pods from here instead of
asking the API server each time (a few GETs and a LIST per reconcile, several reconciles per
object, add up at hundreds of ModelDeployments). The store is trusted for a kind only once a
LIST has primed it at startup; until then, and for other kinds, reads go to the API. The LIST is
repeated periodically (relist) to drop deletions a watch gap hid.

Freshness: watch events replace what is stored, and so does every object the operator writes
itself (the apply response), whichever is newer by resourceVersion, so a reconcile that follows
its own write sees that write even before the watch event arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from tritonop.k8s import RESOURCES, KubeApi, resource_version

LOG = logging.getLogger("tritonop.informer")
CACHED_KINDS = ("Deployment", "Service", "PodDisruptionBudget", "Pod")
# Every select() of a reconcile names its ModelDeployment's instance label: index by it.
INDEX_LABEL = "app.kubernetes.io/instance"
Key = tuple[str, str]  # (namespace, name)


def _index_key(key: Key, obj: dict[str, Any]) -> tuple[str, str | None]:
    return (key[0], (obj.get("metadata", {}).get("labels") or {}).get(INDEX_LABEL))


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", ""), meta.get("name", ""))


class ObjectCache:
    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {kind: {} for kind in CACHED_KINDS}
        self.primed: set[str] = set()
        # kind -> (namespace, instance label value or None) -> keys: select() looks at the few
        # objects that can match, not at every object.
        self._index: dict[str, dict[tuple[str, str | None], set[Key]]] = {kind: {} for kind in CACHED_KINDS}
        # kind -> index slot -> a number that changes whenever an object of that slot is stored or
        # dropped (from one process-wide counter, so a slot that empties and refills never repeats
        # a number): "are these still the same pods?" without selecting them again.
        self._revisions: dict[str, dict[tuple[str, str | None], int]] = {kind: {} for kind in CACHED_KINDS}
        self._counter = itertools.count(1)
        # Deletions seen while a LIST is in flight (key -> resourceVersion at deletion): the LIST's
        # older answer must not bring them back.
        self._tombstones: dict[str, dict[Key, int]] = {}

    def trusted(self, kind: str) -> bool:
        return kind in self.primed

    def store(self, kind: str, obj: dict[str, Any]) -> None:
        """An object seen in a watch event or returned by a write; an older copy never wins."""
        meta = obj.get("metadata", {})
        if "managedFields" in meta:  # never read by the operator, and the bulk of a small object
            obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        key = _key(obj)
        known = self.objects[kind].get(key)
        if known is not None:
            new, old = resource_version(obj), resource_version(known)
            if new is not None and old is not None and new < old:
                return
        if known is not None:
            self._unindex(kind, key, known)
        self.objects[kind][key] = obj
        slot = _index_key(key, obj)
        self._index[kind].setdefault(slot, set()).add(key)
        self._revisions[kind][slot] = next(self._counter)

    def _unindex(self, kind: str, key: Key, obj: dict[str, Any]) -> None:
        slot = _index_key(key, obj)
        keys = self._index[kind].get(slot)
        if keys is not None:
            keys.discard(key)
            if keys:
                self._revisions[kind][slot] = next(self._counter)
            else:
                del self._index[kind][slot]
                self._revisions[kind].pop(slot, None)

    def revision(self, kind: str, namespace: str, instance: str) -> int:
        """Changes whenever an object of `kind` labelled with this instance is stored or dropped
        (0: none is stored)."""
        return self._revisions[kind].get((namespace, instance), 0)

    def _drop(self, kind: str, key: Key) -> None:
        obj = self.objects[kind].pop(key, None)
        if obj is not None:
            self._unindex(kind, key, obj)

    def remove(self, kind: str, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self._drop(kind, key)
        if kind in self._tombstones:
            self._tombstones[kind][key] = resource_version(obj) or 0

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects[kind].get((namespace, name))

    def select(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        stored, index = self.objects[kind], self._index[kind]
        if INDEX_LABEL in labels:
            keys = index.get((namespace, labels[INDEX_LABEL]), set())
        else:
            keys = set().union(*(found for (ns, _), found in index.items() if ns == namespace))
        found = (stored[key] for key in sorted(keys))
        return [
            obj for obj in found if all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    async def relist(self, kube: KubeApi, label_selector: str) -> None:
        """One LIST per kind, merged by resourceVersion: what the LIST lacks and is not newer than
        it was deleted (a watch can miss a deletion across an API server or etcd restart)."""

        async def one(kind: str) -> None:
            self._tombstones[kind] = {}
            try:
                items, list_version = await kube.list_snapshot(kind, None, label_selector)
            finally:
                tombstones = self._tombstones.pop(kind)
            if list_version is None:
                return  # resourceVersions that are not numbers: no safe merge, keep asking the API
            listed: dict[Key, dict[str, Any]] = {}
            for item in items:
                key = _key(item)
                if tombstones.get(key, -1) < (resource_version(item) or 0):
                    # A LIST's items carry no apiVersion/kind; watch events and writes do, and
                    # comparisons with rendered objects need them.
                    item.setdefault("apiVersion", RESOURCES[kind][0])
                    item.setdefault("kind", kind)
                    listed[key] = item
            stored = self.objects[kind]
            for key, obj in list(stored.items()):
                if key not in listed and (resource_version(obj) or 0) <= list_version:
                    self._drop(kind, key)
            for item in listed.values():
                self.store(kind, item)
            self.primed.add(kind)

        results = await asyncio.gather(*(one(kind) for kind in CACHED_KINDS), return_exceptions=True)
        for kind, result in zip(CACHED_KINDS, results, strict=True):
            if isinstance(result, Exception):
                LOG.warning("cannot list %s for the cache (reads go to the API): %s", kind, result)

    async def keep_fresh(self, kube: KubeApi, label_selector: str, period: float) -> None:
        while True:
            await self.relist(kube, label_selector)
            await asyncio.sleep(period)
