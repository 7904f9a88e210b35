"""The dev cluster is a real Kubernetes: real apiserver, scheduler, controllers, RBAC,
and real tritonserver processes at the pods' loopback IPs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from devcluster import DevCluster
from devcluster.cluster import kubectl_binary, pid_alive, pod_cidr, wait_until

pytestmark = pytest.mark.integration

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.devcluster.test"},
    "spec": {
        "group": "devcluster.test",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                            "status": {"type": "object", "properties": {"observed": {"type": "integer"}}},
                        },
                    }
                },
            }
        ],
    },
}


def deployment(name: str, container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "volumes": volumes or []},
            },
        },
    }


def gpu_container(gpus: int) -> dict[str, Any]:
    return {
        "name": "main",
        "image": "registry.invalid/sleeper:1",
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "100m"}},
    }


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def has_condition(pod: client.V1Pod, kind: str, status: str | None = None, reason: str | None = None) -> bool:
    found = condition(pod, kind)
    return found is not None and status in (None, found.status) and reason in (None, found.reason)


def is_ready(pod: client.V1Pod) -> bool:
    return has_condition(pod, "Ready", status="True")


def wait_for_the_pod(
    core: client.CoreV1Api, namespace: str, app: str, what: str, check: Callable[[client.V1Pod], bool], timeout: float
) -> client.V1Pod:
    """Wait until the Deployment's one pod passes check, and return it."""

    def passes() -> bool:
        pods = pods_of(core, namespace, app)
        return len(pods) == 1 and check(pods[0])

    wait_until(what, passes, timeout=timeout)
    return pods_of(core, namespace, app)[0]


