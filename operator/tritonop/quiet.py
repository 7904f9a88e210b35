"""The quiet path: between full reconciles, the autoscaler's evaluations come every second, and
when nothing a full reconcile saw has changed (the object, its Deployment/Service/PDB, its pods,
by resourceVersion), nothing was left converging and the decision keeps the replicas, the
evaluation is all that runs. Once a reconcile ends that way, the controller's ticker runs the
next evaluations (quiet_only) without the work queue; one that finds more to do hands its
decision and events to a full reconcile (Carried). A full reconcile still comes with every watch
event and at least every resync period (Triton-side drift)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from tritonop.api.spec import ModelDeployment
from tritonop.autoscale.runner import Scaling
from tritonop.events import EventRecorder
from tritonop.memory import Carried, Memory, ObjectMemory, Settled
from tritonop.owned import Observed

QUIET_EVALUATIONS = Counter(
    "tritonop_quiet_evaluations_total", "Reconciles in which only the autoscaler evaluated (nothing else changed)."
)


def parse(memory: Memory, body: dict[str, Any]) -> ModelDeployment:
    """The body as the typed model. An object at the resourceVersion a settled reconcile left is
    that reconcile's (nobody wrote since: the same spec, and the status it wrote), not parsed again:
    the autoscaler's evaluations come every second."""
    meta = body["metadata"]
    record = memory.get(meta.get("uid", ""))
    settled = record.settled if record is not None else None
    if settled is not None and settled.fingerprint[0] == meta.get("resourceVersion", "-"):
        return settled.md
    return ModelDeployment.from_body(body)


def settled_observation(record: ObjectMemory, md: ModelDeployment) -> Observed | None:
    """What the last quiet reconcile read, for observe() to reuse while the cache shows no change."""
    return record.settled.observed if record.settled is not None and md.spec.autoscaling is not None else None


def fingerprint(body: dict[str, Any], observed: Observed) -> tuple[str, ...]:
    """What a full reconcile works from, by resourceVersion (a write by anyone changes it)."""
    objects = [body, observed.deployment, observed.service, observed.pdb, *observed.pods]
    return tuple((obj or {}).get("metadata", {}).get("resourceVersion", "-") for obj in objects)


def quiet(
    settled: Settled | None, seen: tuple[str, ...], replicas: int, nothing_to_report: bool, now: float, resync: float
) -> bool:
    """Only the autoscaler has work: the last full reconcile left nothing converging, nothing it
    read has changed since, the replicas stay and the measurement is not due in status."""
    return (
        settled is not None
        and settled.fingerprint == seen
        and settled.replicas == replicas
        and nothing_to_report
        and now - settled.at < resync
    )


def only_autoscaler(
    record: ObjectMemory, md: ModelDeployment, seen: tuple[str, ...], scaling: Scaling, now: float, resync: float
) -> bool:
    """quiet(), for this object's record (a settled reconcile counts only while it autoscales)."""
    settled = record.settled if md.spec.autoscaling is not None else None
    if quiet(settled, seen, scaling.replicas, scaling.facts is None, now, resync):
        QUIET_EVALUATIONS.inc()
        return True
    return False


def hand_over(record: ObjectMemory, scaling: Scaling, events: EventRecorder) -> None:
    """A light evaluation found more to do: the full reconcile takes its decision and events."""
    record.carried = Carried(scaling, tuple(events.events))


def take_over(record: ObjectMemory, events: EventRecorder) -> Scaling | None:
    """The decision (and events) a light evaluation just handed over, if any."""
    carried, record.carried = record.carried, None
    if carried is None:
        return None
    events.events.extend(carried.events)
    return carried.scaling
