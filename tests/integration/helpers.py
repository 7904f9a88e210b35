"""Helpers for integration tests: ModelDeployments, conditions, inference at pod IPs."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPO = REPO_ROOT / "model_repo"
GROUP, VERSION, PLURAL = "tritonop.dev", "v1alpha1", "modeldeployments"


def scrape_metrics(port: int) -> dict[str, float]:
    """A process's Prometheus metrics on 127.0.0.1:port, `name{labels}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def slow_repository(root: Path, model: str, batch_ms: int) -> Path:
    """A repository with one model: sleepy's code, one request per batch, `batch_ms` per batch,
    so one replica serves 1000 / batch_ms requests/s (autoscaling tests and benchmarks)."""
    folder = root / model
    (folder / "1").mkdir(parents=True)
    config = (MODEL_REPO / "sleepy" / "config.pbtxt").read_text()
    config = config.replace("max_batch_size: 8", "max_batch_size: 1").replace(
        'string_value: "20"', f'string_value: "{batch_ms}"'
    )
    (folder / "config.pbtxt").write_text(config)
    (folder / "1" / "model.py").write_text((MODEL_REPO / "sleepy" / "1" / "model.py").read_text())
    root.chmod(0o755)
    return root


def md_manifest(name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": metadata, "spec": spec}


def sleepy_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": "sleepy", "repository": f"file://{MODEL_REPO}", "version": 2}}
    spec.update(overrides)
    return spec


def apply_md(cluster: DevCluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(md_manifest(name, spec)))


def get_md(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def md_condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in md.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def wait_for_condition(
    api: client.ApiClient,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    reason: str | None = None,
    timeout: float = 90,
) -> dict[str, Any]:
    """Wait until the condition has this status (and reason) for the current generation."""

    def matches() -> bool:
        md = get_md(api, namespace, name)
        cond = md_condition(md, kind)
        return (
            cond.get("status") == status
            and (reason is None or cond.get("reason") == reason)
            and cond.get("observedGeneration") == md["metadata"]["generation"]
        )

    try:
        wait_until(f"{kind}={status} ({reason}) on {namespace}/{name}", matches, timeout=timeout)
    except TimeoutError as error:
        md = get_md(api, namespace, name)
        raise AssertionError(f"{error}; status is {json.dumps(md.get('status'), indent=1)}") from None
    return get_md(api, namespace, name)


def md_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    selector = (
        f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=tritonop,app.kubernetes.io/name=tritonserver"
    )
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [pod for pod in pods if pod.metadata.deletion_timestamp is None]


def ready_ips(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    """Pod IPs of a ModelDeployment's Ready pods that are not terminating: where a client may send
    requests (what an EndpointSlice calls ready)."""
    return [
        pod.status.pod_ip
        for pod in md_pods(core, namespace, name)
        if pod.status.pod_ip
        and pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def infer_version(ip: str, model: str = "sleepy", timeout: float = 10) -> int:
    """One inference at a pod IP; returns the VERSION output (the version that served it)."""
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    request = urllib.request.Request(
        f"http://{ip}:8000/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        outputs = {o["name"]: o["data"] for o in json.load(response)["outputs"]}
    assert outputs["OUTPUT0"] == [2.0, 4.0, 6.0, 8.0]
    return int(outputs["VERSION"][0])


def events_for(core: client.CoreV1Api, namespace: str, name: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.name={name},involvedObject.kind=ModelDeployment"
    return list(core.list_namespaced_event(namespace, field_selector=selector).items)


# sleepy on a pretend GPU that holds one copy of the model: loading a version while another
# version of this model is loaded in the same tritonserver fails as a CUDA allocation does. A
# real process, a real load failure: it stands in for a model too large to load twice.
ONE_COPY_MODEL = """
import os
import tempfile



class TritonPythonModel(Sleepy):
    def initialize(self, args):
        super().initialize(args)
        # The python backend's stub is a child of tritonserver: one "device" per server.
        self.slot = os.path.join(tempfile.gettempdir(), f"tritonop-fake-gpu-{os.getppid()}-{args['model_name']}")
        while True:
            try:
                fd = os.open(self.slot, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder, _, held = open(self.slot).read().partition(" ")
                if holder and os.path.exists(f"/proc/{holder}"):
                    raise pb_utils.TritonModelException(
                        f"CUDA out of memory. Tried to allocate 30.00 GiB (version {held} holds the device)"
                    )
                os.unlink(self.slot)  # left by a stub that is gone
                continue
            os.write(fd, f"{os.getpid()} {self.version}".encode())
            os.close(fd)
            return

    def finalize(self):
        if open(self.slot).read().startswith(f"{os.getpid()} "):
            os.unlink(self.slot)
"""


def one_copy_repository(root: Path, model: str = "onecopy", versions: tuple[int, ...] = (1, 2)) -> Path:
    """A model whose versions do not fit side by side in one server (see ONE_COPY_MODEL)."""
    folder = root / model
    config = (MODEL_REPO / "sleepy" / "config.pbtxt").read_text()
    (folder).mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config)
    sleepy = (MODEL_REPO / "sleepy" / "1" / "model.py").read_text().replace("class TritonPythonModel:", "class Sleepy:")
    for version in versions:
        (folder / str(version)).mkdir()
        (folder / str(version) / "model.py").write_text(sleepy + ONE_COPY_MODEL)
    root.chmod(0o755)
    return root
