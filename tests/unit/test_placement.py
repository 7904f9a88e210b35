"""placement.py: the nodes a ModelDeployment's servers could run on (cache.nodes EligibleNodes), by
table: each of the scheduler's spec-decided filters, alone and together."""

from __future__ import annotations

from typing import Any

import pytest

from tritonop.api.spec import ModelDeployment, Toleration
from tritonop.placement import eligible, eligible_nodes, tolerates


def node(
    name: str = "n",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: str = "True",
    unschedulable: bool = False,
    gpus: str | None = "8",
) -> dict[str, Any]:
    allocatable = {"cpu": "64"} | ({"nvidia.com/gpu": gpus} if gpus is not None else {})
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], **({"unschedulable": True} if unschedulable else {})},
        "status": {"conditions": [{"type": "Ready", "status": ready}], "allocatable": allocatable},
    }


def md(**server: Any) -> ModelDeployment:
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "model": {
                    "repository": "pvc://models",
                    "cache": {"claimName": "c", "budget": "1Gi", "nodes": "EligibleNodes"},
                },
                "server": server,
            },
        }
    )


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def on(*expressions: dict[str, Any]) -> dict[str, Any]:
    """A required node affinity of one term with these expressions."""
    return affinity({"matchExpressions": list(expressions)})


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, **({"values": list(values)} if values else {})}


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("server", "the_node", "want"),
    [
        ({}, node(), True),
        ({}, node(ready="False"), False),
        ({}, node(ready="Unknown"), False),
        ({}, node(unschedulable=True), False),  # cordoned
        ({"nodeSelector": {"pool": "gpu"}}, node(labels={"pool": "gpu", "zone": "a"}), True),
        ({"nodeSelector": {"pool": "gpu"}}, node(labels={"pool": "cpu"}), False),
        ({"nodeSelector": {"pool": "gpu"}}, node(), False),
        ({}, node(taints=[GPU_TAINT]), False),
        ({}, node(taints=[{"key": "k", "effect": "PreferNoSchedule"}]), True),  # steers, does not keep off
        ({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, node(taints=[GPU_TAINT]), True),
        ({"tolerations": [{"key": "nvidia.com/gpu", "value": "present"}]}, node(taints=[GPU_TAINT]), True),
        ({"tolerations": [{"key": "nvidia.com/gpu", "value": "absent"}]}, node(taints=[GPU_TAINT]), False),
        ({"tolerations": [{"operator": "Exists"}]}, node(taints=[GPU_TAINT, {"key": "x", "effect": "NoExecute"}]),
         True),
        ({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}]},
         node(taints=[GPU_TAINT]), False),  # another effect
        ({"gpus": 1}, node(gpus="8"), True),
        ({"gpus": 4}, node(gpus="2"), False),
        ({"gpus": 1}, node(gpus=None), False),  # no GPUs of that resource
        ({"gpus": 1, "gpuResourceName": "nvidia.com/mig-1g.10gb"}, node(gpus="8"), False),
        ({"gpus": 0}, node(gpus=None), True),  # CPU-only serving: any node
        ({"affinity": affinity({"matchExpressions": [expression("zone", "In", "a", "b")]})},
         node(labels={"zone": "b"}), True),
        ({"affinity": affinity({"matchExpressions": [expression("zone", "In", "a")]})},
         node(labels={"zone": "b"}), False),
        ({"affinity": affinity({"matchExpressions": [expression("zone", "In", "a")]},
                               {"matchExpressions": [expression("zone", "In", "b")]})},
         node(labels={"zone": "b"}), True),  # terms are ORed
        ({"affinity": on(expression("zone", "In", "b"), expression("spot", "DoesNotExist"))},
         node(labels={"zone": "b", "spot": "1"}), False),  # expressions are ANDed
        ({"affinity": affinity({"matchExpressions": [expression("zone", "NotIn", "a")]})}, node(), True),
        ({"affinity": on(expression("gen", "Gt", "3"))}, node(labels={"gen": "4"}), True),
        ({"affinity": on(expression("gen", "Lt", "3"))}, node(labels={"gen": "4"}), False),
        ({"affinity": on(expression("gen", "Gt", "3"))}, node(labels={"gen": "x"}), False),
        ({"affinity": affinity({"matchFields": [expression("metadata.name", "In", "n")]})}, node(), True),
        ({"affinity": affinity({"matchFields": [expression("metadata.name", "NotIn", "n")]})}, node(), False),
        ({"affinity": affinity({})}, node(), False),  # an empty term matches no node
        ({"affinity": affinity()}, node(), False),
        ({"affinity": {"podAntiAffinity": {}}}, node(), True),  # pod (anti-)affinity changes with time
    ],
)  # fmt: skip
def test_eligible(server: dict[str, Any], the_node: dict[str, Any], want: bool) -> None:
    assert eligible(md(**server), the_node) is want


@pytest.mark.parametrize(
    ("toleration", "taint", "want"),
    [
        ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
        ({"key": "k"}, {"key": "k", "effect": "NoSchedule"}, True),  # Equal with both values empty
        ({"key": "k", "value": "v"}, {"key": "k", "effect": "NoSchedule"}, False),
        ({"key": "other", "operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, False),
        ({"operator": "Exists", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}, True),
        ({"operator": "Exists", "effect": "NoSchedule"}, {"key": "k", "effect": "NoExecute"}, False),
    ],
)
def test_tolerates_as_kubernetes_does(toleration: dict[str, Any], taint: dict[str, str], want: bool) -> None:
    assert tolerates(Toleration.model_validate(toleration), taint) is want


def test_eligible_nodes_are_named_in_order() -> None:
    nodes = [node("b"), node("a"), node("c", ready="False"), node("d", labels={"pool": "cpu"})]
    assert eligible_nodes(md(), nodes) == ["a", "b", "d"]
    assert eligible_nodes(md(nodeSelector={"pool": "cpu"}), nodes) == ["d"]
