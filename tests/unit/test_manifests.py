"""Install manifests: least-privilege RBAC equal to what the code declares, the Argo CD health
check shipped as tested, a lean image, and a working entrypoint."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.unit.fakes import FakeKube, pod_of
from tritonop.permissions import LEADER_ELECTION, REQUIRED
from tritonop.preflight import preflight
from tritonop.settings import DEFAULT_VERIFIER_IMAGE, Settings

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    built = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def verifier_image_of(deployment: dict[str, Any]) -> str:
    """The image the operator's verification Jobs run when a pod of this Deployment starts it: its
    args and its downward-API env as the pod gets them, then what preflight() reads from the pod."""
    from tritonop.cli import build_parser, settings_from

    pod = pod_of(deployment)
    (container,) = pod["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    fields = {"metadata.namespace": pod["metadata"]["namespace"], "metadata.name": pod["metadata"]["name"]}
    env = {item["name"]: fields[item["valueFrom"]["fieldRef"]["fieldPath"]] for item in container.get("env", [])}
    settings = Settings(verifier_image=settings_from(args).verifier_image)
    own = (env["POD_NAMESPACE"], env["POD_NAME"]) if {"POD_NAMESPACE", "POD_NAME"} <= env.keys() else None
    return asyncio.run(preflight(FakeKube(pod), settings, own, args.verifier_image is not None)).verifier_image


def rbac_object(kind: str) -> dict:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text()))
    return next(doc for doc in docs if doc["kind"] == kind)


def granted_by(role: dict) -> dict[tuple[str, str], frozenset[str]]:
    granted: dict[tuple[str, str], frozenset[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                granted[key] = granted.get(key, frozenset()) | frozenset(rule["verbs"])
    return granted


def test_cluster_role_grants_exactly_what_the_code_declares() -> None:
    granted = granted_by(rbac_object("ClusterRole"))
    assert granted == REQUIRED, "manifests/rbac.yaml and operator/tritonop/permissions.py differ"
    assert not {"list", "watch"} & granted[("", "secrets")], "never list or watch Secrets"


def test_leader_election_role_is_namespaced_and_exact() -> None:
    role, binding = rbac_object("Role"), rbac_object("RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "tritonop-system"
    assert granted_by(role) == LEADER_ELECTION
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tritonop", "namespace": "tritonop-system"}]


def test_argocd_patch_embeds_the_tested_health_script() -> None:
    patch = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm-patch.yaml").read_text())
    script = patch["data"]["resource.customizations.health.tritonop.dev_ModelDeployment"]
    assert script == (ROOT / "manifests" / "argocd" / "health.lua").read_text()


def test_kustomize_builds_the_install() -> None:
    built = kustomize(ROOT / "manifests")
    kinds = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in built)
    assert kinds == [
        "ClusterRole/tritonop",
        "ClusterRoleBinding/tritonop",
        "CustomResourceDefinition/modeldeployments.tritonop.dev",
        "Deployment/tritonop",
        "Namespace/tritonop-system",
        "Role/tritonop-leader-election",
        "RoleBinding/tritonop-leader-election",
        "Service/tritonop-metrics",
        "ServiceAccount/tritonop",
    ]
    deployment = next(d for d in built if d["kind"] == "Deployment")
    # Two replicas are safe only because they elect a leader.
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-elect" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/tritonop/tritonop:0.1.0"
    assert verifier_image_of(deployment) == "ghcr.io/tritonop/tritonop:0.1.0" == DEFAULT_VERIFIER_IMAGE


def test_overriding_the_image_moves_the_verification_jobs_too(tmp_path: Path) -> None:
    """An overlay's `images:` (or `kubectl set image`) changes only the container's image; no
    --verifier-image names the old one: the operator reads the image from its own pod."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(ROOT / "manifests", overlay)  # kustomize takes a relative base only
    mirror = {"name": "ghcr.io/tritonop/tritonop", "newName": "registry.example/mirror/tritonop", "newTag": "0.1.0-m"}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [base], "images": [mirror]}))
    deployment = next(d for d in kustomize(overlay) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/mirror/tritonop:0.1.0-m"
    assert not [arg for arg in container["args"] if arg.startswith("--verifier-image")], "it would stay on the old name"
    assert container["env"] == [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    assert verifier_image_of(deployment) == "registry.example/mirror/tritonop:0.1.0-m"
    # The operator may read its pod: `get` on pods is granted (and declared in permissions.py).
    assert "get" in granted_by(rbac_object("ClusterRole"))[("", "pods")]


def test_image_stays_lean() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "pytest", "hypothesis", "nvidia-pytriton", "ruff", "mypy"):
        assert heavy not in runtime, f"{heavy} must stay an optional extra"
    dockerfile = (ROOT / "operator" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in dockerfile and "[" not in dockerfile.split("pip install")[1].split("\n")[0]
    assert 'ENTRYPOINT ["tritonop"]' in dockerfile and "USER 1000" in dockerfile


def test_the_image_entrypoint_command_works() -> None:
    tritonop = Path(sys.executable).parent / "tritonop"
    for args in (["--help"], ["run", "--help"], ["crd"]):
        result = subprocess.run([tritonop, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    assert "--all-namespaces" in subprocess.run([tritonop, "run", "--help"], capture_output=True, text=True).stdout


# -- the NetworkPolicy examples ---------------------------------------------------------------------
EXAMPLES = ROOT / "manifests" / "examples"


def triton_pods_and_verifier() -> tuple[dict[str, str], dict[str, str]]:
    """The labels of a Triton pod and of a verification Job's pod, as the operator renders them."""
    from tritonop.api.spec import ModelDeployment
    from tritonop.render.objects import RenderInputs, render_deployment, render_verify_job

    md = ModelDeployment.from_body(
        {
            "metadata": {"name": "resnet50", "namespace": "vision", "uid": "u"},
            "spec": {"model": {"repository": "pvc://m"}},
        }
    )
    server = render_deployment(md, RenderInputs(replicas=1, target_version=1))["spec"]["template"]["metadata"]
    verifier = render_verify_job(md, 1, "image", "job")["spec"]["template"]["metadata"]
    return server["labels"], verifier["labels"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "matchLabels only"
    return selector["matchLabels"].items() <= labels.items()


def test_networkpolicy_lets_the_operator_reach_triton_on_8000_to_8002_only() -> None:
    from tritonop.names import GRPC_PORT, HTTP_PORT, METRICS_PORT

    (policy,) = yaml.safe_load_all((EXAMPLES / "networkpolicy-triton-ingress.yaml").read_text())
    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert "namespace" not in policy["metadata"], "applied in each namespace with ModelDeployments (-n)"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec

    server, verifier = triton_pods_and_verifier()
    assert spec["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "tritonserver", "app.kubernetes.io/managed-by": "tritonop"}
    }
    assert selects(spec["podSelector"], server), "every Triton pod the operator renders"
    assert not selects(spec["podSelector"], verifier), "not the verification Jobs' pods"

    operator = next(d for d in kustomize(ROOT / "manifests") if d["kind"] == "Deployment")
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]  # one peer, both selectors: the operator's pods in its namespace, nobody else
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "tritonop-system"}}
    assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == operator["metadata"]["namespace"]
    assert selects(peer["podSelector"], operator["spec"]["template"]["metadata"]["labels"])
    assert rule["ports"] == [{"protocol": "TCP", "port": port} for port in (HTTP_PORT, GRPC_PORT, METRICS_PORT)]
    assert (HTTP_PORT, GRPC_PORT, METRICS_PORT) == (8000, 8001, 8002)


def test_networkpolicy_egress_counterpart_is_for_the_operator_only() -> None:
    (ingress,) = yaml.safe_load_all((EXAMPLES / "networkpolicy-triton-ingress.yaml").read_text())
    (policy,) = yaml.safe_load_all((EXAMPLES / "networkpolicy-operator-egress.yaml").read_text())
    operator = next(d for d in kustomize(ROOT / "manifests") if d["kind"] == "Deployment")
    assert policy["metadata"]["namespace"] == operator["metadata"]["namespace"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    assert selects(spec["podSelector"], operator["spec"]["template"]["metadata"]["labels"])
    (rule,) = spec["egress"]
    (peer,) = rule["to"]
    assert peer == {"namespaceSelector": {}, "podSelector": ingress["spec"]["podSelector"]}  # Triton pods anywhere
    assert rule["ports"] == ingress["spec"]["ingress"][0]["ports"]
    assert "isolates the operator's pods" in (EXAMPLES / "networkpolicy-operator-egress.yaml").read_text()


def test_examples_are_not_installed() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert not [r for r in kustomization["resources"] if "examples" in r]
    assert not [d for d in kustomize(ROOT / "manifests") if d["kind"] == "NetworkPolicy"]