def test_versions_are_real(cluster: DevCluster, api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == cluster.state.versions["kubernetes"]  # type: ignore[union-attr]
    assert (info.major, info.minor) == ("1", "37")


def test_crd_round_trip(cluster: DevCluster, api: client.ApiClient, namespace: str) -> None:
    extensions = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.devcluster.test", "--timeout=30s")
    try:
        stream = watch.Watch()
        seen: list[tuple[str, dict[str, Any]]] = []
        body = {"apiVersion": "devcluster.test/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
        created = custom.create_namespaced_custom_object("devcluster.test", "v1", namespace, "widgets", body)
        custom.patch_namespaced_custom_object_status(
            "devcluster.test", "v1", namespace, "widgets", "w1", {"status": {"observed": 3}}
        )
        for event in stream.stream(
            custom.list_namespaced_custom_object,
            "devcluster.test",
            "v1",
            namespace,
            "widgets",
            resource_version=created["metadata"]["resourceVersion"],
            timeout_seconds=20,
        ):
            seen.append((event["type"], event["object"]))
            if event["object"].get("status", {}).get("observed") == 3:
                stream.stop()
        assert seen, "the watch saw no event"
        assert seen[-1][0] == "MODIFIED"
        got = custom.get_namespaced_custom_object("devcluster.test", "v1", namespace, "widgets", "w1")
        assert got["spec"] == {"size": 3}
        assert got["status"] == {"observed": 3}
        # With a status subresource, writes to the main resource leave status alone.
        custom.patch_namespaced_custom_object(
            "devcluster.test", "v1", namespace, "widgets", "w1", {"status": {"observed": 9}}
        )
        got = custom.get_namespaced_custom_object("devcluster.test", "v1", namespace, "widgets", "w1")
        assert got["status"] == {"observed": 3}
    finally:
        extensions.delete_custom_resource_definition("widgets.devcluster.test")


def test_gpu_pod_is_scheduled_on_a_gpu_node_and_becomes_ready(
    cluster: DevCluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("one-gpu", gpu_container(1)))

    def running_and_ready(pod: client.V1Pod) -> bool:
        return pod.status.phase == "Running" and is_ready(pod)

    pod = wait_for_the_pod(core, namespace, "one-gpu", "the one-GPU pod Running and Ready", running_and_ready, 60)
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert pod.status.pod_ip.startswith(pod_cidr(cluster.state_dir).rsplit(".", 2)[0] + ".")


def test_pod_asking_for_too_many_gpus_stays_pending(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("nine-gpus", gpu_container(9)))

    def unschedulable(pod: client.V1Pod) -> bool:
        return has_condition(pod, "PodScheduled", reason="Unschedulable")

    pod = wait_for_the_pod(core, namespace, "nine-gpus", "the 9-GPU pod marked Unschedulable", unschedulable, 60)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    message = condition(pod, "PodScheduled").message
    assert "Insufficient nvidia.com/gpu" in message, message


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("collected", gpu_container(1)))
    wait_until("a pod of the Deployment", lambda: len(pods_of(core, namespace, "collected")) == 1, timeout=60)
    assert len(apps.list_namespaced_replica_set(namespace, label_selector="app=collected").items) == 1

    apps.delete_namespaced_deployment("collected", namespace, propagation_policy="Background")

    def collected() -> bool:
        replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=collected").items
        return not replica_sets and not pods_of(core, namespace, "collected")

    wait_until("ReplicaSet and pods garbage-collected", collected, timeout=60)


def test_rbac_denies_a_service_account_without_rights(cluster: DevCluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    assert token.count(".") == 2, "TokenRequest should return a JWT"
    as_nobody = [
        kubectl_binary(),
        "--kubeconfig=/dev/null",
        f"--server={cluster.server}",
        f"--certificate-authority={cluster.certs.ca_cert}",
        f"--token={token}",
    ]
    denied = subprocess.run([*as_nobody, "get", "pods", "-n", namespace], capture_output=True, text=True)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and f"system:serviceaccount:{namespace}:nobody" in denied.stderr, denied.stderr
    # The token itself is valid: the same identity may do what RBAC grants it.
    cluster.kubectl(
        "create",
        "rolebinding",
        "nobody-view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:nobody",
        "-n",
        namespace,
    )
    wait_until(
        "the RoleBinding to take effect",
        lambda: subprocess.run([*as_nobody, "get", "pods", "-n", namespace], capture_output=True).returncode == 0,
        timeout=30,
    )
    still_denied = subprocess.run([*as_nobody, "get", "secrets", "-n", namespace], capture_output=True, text=True)
    assert still_denied.returncode != 0 and "Forbidden" in still_denied.stderr


ECHO_MODEL = textwrap.dedent(
    """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data * 2)]))
            return responses
    """
)
ECHO_CONFIG = textwrap.dedent(
    """
    backend: "python"
    max_batch_size: 8
    input [{ name: "INPUT0", data_type: TYPE_FP32, dims: [4] }]
    output [{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [4] }]
    """
)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_triton_pod_gets_a_real_triton_at_its_pod_ip(
    cluster: DevCluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    (repository / "echo" / "1").mkdir(parents=True)
    (repository / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (repository / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    os.chmod(tmp_path, 0o755)
    container = {
        "name": "triton",
        "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
        "command": ["tritonserver"],
        "args": ["--model-repository=/models", "--model-control-mode=explicit", "--load-model=echo"],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8000}, "periodSeconds": 1},
    }
    volumes = [{"name": "models", "hostPath": {"path": str(repository), "type": "Directory"}}]
    apps.create_namespaced_deployment(namespace, deployment("triton", container, volumes))
    # Ready comes from the pod runner's real probe of the real server, not from kwok.
    pod = wait_for_the_pod(core, namespace, "triton", "the Triton pod Ready", is_ready, timeout=120)
    ip = pod.status.pod_ip
    with urllib.request.urlopen(f"http://{ip}:8000/v2/health/ready", timeout=5) as response:
        assert response.status == 200
    request = urllib.request.Request(
        f"http://{ip}:8000/v2/models/echo/infer",
        data=json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]

    base = f"{namespace}_{pod.metadata.name}_{pod.metadata.uid}"
    pid = int((cluster.pods_dir / f"{base}.pid").read_text())
    assert pid_alive(pid)
    assert "successfully loaded 'echo'" in (cluster.pods_dir / f"{base}.log").read_text()

    apps.delete_namespaced_deployment("triton", namespace, propagation_policy="Foreground")
    wait_until("the tritonserver process to exit", lambda: not pid_alive(pid), timeout=60)
    wait_until("the pod IP ports to close", lambda: not port_open(ip, 8000) and not port_open(ip, 8002), timeout=30)
    wait_until("the pod to be gone", lambda: not pods_of(core, namespace, "triton"), timeout=60)
    # The runner removes the pid file once terminate() returns, which can be just after the exit.
    wait_until("the pod runner to drop the pid file", lambda: not (cluster.pods_dir / f"{base}.pid").exists(), 10)


def test_cluster_restart_is_fast_and_leaves_nothing_listening(tmp_path: Path) -> None:
    """A second cluster in its own state dir: start from cached binaries, stop, nothing left."""
    other = DevCluster(state_dir=tmp_path / "second", gpu_nodes=1, cpu_nodes=0)
    started = time.monotonic()
    other.up()
    try:
        elapsed = time.monotonic() - started
        assert other.kubectl("get", "nodes", "-o", "name").stdout.split() == ["node/gpu-node-0"]
        state = other.state
        assert state is not None
        pids = dict(state.pids)
        ports = dict(state.ports)
    finally:
        other.down()
    print(f"cached start of a second cluster took {elapsed:.1f}s")
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not [name for name, port in ports.items() if port_open("127.0.0.1", port)]
