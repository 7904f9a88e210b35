"""The owned-object store: newer copies win, and a relist notices deletions a watch missed.

The relist's API answers come from a small in-memory stand-in for KubeClient.list_snapshot
(the merge rules are what is tested here; test_chaos restarts a real API server and etcd)."""

from __future__ import annotations

import asyncio
from typing import Any

from tritonop.informer import CACHED_KINDS, ObjectCache


def obj(name: str, version: int, namespace: str = "ns", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version), "labels": labels},
    }


class Lister:
    """Answers list_snapshot from fixed items; `during` runs while the LIST is "in flight"."""

    def __init__(self, items: dict[str, list[dict[str, Any]]], version: int, during: Any = None) -> None:
        self.items, self.version, self.during = items, version, during

    async def list_snapshot(self, kind: str, namespace: str | None, selector: str | None) -> Any:
        if self.during is not None:
            self.during(kind)
        return self.items.get(kind, []), self.version


def relist(cache: ObjectCache, lister: Lister) -> None:
    asyncio.run(cache.relist(lister, "app.kubernetes.io/managed-by=tritonop"))  # type: ignore[arg-type]


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    cache = ObjectCache()
    cache.store("Deployment", obj("a", 7))
    cache.store("Deployment", obj("a", 5))  # a late watch event after our own write's answer
    assert cache.get("Deployment", "ns", "a") == obj("a", 7)
    cache.store("Deployment", obj("a", 9))
    assert cache.get("Deployment", "ns", "a") == obj("a", 9)


def test_untrusted_until_a_list_primed_it() -> None:
    cache = ObjectCache()
    cache.store("Deployment", obj("a", 3))
    assert not cache.trusted("Deployment")
    relist(cache, Lister({"Deployment": [obj("a", 3)]}, 10))
    assert all(cache.trusted(kind) for kind in CACHED_KINDS)


def test_relist_drops_what_was_deleted_unseen_and_keeps_what_is_newer_than_the_list() -> None:
    cache = ObjectCache()
    cache.store("Deployment", obj("deleted-during-a-watch-gap", 4))
    cache.store("Deployment", obj("created-after-the-list", 12))
    relist(cache, Lister({"Deployment": [obj("kept", 8)]}, 10))
    assert set(cache.objects["Deployment"]) == {("ns", "kept"), ("ns", "created-after-the-list")}
    # LIST items come without apiVersion/kind; stored, they compare like watched objects.
    kept = cache.get("Deployment", "ns", "kept")
    assert kept is not None and (kept["apiVersion"], kept["kind"]) == ("apps/v1", "Deployment")


def test_a_deletion_seen_while_listing_is_not_revived_by_the_list() -> None:
    cache = ObjectCache()
    cache.store("Pod", obj("p", 4))
    relist(cache, Lister({"Pod": [obj("p", 4)]}, 10, during=lambda kind: cache.remove(kind, obj("p", 11))))
    assert cache.get("Pod", "ns", "p") is None


def test_select_by_namespace_and_labels() -> None:
    cache = ObjectCache()
    cache.store("Pod", obj("a", 1, instance="x"))
    cache.store("Pod", obj("b", 1, instance="y"))
    cache.store("Pod", obj("c", 1, namespace="other", instance="x"))
    assert [p["metadata"]["name"] for p in cache.select("Pod", "ns", {"instance": "x"})] == ["a"]


def test_managed_fields_are_not_kept() -> None:
    cache = ObjectCache()
    stored = obj("a", 1)
    stored["metadata"]["managedFields"] = [{"manager": "tritonop", "fieldsV1": {"f:spec": {}}}]
    cache.store("Service", stored)
    assert "managedFields" not in cache.get("Service", "ns", "a")["metadata"]
    assert "managedFields" in stored["metadata"], "the caller's object is left as it was"


def test_select_finds_by_labels_through_the_index_as_objects_come_change_and_go() -> None:
    cache = ObjectCache()

    def pod(name: str, instance: str | None, rv: int, namespace: str = "ns") -> dict[str, Any]:
        labels = {"app": "x", **({"app.kubernetes.io/instance": instance} if instance else {})}
        return {"metadata": {"namespace": namespace, "name": name, "labels": labels, "resourceVersion": str(rv)}}

    for item in (pod("a-1", "a", 1), pod("a-2", "a", 2), pod("b-1", "b", 3), pod("a-1", "a", 4, "other")):
        cache.store("Pod", item)
    names = lambda found: [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in found]  # noqa: E731
    assert names(cache.select("Pod", "ns", {"app.kubernetes.io/instance": "a"})) == [("ns", "a-1"), ("ns", "a-2")]
    assert names(cache.select("Pod", "ns", {"app": "x"})) == [("ns", "a-1"), ("ns", "a-2"), ("ns", "b-1")]
    cache.store("Pod", pod("a-2", "b", 5))  # relabelled: it moves to b
    assert names(cache.select("Pod", "ns", {"app.kubernetes.io/instance": "b"})) == [("ns", "a-2"), ("ns", "b-1")]
    cache.remove("Pod", pod("a-1", "a", 6))
    assert cache.select("Pod", "ns", {"app.kubernetes.io/instance": "a"}) == []
    assert names(cache.select("Pod", "other", {"app.kubernetes.io/instance": "a"})) == [("other", "a-1")]


def test_revision_moves_with_every_change_to_an_instances_objects_and_never_repeats() -> None:
    cache = ObjectCache()
    instance = "app.kubernetes.io/instance"
    seen = [cache.revision("Pod", "ns", "a")]
    assert seen == [0]  # nothing stored
    cache.store("Pod", obj("a-1", 1, **{instance: "a"}))
    seen.append(cache.revision("Pod", "ns", "a"))
    cache.store("Pod", obj("b-1", 2, **{instance: "b"}))  # another instance: a's pods are the same
    assert cache.revision("Pod", "ns", "a") == seen[-1]
    cache.store("Pod", obj("a-1", 1, **{instance: "a"}))  # older or equal copy of a-1 offered again
    seen.append(cache.revision("Pod", "ns", "a"))
    cache.store("Pod", obj("a-1", 3, **{instance: "a"}))  # a-1 changed (status, readiness)
    seen.append(cache.revision("Pod", "ns", "a"))
    cache.store("Pod", obj("a-2", 4, **{instance: "a"}))  # a pod came
    seen.append(cache.revision("Pod", "ns", "a"))
    cache.remove("Pod", obj("a-2", 5))  # and went
    seen.append(cache.revision("Pod", "ns", "a"))
    cache.store("Pod", obj("a-1", 6, **{instance: "b"}))  # relabelled away: a has none
    seen.append(cache.revision("Pod", "ns", "a"))
    assert seen[-1] == 0
    cache.store("Pod", obj("a-3", 7, **{instance: "a"}))  # a refills: a number never seen before
    seen.append(cache.revision("Pod", "ns", "a"))
    changes = seen[2:]
    assert len(set(changes)) == len(changes), seen
    assert cache.revision("Pod", "other", "a") == 0 and cache.revision("Deployment", "ns", "a") == 0
    cache.store("Pod", obj("a-3", 6, **{instance: "a"}))  # older than what is stored: ignored
    assert cache.revision("Pod", "ns", "a") == seen[-1]
