"""Pure: the nodes a ModelDeployment's servers could run on, as the scheduler's node filters
decide from the spec alone: Ready and schedulable, the nodeSelector, required node affinity,
tolerated NoSchedule/NoExecute taints, and GPUs of the requested resource. (What other pods take,
pod affinity and topology spread change with time: a node filtered only by those stays eligible.)
spec.model.cache.nodes EligibleNodes stages versions on these nodes, so that a pod the autoscaler
adds on any of them starts warm."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tritonop.api.spec import ModelDeployment, Toleration

# Taint effects that keep a pod off a node (PreferNoSchedule only steers the scheduler).
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def eligible_nodes(md: ModelDeployment, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names of the nodes md's servers could be scheduled on, sorted."""
    return sorted(str(node["metadata"]["name"]) for node in nodes if eligible(md, node))


def eligible(md: ModelDeployment, node: Mapping[str, Any]) -> bool:
    server = md.spec.server
    spec, status = node.get("spec") or {}, node.get("status") or {}
    labels: Mapping[str, str] = node.get("metadata", {}).get("labels") or {}
    if spec.get("unschedulable") or not _ready(status):
        return False
    if any(labels.get(key) != value for key, value in server.node_selector.items()):
        return False
    taints = [t for t in spec.get("taints") or [] if t.get("effect") in BLOCKING_EFFECTS]
    if not all(any(tolerates(toleration, taint) for toleration in server.tolerations) for taint in taints):
        return False
    required = ((server.affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None and not any(
        _term_matches(term, labels, str(node["metadata"]["name"])) for term in required.get("nodeSelectorTerms") or []
    ):
        return False
    if server.gpus > 0:
        return _quantity(str((status.get("allocatable") or {}).get(server.gpu_resource_name, "0"))) >= server.gpus
    return True


def tolerates(toleration: Toleration, taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ToleratesTaint: the effect (empty: all), the key (empty with Exists: all), and
    with Equal (the default) the value."""
    if toleration.effect and toleration.effect != taint.get("effect"):
        return False
    if toleration.key and toleration.key != taint.get("key"):
        return False
    if toleration.operator == "Exists":
        return True
    return bool(toleration.key) and (toleration.value or "") == (taint.get("value") or "")


def _ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _term_matches(term: Mapping[str, Any], labels: Mapping[str, str], name: str) -> bool:
    """A nodeSelectorTerm: every expression holds; an empty term matches no node."""
    expressions = [(e, labels.get(e.get("key", ""))) for e in term.get("matchExpressions") or []]
    fields = [(e, name if e.get("key") == "metadata.name" else None) for e in term.get("matchFields") or []]
    return bool(expressions or fields) and all(_holds(e, value) for e, value in expressions + fields)


def _holds(expression: Mapping[str, Any], value: str | None) -> bool:
    operator, values = expression.get("operator"), [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _quantity(text: str) -> int:
    """A count such as an extended resource's allocatable ("8"); anything else: 0."""
    try:
        return int(text)
    except ValueError:
        return 0
