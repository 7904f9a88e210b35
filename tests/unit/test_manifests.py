"""Install manifests: least-privilege RBAC equal to what the code declares, the Argo CD health
check shipped as tested, a lean image, and a working entrypoint."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tritonop.permissions import LEADER_ELECTION, REQUIRED

ROOT = Path(__file__).resolve().parents[2]


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
    kubectl = Path(sys.executable).parent / "kubectl"
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True)
    kinds = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in yaml.safe_load_all(built.stdout))
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
    deployment = next(d for d in yaml.safe_load_all(built.stdout) if d["kind"] == "Deployment")
    # Two replicas are safe only because they elect a leader.
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-elect" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/tritonop/tritonop:0.1.0"


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
