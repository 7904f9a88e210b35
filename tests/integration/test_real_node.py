"""A real node next to the kwok nodes: kubelet, containerd 2.x, runc, CNI bridge and kube-proxy
(nftables) run real containers; a Service's ClusterIP routes to them (docs/real-node.md).

The node needs root (network namespaces, cgroups, mounts) and Debian's nftables, socat and
busybox-static; the tests are skipped, with the reason, where those are missing. A node already
up (python -m devcluster node-up) is reused and left running.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from devcluster import DevCluster, versions
from devcluster.cluster import SERVICE_CIDR, kubectl_binary, wait_until
from devcluster.realnode import BUSYBOX_IMAGE, TAINT_KEY, RealNode

from .real_node_helpers import (
    NEEDS_ROOT_AND_TOOLS,
    ON_REAL_NODE,
    helm_operator,
    skip_without_image_tools,
)

pytestmark = NEEDS_ROOT_AND_TOOLS


def real_node_pod(metadata: client.V1ObjectMeta, container: client.V1Container, **spec: Any) -> client.V1Pod:
    """A pod of one container on the real node only (its selector and its taint's toleration);
    the image is imported into the node's containerd, never pulled (no registry)."""
    container.image_pull_policy = "Never"
    return client.V1Pod(
        metadata=metadata,
        spec=client.V1PodSpec(
            node_selector={"tritonop.dev/node-kind": "real"},
            tolerations=[client.V1Toleration(key=TAINT_KEY, operator="Exists", effect="NoSchedule")],
            containers=[container],
            **spec,
        ),
    )


def web_pod(name: str, app: str) -> client.V1Pod:
    """busybox httpd on 8080 answering "hello from <pod name>", on the real node only."""
    script = f"echo hello from {name} > /www/index.html && exec httpd -f -v -p 8080 -h /www"
    httpd = client.V1Container(
        name="httpd",
        image=BUSYBOX_IMAGE,
        command=["/bin/sh", "-c", script],
        ports=[client.V1ContainerPort(container_port=8080)],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/index.html", port=8080), period_seconds=1
        ),
    )
    return real_node_pod(client.V1ObjectMeta(name=name, labels={"app": app}), httpd, termination_grace_period_seconds=2)


def get_in_netns(node: RealNode, url: str, netns: str | None = None) -> str:
    """GET url from inside a network namespace (the clients' by default), a new connection each time."""
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode(), end='')"
    argv = node.in_netns(sys.executable, "-c", code, netns=netns or node.client_netns)
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def create_web(core: client.CoreV1Api, namespace: str, pods: int) -> tuple[list[str], str]:
    app = f"web-{uuid.uuid4().hex[:6]}"
    names = [f"{app}-{index}" for index in range(pods)]
    for name in names:
        core.create_namespaced_pod(namespace, web_pod(name, app))
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name=app),
        spec=client.V1ServiceSpec(selector={"app": app}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
    )
    cluster_ip = core.create_namespaced_service(namespace, service).spec.cluster_ip
    return names, cluster_ip


def wait_ready(core: client.CoreV1Api, namespace: str, names: list[str]) -> list[client.V1Pod]:
    def ready() -> bool:
        for name in names:
            pod = core.read_namespaced_pod(name, namespace)
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if conditions.get("Ready") != "True":
                return False
        return True

    wait_until(f"pods {names} Ready (probed by the kubelet)", ready, timeout=90, interval=0.5)
    return [core.read_namespaced_pod(name, namespace) for name in names]


