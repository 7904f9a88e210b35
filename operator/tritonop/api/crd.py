"""Generate the ModelDeployment CRD from the pydantic models.

pydantic's JSON schema is not a Kubernetes structural schema, so it is rewritten: $ref inlined,
titles dropped, Optional turned into `nullable`, `additionalProperties: false` removed (the API
server prunes unknown fields instead), enums typed. `python -m tritonop.api.crd` prints the YAML;
`make crds` writes crds/modeldeployments.tritonop.dev.yaml and a test fails on drift.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from tritonop.api.spec import ModelDeploymentSpec
from tritonop.api.status import ModelDeploymentStatus
from tritonop.api.validation import API_GROUP, API_VERSION, KIND, PLURAL

DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": ".status.readySummary", "description": "Ready/desired replicas."},
    {"name": "Model", "type": "string", "jsonPath": ".status.modelName", "description": "Triton model name."},
    {
        "name": "Version",
        "type": "integer",
        "jsonPath": ".status.activeVersion",
        "description": "Version the replicas serve.",
    },
    {
        "name": "Target-Lat",
        "type": "integer",
        "jsonPath": ".spec.autoscaling.targetLatencyMs",
        "description": "Latency target (ms).",
    },
    # Generative models only: shown by `kubectl get md -o wide`, so other deployments keep the
    # narrow table (and the examples in the docs stay true).
    {
        "name": "Target-TTFT",
        "type": "integer",
        "jsonPath": ".spec.autoscaling.tokenLatency.timeToFirstTokenMs",
        "description": "Time-to-first-token target (ms) at spec.autoscaling.tokenLatency.percentile.",
        "priority": 1,
    },
    {
        "name": "Target-ITL",
        "type": "integer",
        "jsonPath": ".spec.autoscaling.tokenLatency.interTokenLatencyMs",
        "description": "Inter-token latency target (ms) at spec.autoscaling.tokenLatency.percentile.",
        "priority": 1,
    },
    {"name": "P95", "type": "integer", "jsonPath": ".status.latency.p95Ms", "description": "Measured p95 (ms)."},
    {
        "name": "P99",
        "type": "integer",
        "jsonPath": ".status.latency.p99Ms",
        "description": "Measured p99 (ms).",
        "priority": 1,
    },
    {
        "name": "TTFT",
        "type": "integer",
        "jsonPath": ".status.tokenLatency.timeToFirstTokenMs",
        "description": "Measured time to first token (ms) at the token percentile.",
        "priority": 1,
    },
    {
        "name": "ITL",
        "type": "integer",
        "jsonPath": ".status.tokenLatency.interTokenLatencyMs",
        "description": "Measured inter-token latency (ms) at the token percentile.",
        "priority": 1,
    },
    {
        "name": "Rollout",
        "type": "string",
        "jsonPath": ".status.rollout.summary",
        "description": "Canary rollout: version, weight, step (or RolledBack/Promoted).",
    },
    {
        "name": "Cached",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="ModelCached")].status',
        "description": "model.cache: True when every needed version is on its node (the next pod there starts warm).",
        "priority": 1,
    },
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "description": "Why Ready is not True."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    # pydantic wraps a $ref with siblings (description, default) in allOf: [$ref].
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node["allOf"][0]
        extra = {k: v for k, v in node.items() if k != "allOf"}
        return _resolve({**inner, **extra}, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    node.pop("title", None)
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        nullable = len(variants) != len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(variants) == 1:
            merged = {**variants[0], **rest}
            if nullable:
                merged["nullable"] = True
            return _structural(merged)
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if "const" in node:
        node["enum"] = [node.pop("const")]
        node.setdefault("type", "string")
    if node.get("default", "absent") is None:
        node.pop("default")  # a null default means "absent", not a value to write
    if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in node:
        node["type"] = "object"
    return {key: _structural(value) if key != "default" else value for key, value in node.items()}


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return dict(_structural(_resolve(raw, defs)))


def _add_object_defaults(schema: dict[str, Any]) -> None:
    """Object fields whose own fields all have defaults default to {}, so the server fills them in."""
    for prop in schema.get("properties", {}).values():
        if prop.get("type") == "object" and "properties" in prop:
            _add_object_defaults(prop)
            if not prop.get("required") and "default" not in prop and not prop.get("nullable"):
                prop["default"] = {}


def build_crd() -> dict[str, Any]:
    spec_schema = openapi_schema(ModelDeploymentSpec)
    _add_object_defaults(spec_schema)
    status_schema = openapi_schema(ModelDeploymentStatus)
    spec_schema["description"] = "What to serve and how: model, server, replicas or autoscaling, rollout."
    status_schema["description"] = "What the operator observed: replicas, versions, latency, conditions."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["md", "mdep"],
                "categories": ["tritonop"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A Triton Inference Server deployment of one model: the operator runs tritonserver "
                                "replicas on GPU nodes, serves the chosen version from a Triton model repository, "
                                "switches versions inside running servers and scales from measured latency."
                            ),
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                # The name becomes a Service name, which must be a DNS-1035 label.
                                {
                                    "rule": f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
                                    "message": "must be a DNS-1035 label (lowercase letters, digits and '-', starting "
                                    "with a letter, at most 63 characters) because it names the Service",
                                    "fieldPath": ".metadata.name",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "tritonop.dev/v1alpha1"},
                                "kind": {"type": "string", "description": "ModelDeployment"},
                                "metadata": {
                                    "type": "object",
                                    "properties": {"name": {"type": "string", "maxLength": 63}},
                                },
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `make crds` from operator/tritonop/api/spec.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
