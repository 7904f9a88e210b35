"""Events: what a reconcile tells `kubectl describe`.

`EventRecorder` collects a reconcile's events (one "Created" line for all new objects) and posts
them at the end; `transition_events` is pure: the events a status change deserves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from tritonop.api.status import ModelDeploymentStatus
from tritonop.k8s import KubeApi
from tritonop.status import PROGRESS_REASONS, TRANSIENT_REASONS

# Condition reasons that need no Warning of their own: progress, a transient restart, or a
# consequence of another condition that already has its Warning.
QUIET_REASONS = PROGRESS_REASONS | TRANSIENT_REASONS | {"BlockedByRepository"}

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


def transition_events(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[Event]:
    """Events for conditions that changed status or reason, and for a finished version switch.

    Ready: Normal when it turns True or its reason is progress, else Warning; never on the first
    status (a new object is not news). Other conditions: a Warning when they turn False for a
    reason that is trouble."""
    events: list[Event] = []
    for cond in new.conditions:
        before = old.condition(cond.type)
        if before is not None and before.status == cond.status and before.reason == cond.reason:
            continue
        if cond.type == "CanaryHealthy" or (cond.type == "Ready" and cond.reason == "RolledBack"):
            continue  # the canary posts these itself, with the figures (canary/)
        if cond.type == "Ready":
            progress = cond.status == "True" or cond.reason in PROGRESS_REASONS
            if cond.status == "True" or before is not None:
                events.append(Event("Normal" if progress else "Warning", cond.reason, cond.message))
        elif cond.status == "False" and cond.type != "Progressing" and cond.reason not in QUIET_REASONS:
            events.append(Event("Warning", cond.reason, cond.message))
    if old.active_version not in (None, new.active_version) and new.active_version:
        events.append(
            Event("Normal", "VersionSwitched", f"version {old.active_version} -> {new.active_version} on all replicas")
        )
    return events


@dataclass
class EventRecorder:
    """One reconcile's events for one ModelDeployment, logged as they happen, posted by flush()."""

    log: logging.LoggerAdapter[logging.Logger]
    subject: str  # namespace/name, for text logs
    events: list[Event] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # "Kind name" of objects this reconcile created

    def normal(self, reason: str, message: str) -> None:
        self.record(Event("Normal", reason, message))

    def warning(self, reason: str, message: str) -> None:
        self.record(Event("Warning", reason, message))

    def record(self, event: Event) -> None:
        self.log.info("%s: %s: %s", self.subject, event.reason, event.message)
        self.events.append(event)

    def record_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.record(event)

    def object_created(self, kind: str, name: str) -> None:
        self.created.append(f"{kind} {name}")

    async def flush(self, kube: KubeApi, body: dict[str, Any]) -> None:
        events = list(self.events)
        if self.created:
            events.insert(0, Event("Normal", "Created", ", ".join(self.created)))
        self.events.clear()
        self.created.clear()
        involved = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": body["metadata"]}
        await asyncio.gather(*(kube.post_event(involved, e.type, e.reason, e.message) for e in events))
