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
        "P95",
        "Rollout",
        "Reason",
        "Age",
    ]
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
