"""The objects a ModelDeployment owns: read them, apply what differs, notice hand edits.

Reads come from the watch-fed cache once it is primed (see informer.py), else from the API.
Applies are server-side, under the operator's field manager, and only when live differs from
desired or from what was last applied (an applied-hash annotation catches a field that was
dropped from desired). The API server refusing an object (a spec that passed admission but not
the Deployment's own validation, say) is reported, not retried in a loop: the refusal is
remembered until the desired object changes, and what runs keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from tritonop.api.spec import ModelDeployment
from tritonop.events import EventRecorder
from tritonop.informer import ObjectCache
from tritonop.k8s import KubeApi, KubeError
from tritonop.names import CONTROL_KEY_SECRET_KEY
from tritonop.render.objects import control_key_secret_name, render_control_key_secret, selector_labels, selector_string

APPLIED_HASH_ANNOTATION = "tritonop.dev/applied-hash"
# Answers that mean "this object, as rendered, is not acceptable": the spec has to change.
REFUSAL_STATUSES = frozenset({400, 403, 422})


@dataclass(frozen=True)
class Observed:
    """The owned objects as they are now (None: absent)."""

    deployment: dict[str, Any] | None
    service: dict[str, Any] | None
    pdb: dict[str, Any] | None
    pods: list[dict[str, Any]]  # not being deleted
    pod_revision: int | None = None  # the cache's revision of these pods (None: read from the API)


@dataclass(frozen=True)
class Refusal:
    applied_hash: str
    message: str


@dataclass
class OwnedMemory:
    """What the process remembers about one ModelDeployment's owned objects."""

    control_key: str | None = None
    refusals: dict[str, Refusal] = field(default_factory=dict)  # kind -> the API server's refusal


class ModelDeploymentGone(Exception):
    """The ModelDeployment no longer exists (or is another object of the same name): a DELETED
    event was missed, e.g. across a watch restart. Nothing may be created for it."""


