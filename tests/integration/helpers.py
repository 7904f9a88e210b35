"""Helpers for integration tests: ModelDeployments, conditions, inference at pod IPs."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from loadgen import MODEL_REPO, SLEEPY_CODE, SLEEPY_CONFIG, scrape_metrics, slow_repository, write_model  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tritonop.dev", "v1alpha1", "modeldeployments"
# MODEL_REPO, SLEEPY_*, scrape_metrics, slow_repository, write_model: in loadgen (benches use them
# too); imported here so that the tests' `from .helpers import ...` keep working.


def sleepy_base() -> str:
    """sleepy's model.py with its class renamed `Sleepy`, for a model.py to subclass."""
    return SLEEPY_CODE.read_text().replace("class TritonPythonModel:", "class Sleepy:")


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
    """Wait until the condition has this status (and reason) for the current generation, and
    return the object as read when it matched (a later read may already show the next change)."""
    matched: list[dict[str, Any]] = []

    def matches() -> bool:
        md = get_md(api, namespace, name)
        cond = md_condition(md, kind)
        if (
            cond.get("status") == status
            and (reason is None or cond.get("reason") == reason)
            and cond.get("observedGeneration") == md["metadata"]["generation"]
        ):
            matched.append(md)
            return True
        return False

    try:
        wait_until(f"{kind}={status} ({reason}) on {namespace}/{name}", matches, timeout=timeout)
    except TimeoutError as error:
        md = get_md(api, namespace, name)
        raise AssertionError(f"{error}; status is {json.dumps(md.get('status'), indent=1)}") from None
    return matched[-1]


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


def pod_log(cluster: DevCluster, pod: client.V1Pod) -> Path:
    """The pod's tritonserver log, where the dev cluster's pod runner keeps it."""
    return cluster.pods_dir / f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid}.log"


@dataclass(frozen=True)
class Lifecycle:
    """What a tritonserver log says happened to a model's versions, at the default log level.
    `loading`: "loading: <model>:<version>" (model_lifecycle.cc), logged for every version a load
    request lists, whether Triton loads it or only updates it in place: an upper bound on its
    loads. `instances`: model instances the python backend created (its "ModelInstanceInitialize:
    <model>_<group>_<index>" lines), one per instance of every version copy actually loaded, none
    for an update in place. `unloaded`: "successfully unloaded '<model>' version <v>", one per
    copy of that version freed."""

    loading: Counter[int]
    instances: int
    unloaded: Counter[int]


def lifecycle(log: str, model: str) -> Lifecycle:
    name = re.escape(model)
    return Lifecycle(
        Counter(int(v) for v in re.findall(rf'"loading: {name}:(\d+)"', log)),
        len(re.findall(rf'"TRITONBACKEND_ModelInstanceInitialize: {name}_\d+_\d+ \(', log)),
        Counter(int(v) for v in re.findall(rf"\"successfully unloaded '{name}' version (\d+)\"", log)),
    )


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
    code = sleepy_base() + ONE_COPY_MODEL
    return write_model(root, model, SLEEPY_CONFIG.read_text(), dict.fromkeys(versions, code))


