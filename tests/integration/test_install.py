"""Shipping: the operator under its own ServiceAccount with exactly the shipped ClusterRole,
Triton pods admitted under the restricted Pod Security level, the Argo CD health check on real
status objects, and no drift for GitOps."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import stop_pid, wait_until
from devcluster.volumes import host_path_claim
from tritonop.repository import tools

from .conftest import REPO_ROOT, OperatorProcess, restricted_namespace_named, start_operator
from .helpers import (
    MODEL_REPO,
    apply_md,
    events_for,
    get_md,
    infer_version,
    md_condition,
    md_manifest,
    md_pods,
    scrape_metrics,
    sleepy_spec,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
HEALTH_LUA = (REPO_ROOT / "manifests" / "argocd" / "health.lua").read_text()


def refused_by_rbac(log_text: str) -> bool:
    """The operator's log shows an RBAC refusal: Forbidden, or an HTTP 403 (not the millisecond
    field of a timestamp, as in "01:40:13,403")."""
    return "Forbidden" in log_text or re.search(r"(?<![,.\d])403(?!\d)", log_text) is not None


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the shipped Lua health check the way Argo CD does: a global `obj`, a returned table."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    result = lua.execute(HEALTH_LUA)
    return {"status": result["status"], "message": result["message"]}


def test_argocd_health_on_objects_from_the_cluster(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, namespace: str
) -> None:
    created = cluster.kubectl(
        "apply", "-n", namespace, "-o", "json", "-f", "-", input=yaml.safe_dump(md_manifest("fresh", sleepy_spec()))
    )
    assert argocd_health(json.loads(created.stdout))["status"] == "Progressing"

    healthy = wait_for_condition(api, namespace, "fresh", "Ready", "True")
    assert argocd_health(healthy) == {"status": "Healthy", "message": "1/1 replicas serve version 2"}

    apply_md(cluster, namespace, "greedy", sleepy_spec(server={"gpus": 9}))
    degraded = wait_for_condition(api, namespace, "greedy", "Ready", "False", "InsufficientGPU")
    health = argocd_health(degraded)
    assert health["status"] == "Degraded" and "Insufficient nvidia.com/gpu" in health["message"]

    # A spec change the operator has not observed yet: status is stale, so not Healthy.
    stale = json.loads(json.dumps(healthy))
    stale["metadata"]["generation"] += 1
    assert argocd_health(stale)["status"] == "Progressing"


def test_server_side_apply_round_trip_shows_no_drift(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    spec = sleepy_spec()
    spec["autoscaling"] = {"minReplicas": 2, "maxReplicas": 4, "targetLatencyMs": 500}
    manifest = tmp_path / "md.yaml"
    manifest.write_text(yaml.safe_dump(md_manifest("gitops", spec, namespace)))
    cluster.kubectl("apply", "--server-side", "--field-manager=argocd-controller", "-f", str(manifest))
    md = wait_for_condition(api, namespace, "gitops", "Ready", "True")
    wait_until("autoscaled to minReplicas", lambda: get_md(api, namespace, "gitops")["status"]["replicas"] == 2, 60)
    md = get_md(api, namespace, "gitops")
    dry_run = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=argocd-controller",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        str(manifest),
    )
    assert json.loads(dry_run.stdout)["spec"] == md["spec"], "re-applying the same YAML would change the spec"
    spec_owners = {
        entry["manager"] for entry in md["metadata"]["managedFields"] if "f:spec" in entry.get("fieldsV1", {})
    }
    assert spec_owners == {"argocd-controller"}
    assert md["metadata"]["generation"] == 1


@pytest.fixture
def restricted_namespace(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    name = restricted_namespace_named(core, f"rbac-{uuid.uuid4().hex[:6]}")
    yield name
    core.delete_namespace(name)


def token_kubeconfig(cluster: DevCluster, path: Path) -> Path:
    token = cluster.kubectl("create", "token", "tritonop", "-n", "tritonop-system", "--duration=2h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "dev", "cluster": {"server": cluster.server, "certificate-authority": str(cluster.certs.ca_cert)}}
        ],
        "users": [{"name": "tritonop", "user": {"token": token}}],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "tritonop"}}],
        "current-context": "dev",
    }
    path.write_text(json.dumps(config))
    return path


def test_operator_runs_under_its_service_account_in_a_restricted_namespace(
    cluster: DevCluster,
    crd: None,
    api: client.ApiClient,
    core: client.CoreV1Api,
    restricted_namespace: str,
    tmp_path: Path,
) -> None:
    namespace = restricted_namespace
    # Install as a user would; the operator's own pod is admitted under `restricted` too.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO_ROOT / "manifests"))
    wait_until(
        "the operator pod admitted in tritonop-system",
        lambda: bool(
            core.list_namespaced_pod("tritonop-system", label_selector="app.kubernetes.io/name=tritonop").items
        ),
        timeout=60,
    )
    # A pod that breaks the restricted level is refused there: admission is really enforcing.
    refused = cluster.kubectl("run", "plain", "-n", namespace, "--image=busybox", "--restart=Never", check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr, refused.stderr

    # The model repository on a PersistentVolume (hostPath volumes are not allowed under `restricted`).
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pvc_objects(namespace)))
    wait_until(
        "PVC bound",
        lambda: core.read_namespaced_persistent_volume_claim("models", namespace).status.phase == "Bound",
        timeout=60,
    )

    log_path = tmp_path / "operator.log"
    kubeconfig = token_kubeconfig(cluster, tmp_path / "kubeconfig")
    running = start_operator(cluster, namespace, log_path, kubeconfig=kubeconfig)
    process, metrics_port = running.process, running.metrics_port
    try:
        spec = sleepy_spec(replicas=2)
        spec["model"]["repository"] = "pvc://models/model_repo"
        apply_md(cluster, namespace, "sleepy", spec)
        wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=120)
        assert {infer_version(p.status.pod_ip) for p in md_pods(core, namespace, "sleepy")} == {2}

        spec["model"]["version"] = 3
        apply_md(cluster, namespace, "sleepy", spec)
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
        assert md["status"]["activeVersion"] == 3
        cluster.kubectl("scale", "md/sleepy", "-n", namespace, "--replicas=1")
        wait_until(
            "scaled to one, PDB gone",
            lambda: (
                len(md_pods(core, namespace, "sleepy")) == 1
                and not client.PolicyV1Api(api).list_namespaced_pod_disruption_budget(namespace).items
            ),
            60,
        )
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.kind=ModelDeployment").items
        assert {"Created", "LoadingVersion", "VersionSwitched"} <= {event.reason for event in events}
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'tritonop_reconciles_total{result="success"}' in metrics
        assert 'code="403"' not in metrics, "a request was forbidden: the ClusterRole lacks a rule"
    finally:
        stop_pid(process.pid)
        log_text = log_path.read_text()
        cluster.kubectl("delete", "md", "--all", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"models-{namespace}", "--wait=false", check=False)
    assert not refused_by_rbac(log_text), log_text[-3000:]


def pvc_objects(namespace: str, host_path: Path = MODEL_REPO.parent) -> list[dict[str, Any]]:
    return host_path_claim(namespace, "models", f"models-{namespace}", host_path, "ReadOnlyMany")


def test_model_files_are_verified_where_the_bytes_are(
    cluster: DevCluster,
    crd: None,
    api: client.ApiClient,
    core: client.CoreV1Api,
    restricted_namespace: str,
    tmp_path: Path,
) -> None:
    """The repository on a PersistentVolume the operator cannot read: verification Jobs mount it
    as the servers do. A good version serves as Verified, a tampered or incomplete one is never
    loaded (the old version keeps serving), one without a manifest serves as Unverified."""
    namespace = restricted_namespace
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO_ROOT / "manifests"))
    repository = tmp_path / "repository"
    shutil.copytree(MODEL_REPO / "sleepy", repository / "sleepy")
    shutil.copytree(MODEL_REPO / "sleepy" / "3", repository / "sleepy" / "4")
    for version in (2, 3, 4):
        tools.write_manifest(repository / "sleepy" / str(version))
    tampered = repository / "sleepy" / "3" / "model.py"
    tampered.write_text(tampered.read_text() + "\n# changed after the manifest was written\n")
    (repository / "sleepy" / "4" / "model.py").unlink()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pvc_objects(namespace, repository)))
    wait_until(
        "PVC bound",
        lambda: core.read_namespaced_persistent_volume_claim("models", namespace).status.phase == "Bound",
        timeout=60,
    )
    log_path = tmp_path / "operator.log"
    running = start_operator(cluster, namespace, log_path, kubeconfig=token_kubeconfig(cluster, tmp_path / "kc"))
    try:
        spec = sleepy_spec(replicas=1)
        spec["model"]["repository"] = "pvc://models"
        apply_md(cluster, namespace, "sleepy", spec)
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=120)
        integrity = md["status"]["integrity"]
        assert integrity["result"] == "Verified" and integrity["checkedBy"].startswith("job/sleepy-verify-2-")
        assert md_condition(md, "RepositoryValid")["reason"] == "Verified"
        (pod,) = md_pods(core, namespace, "sleepy")
        assert infer_version(pod.status.pod_ip) == 2

        spec["model"]["version"] = 3
        apply_md(cluster, namespace, "sleepy", spec)
        md = wait_for_condition(api, namespace, "sleepy", "RepositoryValid", "False", "ChecksumMismatch", 120)
        assert "pvc://models/sleepy/3/model.py: sha256" in md_condition(md, "RepositoryValid")["message"]
        assert md_condition(md, "ModelLoaded")["reason"] == "BlockedByRepository"
        assert md["status"]["activeVersion"] == 2 and infer_version(pod.status.pod_ip) == 2
        warnings = [e for e in events_for(core, namespace, "sleepy") if e.type == "Warning"]
        assert any(e.reason == "ChecksumMismatch" and "model.py" in e.message for e in warnings), warnings

        spec["model"]["version"] = 4
        apply_md(cluster, namespace, "sleepy", spec)
        wait_until(
            "version 4 refused: a listed file is missing",
            lambda: (
                "listed in SHA256SUMS.json but missing"
                in md_condition(get_md(api, namespace, "sleepy"), "RepositoryValid")["message"]
            ),
            120,
        )
        assert infer_version(pod.status.pod_ip) == 2

        spec["model"]["version"] = 1
        apply_md(cluster, namespace, "sleepy", spec)
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
        assert md_condition(md, "RepositoryValid")["reason"] == "Unverified"
        assert "has no SHA256SUMS.json" in md_condition(md, "RepositoryValid")["message"]
        assert md["status"]["integrity"]["result"] == "Unverified"
        assert infer_version(pod.status.pod_ip) == 1
        assert [p.metadata.name for p in md_pods(core, namespace, "sleepy")] == [pod.metadata.name]  # in place

        jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
        assert sorted(j.metadata.name.split("-")[2] for j in jobs) == ["1", "2", "3", "4"]
        # The operator itself never read a model byte: the Jobs did, where the bytes are.
        assert scrape_metrics(running.metrics_port)["tritonop_repository_hashed_bytes_total"] == 0
    finally:
        stop_pid(running.process.pid)
        log_text = log_path.read_text()
        cluster.kubectl("delete", "md", "--all", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"models-{namespace}", "--wait=false", check=False)
    assert not refused_by_rbac(log_text), log_text[-3000:]
