"""The committed CRD is exactly what the pydantic models generate, and it is structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tritonop.api.crd import build_crd, render_yaml

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "modeldeployments.tritonop.dev.yaml"
FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const"}


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += walk(value, f"{path}[{index}]")
    return found


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == render_yaml(), "run `make crds` and commit the result"


def test_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert not FORBIDDEN_KEYS & set(node), f"{path} has {FORBIDDEN_KEYS & set(node)}"
        assert node.get("additionalProperties") is not False, path
        if "properties" in node:
            assert node.get("type") == "object", path
            assert "additionalProperties" not in node, path
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(key, False), bool), f"{path}.{key} must be boolean"


def test_every_spec_and_status_field_is_described() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for root in ("spec", "status"):
        for path, node in walk(schema["properties"][root], root):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"{path}.{name} has no description (kubectl explain shows it)"


def test_names_columns_and_subresources() -> None:
    crd = build_crd()
    assert crd["spec"]["names"]["shortNames"] == ["md", "mdep"]
    assert crd["spec"]["names"]["categories"] == ["tritonop"]
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Model",
        "Version",
        "Target-Lat",
        "Target-TTFT",
        "Target-ITL",
        "P95",
        "P99",
        "TTFT",
        "ITL",
        "Rollout",
        "Cached",
        "Reason",
        "Age",
    ]
    wide = {c["name"]: c for c in version["additionalPrinterColumns"] if c.get("priority")}
    assert set(wide) == {"P99", "Target-TTFT", "Target-ITL", "TTFT", "ITL", "Cached"}, "p99, tokens, cache: -o wide"
    assert wide["P99"]["jsonPath"] == ".status.latency.p99Ms"
    assert wide["Cached"]["jsonPath"] == '.status.conditions[?(@.type=="ModelCached")].status'
    assert wide["TTFT"]["jsonPath"] == ".status.tokenLatency.timeToFirstTokenMs"
    assert wide["ITL"]["jsonPath"] == ".status.tokenLatency.interTokenLatencyMs"
    assert wide["Target-TTFT"]["jsonPath"] == ".spec.autoscaling.tokenLatency.timeToFirstTokenMs"
    assert wide["Target-ITL"]["jsonPath"] == ".spec.autoscaling.tokenLatency.interTokenLatencyMs"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert yaml.safe_load(CRD_FILE.read_text())["metadata"]["name"] == "modeldeployments.tritonop.dev"


def test_defaults_are_in_the_schema() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["server"]["properties"]["image"]["default"] == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert spec["server"]["default"] == {}
    assert spec["rollout"]["properties"]["strategy"]["default"] == "InPlace"
    autoscaling = spec["autoscaling"]["properties"]
    assert autoscaling["metric"]["default"] == "p95"
    assert autoscaling["scaleDownStabilizationSeconds"]["default"] == 300
    assert "default" not in spec["replicas"], "a replicas default would collide with autoscaling"


def test_service_account_and_pull_secrets_are_checked_at_admission() -> None:
    """DNS-subdomain names with the message the other names give; at most 16 pull secrets, each once
    (a list keyed by name, as in a Pod). The rules run in the API server: test_admission.py sends
    bad values to a real one."""
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    server = spec["properties"]["server"]["properties"]
    subdomain = server["priorityClassName"]["x-kubernetes-validations"]
    assert subdomain[0]["message"].startswith("must be a DNS-1123 subdomain")
    account = server["serviceAccountName"]
    assert (account["type"], account["maxLength"], account["x-kubernetes-validations"]) == ("string", 253, subdomain)
    secrets = server["imagePullSecrets"]
    assert (secrets["maxItems"], secrets["x-kubernetes-list-type"], secrets["x-kubernetes-list-map-keys"]) == (
        16,
        "map",
        ["name"],
    )
    assert secrets["items"]["required"] == ["name"]
    assert secrets["items"]["properties"]["name"]["x-kubernetes-validations"] == subdomain
    assert "default" not in secrets and "default" not in account, "absent unless set: nothing to drift"


def test_token_latency_targets_in_the_schema() -> None:
    """spec.autoscaling.tokenLatency: at least one of the two targets (CEL, with the field names in
    the message), a percentile between 50 and 99.9 (CEL, both bounds in the message), no default
    object (absent unless set). test_admission.py sends bad values to a real API server."""
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    tokens = spec["properties"]["autoscaling"]["properties"]["tokenLatency"]
    assert tokens["type"] == "object" and "default" not in tokens and tokens.get("nullable") is True
    [one_at_least] = tokens["x-kubernetes-validations"]
    assert one_at_least["rule"] == "has(self.timeToFirstTokenMs) || has(self.interTokenLatencyMs)"
    assert "timeToFirstTokenMs, interTokenLatencyMs or both" in one_at_least["message"]
    fields = tokens["properties"]
    percentile = fields["percentile"]
    assert (percentile["type"], percentile["default"]) == ("number", 95)
    assert "minimum" not in percentile, "the CEL rule's message gives both bounds"
    [bounds] = percentile["x-kubernetes-validations"]
    assert bounds["rule"] == "self >= 50.0 && self <= 99.9"
    assert bounds["message"].startswith("must be a percentile between 50 and 99.9")
    for name in ("timeToFirstTokenMs", "interTokenLatencyMs"):
        assert (fields[name]["type"], fields[name]["minimum"], fields[name]["maximum"]) == ("integer", 1, 3_600_000)
        assert "default" not in fields[name]
    status = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    measured = status["properties"]["tokenLatency"]["properties"]
    assert set(measured) == {"percentile", "timeToFirstTokenMs", "interTokenLatencyMs", "source", "windowSeconds"}