def test_real_node_registers_next_to_kwok_nodes(real_node: RealNode, core: client.CoreV1Api) -> None:
    node = core.read_node(real_node.name)
    info = node.status.node_info
    assert info.kubelet_version == versions.KUBERNETES
    assert info.container_runtime_version == f"containerd://{versions.CONTAINERD.lstrip('v')}"
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == real_node.node_ip
    assert any(t.key == TAINT_KEY and t.effect == "NoSchedule" for t in node.spec.taints or [])
    kwok_nodes = [n for n in core.list_node().items if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node")]
    assert kwok_nodes, "the kwok nodes are still there"


def test_pod_runs_and_service_routes_through_cluster_ip(
    real_node: RealNode, cluster: DevCluster, core: client.CoreV1Api, namespace: str
) -> None:
    started = time.monotonic()
    (name,), cluster_ip = create_web(core, namespace, pods=1)
    (pod,) = wait_ready(core, namespace, [name])
    ready_after = time.monotonic() - started
    assert pod.spec.node_name == real_node.name
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(real_node.pod_cidr)
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(SERVICE_CIDR)
    # The EndpointSlice controller publishes the pod (kwok's loopback pod IPs are refused there).
    discovery = client.DiscoveryV1Api(core.api_client)

    def published() -> bool:
        slices = discovery.list_namespaced_endpoint_slice(namespace).items
        return any(pod.status.pod_ip in e.addresses and e.conditions.ready for s in slices for e in s.endpoints or [])

    wait_until("the pod in the Service's EndpointSlice", published, timeout=30)
    # From a client network namespace, through kube-proxy's DNAT: retried while kube-proxy
    # programs the new endpoint (it rejects a ClusterIP with no endpoints).
    answers: list[str] = []

    def answered() -> bool:
        answers.append(get_in_netns(real_node, f"http://{cluster_ip}/index.html"))
        return True

    wait_until(f"an answer through ClusterIP {cluster_ip}", answered, timeout=30, interval=0.5)
    assert answers[-1] == f"hello from {name}\n"
    print(f"pod Ready {ready_after:.1f}s after create; answered through {cluster_ip}")
    # From the node itself (kube-proxy's output hook) and from inside a pod (hairpin: the pod
    # reaches itself through its own Service).
    assert get_in_netns(real_node, f"http://{cluster_ip}/index.html", netns=real_node.netns) == f"hello from {name}\n"
    request = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 80"
    exec_result = subprocess.run(
        [
            kubectl_binary(),
            f"--kubeconfig={cluster.kubeconfig}",
            "exec",
            "-n",
            namespace,
            name,
            "--",
            "/bin/sh",
            "-c",
            request,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exec_result.returncode == 0, exec_result.stderr
    assert exec_result.stdout.startswith("HTTP/1.1 200 OK") and f"hello from {name}" in exec_result.stdout
    # The apiserver reaches the kubelet for logs: httpd -v logged the requests above.
    logs = core.read_namespaced_pod_log(name, namespace)
    assert "response:200" in logs


def test_service_balances_new_connections_across_pods(
    real_node: RealNode, core: client.CoreV1Api, namespace: str
) -> None:
    names, cluster_ip = create_web(core, namespace, pods=2)
    wait_ready(core, namespace, names)
    expected = {f"hello from {name}\n" for name in names}
    seen: set[str] = set()

    def both_endpoints_answer() -> bool:
        # kube-proxy picks an endpoint at random per new connection; until it has both, only one answers.
        for _ in range(10):
            seen.add(get_in_netns(real_node, f"http://{cluster_ip}/index.html"))
        return seen == expected

    wait_until("answers from both pods through the ClusterIP", both_endpoints_answer, timeout=60, interval=0.5)
    assert seen == expected


def test_kubelet_runs_liveness_probes_and_restarts_the_container(
    real_node: RealNode, core: client.CoreV1Api, namespace: str
) -> None:
    # httpd serves no /healthz: the kubelet's liveness probe fails, it kills the container
    # (SIGTERM within the grace period) and runc starts it again.
    pod = web_pod("unhealthy", "unhealthy")
    container = pod.spec.containers[0]  # type: ignore[union-attr]
    container.liveness_probe = client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/healthz", port=8080), period_seconds=1, failure_threshold=2
    )
    core.create_namespaced_pod(namespace, pod)

    def restarted() -> bool:
        status = core.read_namespaced_pod("unhealthy", namespace).status
        statuses = (status.container_statuses if status else None) or []
        return bool(statuses) and statuses[0].restart_count >= 1

    wait_until("a restart after failed liveness probes", restarted, timeout=90, interval=1)
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=unhealthy").items
    assert any("Liveness probe failed" in (event.message or "") for event in events)


def test_pod_reaches_the_apiserver_through_the_kubernetes_service(
    real_node: RealNode, core: client.CoreV1Api, namespace: str
) -> None:
    # What the operator will do from its pod: KUBERNETES_SERVICE_HOST (198.19.0.1, a ClusterIP)
    # with the pod's projected ServiceAccount token, verified against the mounted CA.
    core.create_namespaced_pod(namespace, web_pod("caller", "caller"))
    (pod,) = wait_ready(core, namespace, ["caller"])
    secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
    token, ca = (
        subprocess.run(
            [
                kubectl_binary(),
                f"--kubeconfig={real_node.cluster.kubeconfig}",
                "exec",
                "-n",
                namespace,
                "caller",
                "--",
                "cat",
                f"{secrets}/{name}",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        for name in ("token", "ca.crt")
    )
    env = subprocess.run(
        [
            kubectl_binary(),
            f"--kubeconfig={real_node.cluster.kubeconfig}",
            "exec",
            "-n",
            namespace,
            "caller",
            "--",
            "/bin/sh",
            "-c",
            "echo $KUBERNETES_SERVICE_HOST",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert env == "198.19.0.1"
    ca_file = real_node.dir / f"ca-{namespace}.crt"
    ca_file.write_text(ca)
    code = (
        "import ssl, sys, urllib.error, urllib.request\n"
        f"context = ssl.create_default_context(cafile={str(ca_file)!r})\n"
        f"request = urllib.request.Request('https://{env}/api/v1/namespaces/{namespace}/pods',"
        f" headers={{'Authorization': 'Bearer ' + {token!r}}})\n"
        "try:\n"
        "    urllib.request.urlopen(request, context=context, timeout=10)\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code, error.read().decode())\n"
    )
    container_id = pod.status.container_statuses[0].container_id  # type: ignore[union-attr,index]
    argv = ["nsenter", f"--net={real_node.pod_netns(container_id)}", "--", sys.executable, "-c", code]
    try:
        answer = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout
    finally:
        ca_file.unlink()
    # Authenticated as the pod's ServiceAccount (a bad token would be 401), refused by RBAC.
    assert answer.startswith("403 "), answer
    assert f"system:serviceaccount:{namespace}:default" in answer


TRITON_CLIENTS = """
import http.client, json, sys
import numpy as np
import tritonclient.grpc as grpcclient

host = sys.argv[1]
body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
connection = http.client.HTTPConnection(host, 8000, timeout=10)  # one connection, kept alive
http_outputs = []
for _ in range(10):
    connection.request("POST", "/v2/models/sleepy/infer", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    http_outputs.append((response.status, json.loads(response.read())["outputs"][0]["data"]))
grpc = grpcclient.InferenceServerClient(f"{host}:8001")
tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
result = grpc.infer("sleepy", [tensor])
print(json.dumps({"http": http_outputs, "grpc": result.as_numpy("OUTPUT0").tolist()}))
"""


def test_triton_container_serves_through_the_service_with_keep_alive_http_and_grpc(
    real_node: RealNode, core: client.CoreV1Api, namespace: str
) -> None:
    # The CPU Triton image (Debian base from mmdebstrap + the pytriton wheel's tritonserver) is
    # built once and cached; the first run takes about two minutes more.
    skip_without_image_tools(real_node)
    image = real_node.triton_image()
    model_repo = Path(__file__).resolve().parents[2] / "model_repo"
    tritonserver = client.V1Container(
        name="tritonserver",
        image=image,
        command=["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", "--load-model=sleepy"],
        ports=[client.V1ContainerPort(container_port=port) for port in (8000, 8001, 8002)],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/v2/health/ready", port=8000), period_seconds=1
        ),
        volume_mounts=[client.V1VolumeMount(name="models", mount_path="/models", read_only=True)],
    )
    models = client.V1Volume(
        name="models", host_path=client.V1HostPathVolumeSource(path=str(model_repo), type="Directory")
    )
    pod = real_node_pod(
        client.V1ObjectMeta(name="triton", labels={"app": "triton"}),
        tritonserver,
        termination_grace_period_seconds=5,
        volumes=[models],
    )
    started = time.monotonic()
    core.create_namespaced_pod(namespace, pod)
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="triton"),
        spec=client.V1ServiceSpec(
            selector={"app": "triton"},
            ports=[
                client.V1ServicePort(name=name, port=port, target_port=port)
                for name, port in (("http", 8000), ("grpc", 8001))
            ],
        ),
    )
    cluster_ip = core.create_namespaced_service(namespace, service).spec.cluster_ip  # type: ignore[union-attr]
    wait_ready(core, namespace, ["triton"])
    print(f"Triton container Ready {time.monotonic() - started:.1f}s after create")
    answers: list[dict[str, Any]] = []

    def served() -> bool:
        argv = real_node.in_netns(sys.executable, "-c", TRITON_CLIENTS, cluster_ip, netns=real_node.client_netns)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        answers.append(json.loads(done.stdout))
        return True

    # retried while kube-proxy programs the new endpoint
    wait_until("inference through the Service", served, timeout=30, interval=1)
    assert answers[-1]["http"] == [[200, [2.0, 4.0, 6.0, 8.0]]] * 10
    assert answers[-1]["grpc"] == [[2.0, 4.0, 6.0, 8.0]]


def test_operator_image_runs_and_reaches_the_apiserver_in_cluster(
    real_node: RealNode, core: client.CoreV1Api, namespace: str
) -> None:
    # The operator image (operator/Dockerfile's recipe on the Debian base, built here): its
    # entrypoint, its user, and the in-cluster config the operator uses from its pod.
    skip_without_image_tools(real_node)
    image = real_node.operator_image()
    check = (
        "id -u; tritonop --version; python3 -c 'from kubernetes import client, config; "
        "config.load_incluster_config(); print(client.VersionApi().get_code().git_version)'"
    )
    checker = client.V1Container(name="check", image=image, command=["/bin/sh", "-c", check])
    pod = real_node_pod(client.V1ObjectMeta(name="operator-image"), checker, restart_policy="Never")
    core.create_namespaced_pod(namespace, pod)

    def finished() -> bool:
        status = core.read_namespaced_pod("operator-image", namespace).status
        return status is not None and status.phase in ("Succeeded", "Failed")

    wait_until("the operator image's pod to finish", finished, timeout=90, interval=1)
    logs = core.read_namespaced_pod_log("operator-image", namespace).split()
    assert core.read_namespaced_pod("operator-image", namespace).status.phase == "Succeeded", logs  # type: ignore[union-attr]
    assert logs[0] == "1000"  # USER 1000:1000, as in operator/Dockerfile
    assert logs[-1] == versions.KUBERNETES


def test_helm_install_serves_a_model_deployment_on_the_real_node(
    real_node: RealNode, cluster: DevCluster, crd: None, api: client.ApiClient, unwatched_namespace: str
) -> None:
    # The product as a user installs it: `helm install` runs the operator from its image (two
    # replicas, leader election, its ServiceAccount, the restricted Pod Security level); a
    # ModelDeployment's verification Job (operator image) and Triton replicas (CPU Triton image)
    # run as containers; a client calls the model through the Service. The operator watches only
    # this test's namespace (x-*: no other test's operator does).
    from .helpers import apply_md, sleepy_spec, wait_for_condition

    started = time.monotonic()
    with helm_operator(real_node, api, unwatched_namespace):
        installed = time.monotonic() - started
        spec = sleepy_spec(server={"gpus": 0, "image": real_node.triton_image(), **ON_REAL_NODE}, replicas=2)
        apply_md(cluster, unwatched_namespace, "sleepy", spec)
        wait_for_condition(api, unwatched_namespace, "sleepy", "Ready", "True", timeout=120)
        ready = time.monotonic() - started
        print(f"helm install {installed:.1f}s; ModelDeployment Ready {ready:.1f}s after helm install began")
        assert ready <= 60, "the issue's goal: helm install to a Ready ModelDeployment in 60 s (images cached)"
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(unwatched_namespace).items
        assert pods and all(pod.spec.node_name == real_node.name for pod in pods)  # type: ignore[union-attr]
        cluster_ip = core.read_namespaced_service("sleepy", unwatched_namespace).spec.cluster_ip  # type: ignore[union-attr]
        argv = real_node.in_netns(sys.executable, "-c", TRITON_CLIENTS, cluster_ip, netns=real_node.client_netns)
        answer: dict[str, Any] = {}

        def served() -> bool:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            answer.update(json.loads(done.stdout))
            return True

        wait_until("inference through the ModelDeployment's Service", served, timeout=30, interval=1)
        assert answer["http"] == [[200, [2.0, 4.0, 6.0, 8.0]]] * 10
        assert answer["grpc"] == [[2.0, 4.0, 6.0, 8.0]]