# How Triton 2.51's python backend counts failures (measured with the nvidia-pytriton wheel's
# tritonserver, sleepy's config: max_batch_size 8, dynamic batching, 50 ms per batch):
# - execute() returning InferenceResponse(output_tensors=[], error=TritonError("bad input")) for
#   a request: the client gets HTTP 500 {"error":"bad input"}, but Triton counts it as a success.
#   4 such requests: nv_inference_request_success +4, nv_inference_count +4, exec_count +4,
#   nv_inference_request_duration_us / compute_infer_duration_us grow as for good requests
#   (+216 ms / +203 ms; 4 good ones: +209 / +203), nv_inference_request_failure does not move, and
#   /v2/models/<m>/stats says fail.count 0. Invisible to Triton's metrics: useless for a canary.
# - execute() raising (pb_utils.TritonModelException or any exception): every request of that
#   batch fails (HTTP 500 "Failed to process the request(s) for model '<m>_0_0', message: ...").
#   nv_inference_request_failure{model,reason="BACKEND",version} +1 per request (4 sequential
#   requests: +4; 8 concurrent requests in 2 batches: +8, the 4 good ones in those batches
#   included); nv_inference_exec_count +1 per batch; nv_inference_request_success,
#   nv_inference_count, nv_inference_request_duration_us, nv_inference_queue_duration_us and
#   nv_inference_compute_{input,infer,output}_duration_us do not move: latency figures are of
#   successful requests only (the stats API keeps failed time apart in fail.ns).
# The failure counter has an extra `reason` label: a loaded version exports four series, 0 until
# used (BACKEND, REJECTED, CANCELED, OTHER); sum over it. A version's error share over a window
# is Δfailure / (Δfailure + Δsuccess), its average latency Δrequest_duration_us / Δsuccess.
CANARY_MODEL = """

class TritonPythonModel(Sleepy):
    # canary_repository writes BATCH_MS and FAIL_EVERY above, per version folder.
    def initialize(self, args):
        super().initialize(args)
        self.delay = BATCH_MS / 1000.0
        self.batches = 0

    def execute(self, requests):
        self.batches += 1
        if FAIL_EVERY and self.batches % FAIL_EVERY == 0:
            time.sleep(self.delay)
            # Raised, so that Triton counts it (an error response counts as a success).
            raise pb_utils.TritonModelException(
                f"version {self.version} fails batch #{self.batches} ({len(requests)} requests; "
                f"1 batch in {FAIL_EVERY})"
            )
        return super().execute(requests)
"""


@dataclass(frozen=True)
class VersionBehaviour:
    """How one version of the canary model serves: `batch_ms` per batch; `fail_every=N`: every
    Nth batch that one server's instance of this version executes fails, each of its requests
    counted in nv_inference_request_failure (execute() raises); 0 = never fails. Requests one
    at a time: exactly every Nth fails. Under load: 1 request in N on average, whatever the
    batch sizes (counting requests instead would pick the larger batches: measured 43% failed
    at 60 req/s on one server for N=5)."""

    batch_ms: int = 20
    fail_every: int = 0


CANARY_VERSIONS = {
    1: VersionBehaviour(),
    2: VersionBehaviour(),
    3: VersionBehaviour(batch_ms=120),  # a latency regression
    4: VersionBehaviour(fail_every=5),  # an error regression: 1 request in 5 fails
}


def token_generator_repository(root: Path) -> Path:
    """The token generator (model_repo/tokens) as version 1, and a version 2 whose decode steps
    (those that admit no request, so produce no first token) take four times as long: a slower
    decode kernel, the same prefill. Its inter-token latency regresses; its time to first token
    moves less (a new request waits for the step under way to end)."""
    code = (MODEL_REPO / "tokens" / "1" / "model.py").read_text()
    step = "time.sleep(self.step_s + self.step_per_request_s * len(batch) + self.prefill_per_token_s * prefill)\n"
    assert step in code
    slower = code.replace(step, step + "            if not admitted:\n                time.sleep(3 * self.step_s)\n")
    return write_model(root, "tokens", (MODEL_REPO / "tokens" / "config.pbtxt").read_text(), {1: code, 2: slower})


def canary_repository(root: Path, model: str = "canary", versions: dict[int, VersionBehaviour] | None = None) -> Path:
    """A model for canary rollouts: sleepy's config (max_batch_size 8, dynamic batching) and
    answers (OUTPUT0, VERSION), but each version folder has its own batch time and failures
    (see VersionBehaviour; batch_delay_ms in config.pbtxt is model-wide, so the versions'
    model.py ignore it). Default: CANARY_VERSIONS (v1, v2 good at 20 ms, v3 slow, v4 failing)."""
    code = {
        version: f"{sleepy_base()}\nBATCH_MS = {how.batch_ms}\nFAIL_EVERY = {how.fail_every}\n{CANARY_MODEL}"
        for version, how in (versions or CANARY_VERSIONS).items()
    }
    return write_model(root, model, SLEEPY_CONFIG.read_text(), code)
