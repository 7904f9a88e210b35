"""ModelDeployment end to end: real operator process, real API server, real Triton at pod IPs."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from tritonop.api.status import ModelDeploymentStatus

from .conftest import OperatorProcess
from .helpers import (
    MODEL_REPO,
    apply_md,
    events_for,
    get_md,
    infer_version,
    md_condition,
    md_pods,
    sleepy_spec,
    wait_for_condition,
)

pytestmark = pytest.mark.integration


def get_columns(cluster: DevCluster, namespace: str, name: str) -> dict[str, str]:
    output = cluster.kubectl("get", "md", name, "-n", namespace).stdout.splitlines()
    header, row = output[0].split(), output[1].split()
    # REASON may be empty: align by the header's column starts.
    starts = [output[0].index(column) for column in header]
    values = [output[1][start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
    assert row[0] == name
    return dict(zip(header, values, strict=True))


def test_apply_serves_the_model_on_gpu_nodes(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")

    status = md["status"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["activeVersion"] == 2 and status["targetVersion"] == 2
    assert status["endpoint"] == {"http": f"sleepy.{namespace}.svc:8000", "grpc": f"sleepy.{namespace}.svc:8001"}
    for kind in ("RepositoryValid", "Scheduled", "ModelLoaded"):
        assert md_condition(md, kind)["status"] == "True", md_condition(md, kind)
    assert md_condition(md, "Progressing")["status"] == "False"

    columns = get_columns(cluster, namespace, "sleepy")
    assert columns["READY"] == "2/2" and columns["MODEL"] == "sleepy" and columns["VERSION"] == "2"
    assert columns["REASON"] == ""

    pods = md_pods(core, namespace, "sleepy")
    assert len(pods) == 2
    for pod in pods:
        node = core.read_node(pod.spec.node_name)
        assert node.metadata.labels.get("nvidia.com/gpu.present") == "true"
        assert infer_version(pod.status.pod_ip) == 2

    apps = client.AppsV1Api(api)
    deployment = apps.read_namespaced_deployment("sleepy", namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert "--model-control-mode=explicit" in container.args
    assert container.readiness_probe.http_get.path == "/v2/models/sleepy/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ModelDeployment", "sleepy", True)
    assert client.CoreV1Api(api).read_namespaced_service("sleepy", namespace).spec.ports[0].port == 8000
    assert client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("sleepy", namespace).spec.max_unavailable == 1
    reasons = {event.reason for event in events_for(core, namespace, "sleepy")}
    assert {"Created", "LoadingVersion", "Serving"} <= reasons


def test_operator_never_writes_spec_or_kopf_bookkeeping(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    managers = {(entry["manager"], entry.get("subresource", "")) for entry in md["metadata"]["managedFields"]}
    operator_entries = {entry for entry in managers if entry[0] == "tritonop"}
    assert operator_entries == {("tritonop", "status")}, managers
    assert md["metadata"]["generation"] == 1
    assert not md["metadata"].get("finalizers")
    assert not [key for key in md["metadata"].get("annotations", {}) if "kopf" in key]
    assert not [key for key in md["status"] if key not in ModelDeploymentStatusKeys]


# The one list of status fields: the model that also generates the CRD's status schema.
ModelDeploymentStatusKeys = {field.alias or name for name, field in ModelDeploymentStatus.model_fields.items()}


def test_hand_edits_to_the_deployment_are_reverted(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    apps = client.AppsV1Api(api)
    original = apps.read_namespaced_deployment("sleepy", namespace).spec.template.spec.containers[0]
    patch = [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "attacker/triton:evil"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--model-control-mode=poll"},
    ]
    cluster.kubectl("patch", "deployment", "sleepy", "-n", namespace, "--type=json", "-p", json.dumps(patch))

    def reverted() -> bool:
        live = apps.read_namespaced_deployment("sleepy", namespace)
        container = live.spec.template.spec.containers[0]
        return live.spec.replicas == 1 and container.image == original.image and container.args == original.args

    wait_until("the hand edit reverted", reverted, timeout=30)
    # The Event follows the revert (events are posted at the end of the reconcile).
    wait_until(
        "a DriftReverted event",
        lambda: "DriftReverted" in {event.reason for event in events_for(core, namespace, "sleepy")},
        timeout=30,
    )


def test_scale_subresource(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    policy = client.PolicyV1Api(api)
    assert not policy.list_namespaced_pod_disruption_budget(namespace).items

    cluster.kubectl("scale", "md/sleepy", "-n", namespace, "--replicas=3")
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    wait_until("3 ready replicas", lambda: get_md(api, namespace, "sleepy")["status"]["readyReplicas"] == 3, 60)
    assert {infer_version(pod.status.pod_ip) for pod in md_pods(core, namespace, "sleepy")} == {2}
    assert md["spec"]["replicas"] == 3
    assert policy.read_namespaced_pod_disruption_budget("sleepy", namespace).spec.max_unavailable == 1
    scale = cluster.kubectl(
        "get", "--raw", f"/apis/tritonop.dev/v1alpha1/namespaces/{namespace}/modeldeployments/sleepy/scale"
    )
    assert json.loads(scale.stdout)["status"]["replicas"] == 3

    cluster.kubectl("scale", "md/sleepy", "-n", namespace, "--replicas=1")
    wait_until("scaled down to 1", lambda: len(md_pods(core, namespace, "sleepy")) == 1, timeout=60)
    wait_until("PDB removed", lambda: not policy.list_namespaced_pod_disruption_budget(namespace).items, timeout=30)


def test_unschedulable_gpu_request_is_reported(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, namespace: str
) -> None:
    apply_md(cluster, namespace, "greedy", sleepy_spec(replicas=1, server={"gpus": 9}))
    md = wait_for_condition(api, namespace, "greedy", "Scheduled", "False", "InsufficientGPU")
    assert "Insufficient nvidia.com/gpu" in md_condition(md, "Scheduled")["message"]
    assert md_condition(md, "Ready")["reason"] == "InsufficientGPU"
    assert get_columns(cluster, namespace, "greedy")["REASON"] == "InsufficientGPU"


def test_deleting_the_model_deployment_removes_what_it_owned(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    ips = [pod.status.pod_ip for pod in md_pods(core, namespace, "sleepy")]
    cluster.kubectl("delete", "md", "sleepy", "-n", namespace, "--wait=true", "--timeout=30s")
    apps, policy = client.AppsV1Api(api), client.PolicyV1Api(api)

    def all_gone() -> bool:
        return not (
            apps.list_namespaced_deployment(namespace).items
            or core.list_namespaced_service(namespace).items
            or core.list_namespaced_secret(namespace, label_selector="app.kubernetes.io/managed-by=tritonop").items
            or policy.list_namespaced_pod_disruption_budget(namespace).items
            or md_pods(core, namespace, "sleepy")
        )

    wait_until("every owned object garbage-collected", all_gone, timeout=60)

    def servers_stopped() -> bool:
        for ip in ips:
            try:
                infer_version(ip, timeout=1)
                return False
            except OSError:
                continue
        return True

    wait_until("the Triton servers stopped", servers_stopped, timeout=60)


def test_missing_repository_path_is_a_condition_and_an_event(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    spec = sleepy_spec(replicas=1)
    spec["model"]["repository"] = "file:///nonexistent/models"
    apply_md(cluster, namespace, "lost", spec)
    md = wait_for_condition(api, namespace, "lost", "RepositoryValid", "False", "RepositoryNotFound")
    assert "/nonexistent/models does not exist" in md_condition(md, "RepositoryValid")["message"]
    assert md_condition(md, "Ready")["reason"] == "RepositoryNotFound"
    assert "RepositoryNotFound" in {event.reason for event in events_for(core, namespace, "lost")}


BROKEN_MODEL = textwrap.dedent(
    """
    class TritonPythonModel:
        def initialize(self, args):
            raise RuntimeError("weights are corrupt: checksum 1234 expected")
    """
)


def test_model_that_fails_to_load_reports_tritons_message(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "config.pbtxt").write_text((MODEL_REPO / "sleepy" / "config.pbtxt").read_text())
    (repository / "broken" / "1" / "model.py").write_text(BROKEN_MODEL)
    tmp_path.chmod(0o755)
    spec = {"model": {"name": "broken", "repository": f"file://{repository}"}, "replicas": 1}
    apply_md(cluster, namespace, "broken", spec)
    md = wait_for_condition(api, namespace, "broken", "ModelLoaded", "False", "LoadFailed")
    message = md_condition(md, "ModelLoaded")["message"]
    assert "weights are corrupt: checksum 1234 expected" in message, message
    assert md_condition(md, "Ready")["reason"] == "LoadFailed"


def test_server_that_cannot_start_keeps_the_old_replicas_serving(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    serving = md_pods(core, namespace, "sleepy")[0]

    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1, server={"extraArgs": ["--no-such-flag=1"]}))
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "False", "CrashLoopBackOff", timeout=120)
    assert "tritonserver exited" in md_condition(md, "Ready")["message"]
    # The replica that was serving still serves: the broken one never became ready.
    assert infer_version(serving.status.pod_ip) == 2
    assert core.read_namespaced_pod(serving.metadata.name, namespace).metadata.deletion_timestamp is None

    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=120)


def test_in_place_version_switch_keeps_pods(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    before = {pod.metadata.uid: pod.status.pod_ip for pod in md_pods(core, namespace, "sleepy")}

    apply_md(
        cluster, namespace, "sleepy", {**sleepy_spec(replicas=2), "model": {**sleepy_spec()["model"], "version": 3}}
    )
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")
    assert (md["status"]["activeVersion"], md["status"]["previousVersion"]) == (3, 2)
    pods = md_pods(core, namespace, "sleepy")
    assert {pod.metadata.uid: pod.status.pod_ip for pod in pods} == before
    assert all(pod.status.container_statuses[0].restart_count == 0 for pod in pods)
    assert {infer_version(ip) for ip in before.values()} == {3}


def test_idle_reconciles_make_no_write_calls(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    # Idle means idle: earlier tests' namespaces must have finished terminating.
    wait_until(
        "other test namespaces gone",
        lambda: not [ns for ns in core.list_namespace().items if ns.status.phase == "Terminating"],
        timeout=120,
    )
    # ...and the operator has seen them go: it manages this one ModelDeployment and no other.
    wait_until("only this ModelDeployment managed", lambda: operator.metrics()["tritonop_modeldeployments"] == 1, 60)
    reconciles_key = 'tritonop_reconciles_total{result="success"}'
    # Let the last events settle, then watch two full resync periods (5 s each in tests).
    wait_until("a resync", lambda: operator.metrics()[reconciles_key] > 0, timeout=10)
    settled = operator.metrics()[reconciles_key]
    wait_until("one more reconcile", lambda: operator.metrics()[reconciles_key] > settled, timeout=15)
    writes, reconciles = operator.write_requests(), operator.metrics()[reconciles_key]
    wait_until("two resync periods", lambda: operator.metrics()[reconciles_key] >= reconciles + 2, timeout=30)
    assert operator.write_requests() == writes


def test_torchscript_model_from_the_repository_serves(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    """model_repo/mlp is exported from PyTorch by `make model-repo`; Triton serves the TorchScript file."""
    spec = {"model": {"name": "mlp", "repository": f"file://{MODEL_REPO}", "version": 3}, "replicas": 1}
    apply_md(cluster, namespace, "mlp", spec)
    wait_for_condition(api, namespace, "mlp", "Ready", "True", timeout=120)
    ip = md_pods(core, namespace, "mlp")[0].status.pod_ip
    body = {"inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 0, 0, 0, 0]}]}
    request = urllib.request.Request(
        f"http://{ip}:8000/v2/models/mlp/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    assert answer["model_version"] == "3"
    output = answer["outputs"][0]
    assert output["shape"] == [2, 3]
    assert abs(sum(output["data"][:3]) - 1.0) < 1e-4  # softmax over 3 classes