@dataclass
class Owned:
    """Owned-object access for one reconcile of one ModelDeployment."""

    kube: KubeApi
    cache: ObjectCache
    memory: OwnedMemory
    md: ModelDeployment
    events: EventRecorder

    async def observe(self, previous: Observed | None = None) -> Observed:
        """previous: an earlier observation; its pods are reused when the cache holds no change
        to them since (the autoscaler observes every second)."""
        kinds = ("Deployment", "Service", "PodDisruptionBudget")
        if all(self.cache.trusted(kind) for kind in kinds):  # the usual case: no request, no tasks
            deployment, service, pdb = (self.cache.get(kind, self.md.namespace, self.md.name) for kind in kinds)
        else:
            deployment, service, pdb = await asyncio.gather(*(self.read(kind) for kind in kinds))
        revision = self.cache.revision("Pod", self.md.namespace, self.md.name) if self.cache.trusted("Pod") else None
        if previous is not None and revision is not None and previous.pod_revision == revision:
            return Observed(deployment, service, pdb, previous.pods, revision)
        pods = [pod for pod in await self.list_pods() if not pod["metadata"].get("deletionTimestamp")]
        return Observed(deployment, service, pdb, pods, revision)

    async def read(self, kind: str) -> dict[str, Any] | None:
        md = self.md
        if self.cache.trusted(kind):
            return self.cache.get(kind, md.namespace, md.name)
        return await self.kube.get(kind, md.namespace, md.name)

    async def list_pods(self) -> list[dict[str, Any]]:
        md = self.md
        if self.cache.trusted("Pod"):
            return self.cache.select("Pod", md.namespace, selector_labels(md))
        return await self.kube.list("Pod", md.namespace, selector_string(md))

    async def delete(self, kind: str) -> None:
        md = self.md
        await self.kube.delete(kind, md.namespace, md.name)
        self.cache.remove(kind, {"metadata": {"namespace": md.namespace, "name": md.name}})

    async def converge(self, desired: list[dict[str, Any]], observed: Observed) -> str | None:
        """Apply each desired object that differs from what is live, delete a PodDisruptionBudget
        that is no longer wanted; returns the API server's message for the first object it
        refused (None: all accepted or unchanged)."""
        live = {"Deployment": observed.deployment, "Service": observed.service, "PodDisruptionBudget": observed.pdb}
        if any(live.get(obj["kind"]) is None for obj in desired):
            await self.still_exists()
        work: list[Awaitable[str | None]] = [self.apply_if_changed(obj, live.get(obj["kind"])) for obj in desired]
        if observed.pdb is not None and not any(obj["kind"] == "PodDisruptionBudget" for obj in desired):
            work.append(self.delete_pdb())
        refused = await asyncio.gather(*work)
        return next((message for message in refused if message), None)

    async def still_exists(self) -> None:
        """Before creating anything: the ModelDeployment is still there (one GET, only on this
        rare path). A body whose DELETED event was missed would otherwise have its objects
        created again and again, and the garbage collector delete them again and again."""
        current = await self.kube.get("ModelDeployment", self.md.namespace, self.md.name)
        if current is None or current.get("metadata", {}).get("uid") != self.md.uid:
            raise ModelDeploymentGone(f"{self.md.namespace}/{self.md.name} (uid {self.md.uid}) no longer exists")

    async def delete_pdb(self) -> None:
        await self.delete("PodDisruptionBudget")
        self.events.normal("Deleted", "PodDisruptionBudget removed: one replica cannot tolerate a disruption")

    async def apply_if_changed(self, desired: dict[str, Any], live: dict[str, Any] | None) -> str | None:
        desired = with_applied_hash(desired)
        kind, name = desired["kind"], desired["metadata"]["name"]
        digest = desired["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        refusals = self.memory.refusals
        if live is not None and is_subset(desired, live):
            refusals.pop(kind, None)
            return None
        known = refusals.get(kind)
        if known is not None and known.applied_hash == digest:
            return known.message  # the same object again: refused again, no need to ask
        try:
            applied = await self.kube.apply(desired)
        except KubeError as error:
            if error.status not in REFUSAL_STATUSES or error.going_away:
                raise
            message = f"{kind} {name} refused by the API server: {error.message}"
            refusals[kind] = Refusal(digest, message)
            self.events.warning("ApplyRefused", message)
            return message
        refusals.pop(kind, None)
        self.cache.store(kind, applied)  # read-your-writes
        if live is None:
            self.events.object_created(kind, name)
            return None
        live_hash = live.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
        unstamped = copy.deepcopy(desired)
        del unstamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        changed = first_difference(unstamped, live) if not is_subset(unstamped, live) else "a field no longer set"
        if live_hash == digest:
            # Same desired state as last time, yet live differs: someone edited it by hand.
            self.events.warning("DriftReverted", f"{kind} {name}: {changed} reverted")
        else:
            self.events.normal("Updated", f"{kind} {name}: {changed} changed")
        return None

    async def ensure_control_key(self) -> str:
        """The per-ModelDeployment key of Triton's model control API, kept in a Secret."""
        md = self.md
        if self.memory.control_key is not None:
            return self.memory.control_key
        name = control_key_secret_name(md)
        key = secrets.token_urlsafe(32)
        if md.status.observed_generation is None:
            # Never reconciled: the Secret is almost surely missing, so create it in one call.
            try:
                await self.kube.create(render_control_key_secret(md, key))
                self.events.object_created("Secret", name)
                self.memory.control_key = key
                return key
            except KubeError as error:
                if error.status != 409:
                    raise
        secret = await self.kube.get("Secret", md.namespace, name)
        if secret is not None and CONTROL_KEY_SECRET_KEY in (secret.get("data") or {}):
            key = base64.b64decode(secret["data"][CONTROL_KEY_SECRET_KEY]).decode()
            owners = {ref.get("uid") for ref in secret["metadata"].get("ownerReferences") or []}
            if md.uid not in owners:  # left by an earlier object of the same name: adopt it
                await self.kube.apply(render_control_key_secret(md, key))
        else:
            await self.kube.apply(render_control_key_secret(md, key))
            self.events.object_created("Secret", name)
        self.memory.control_key = key
        return key


def is_subset(desired: Any, live: Any) -> bool:
    """Every field the operator sets has that value live (the server may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    return bool(desired == live) or str(desired) == str(live)


def first_difference(desired: Any, live: Any, path: str = "") -> str:
    if isinstance(desired, dict) and isinstance(live, dict):
        for key, value in desired.items():
            if key not in live:
                return f"{path}.{key}".lstrip(".")
            if not is_subset(value, live[key]):
                return first_difference(value, live[key], f"{path}.{key}")
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        for index, (d, v) in enumerate(zip(desired, live, strict=True)):
            if not is_subset(d, v):
                return first_difference(d, v, f"{path}[{index}]")
    return path.lstrip(".") or "(object)"


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp what we apply, so a field dropped from the spec (absent from desired) is noticed too."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    obj["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
    return obj
