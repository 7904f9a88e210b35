"""In-memory stand-ins for what serving talks to: a clock that moves only when told, Triton
servers by pod IP (versions, configs, device memory, pending requests), and the Kubernetes API's
pods with their readiness gates (the kubelet's Ready included). No sockets, no sleeping."""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc import model_config_pb2

from tritonop.clock import rfc3339
from tritonop.names import ANNOTATION_ROLLOUT_HASH, CONTAINER_NAME, MODEL_READY_GATE
from tritonop.render.model_config import parse_pbtxt, served_versions, to_json
from tritonop.triton import RequestActivity, ServerUnreachable, TritonError, VersionState

# The repository's config.pbtxt (as the operator reads it, and as Triton loads it as-is).
BASE_PBTXT = """
backend: "python"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 1000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
# What a PyTorch backend says when a second copy does not fit (matches serving's OUT_OF_MEMORY).
CUDA_OOM = "CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 15.78 GiB total capacity)"


def base_config() -> model_config_pb2.ModelConfig:
    return parse_pbtxt(BASE_PBTXT)


class FakeClock:
    """tritonop.clock.Clock, moved by advance() and by sleep() (which also yields to the loop)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


@dataclass
class FakeTriton:
    """One tritonserver, with Triton 2.51's rule for what a load request loads
    (core src/model_repository_manager/model_lifecycle.cc, ModelLifeCycle::AsyncLoad). For each
    version the request's version_policy lists:
    - not READY: loaded;
    - READY: updated in place (no load) when its folder is unchanged since the previous load
      request read the repository's timestamps and the config differs from the one it was loaded
      with in instance_group and version_policy at most (ConfigChangeRequiresReload); otherwise
      reloaded: a second copy loads while the first keeps serving, then replaces it.
    READY versions the policy does not list serve until every listed version is READY, then are
    unloaded (OnLoadFinal); a failed load changes nothing: what served serves.
    Device memory holds `capacity` copies: a load needs room for every copy that serves during it
    plus every copy it loads. `writes_bytecode`: a python-backend model in a writable repository,
    whose stub writes __pycache__ into a version's folder the first time it loads it (after Triton
    read the timestamps), so the next load request finds that folder modified.
    `loads` lists every version Triton loaded, `in_place` every one it updated without a load."""

    model: str = "m"
    repository: tuple[int, ...] = (1, 2, 3)  # the versions in the model repository
    capacity: int = 2  # model copies that fit in device memory at once
    live: bool = True
    no_answer: set[str] = field(default_factory=set)  # calls that get no answer (e.g. {"load"})
    broken: dict[int, str] = field(default_factory=dict)  # version -> Triton's message when it fails to load
    pending: list[float] = field(default_factory=list)  # the pending-request gauge, read by read (the last stays)
    finished: list[float] = field(default_factory=list)  # requests finished so far, read by read (the last stays)
    unloading_reads: int = 0  # index reads that still show UNLOADING after an unload
    writes_bytecode: bool = True  # the dev cluster's python models, the worst case
    load_seconds: float = 0.0  # how long a load request takes on `clock` (a successful one)
    hold: asyncio.Event | None = None  # a load request waits for this (a large model's load, released by the test)
    clock: FakeClock | None = None
    ready: set[int] = field(default_factory=set)
    config: dict[str, Any] | None = None
    unloading: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)  # "load [2, 3]", "load as-is", "unload"
    loads: list[int] = field(default_factory=list)
    in_place: list[int] = field(default_factory=list)
    stamps: dict[int, int] = field(default_factory=dict)  # version -> its folder's modification time
    polled: dict[int, int] = field(default_factory=dict)  # the stamps the last load request read
    loaded_with: dict[int, dict[str, Any]] = field(default_factory=dict)  # READY version -> its config
    compiled: set[int] = field(default_factory=set)  # versions whose folder holds bytecode

    def serve(self, *versions: int) -> FakeTriton:
        """Already serving `versions` with the repository's config (as a server that started so:
        loaded by a request, so their folders hold bytecode written after that request read them)."""
        self._take(self._config_for(list(versions)), list(versions))
        self.loads.clear()
        self.in_place.clear()
        return self

    def _config_for(self, versions: list[int]) -> dict[str, Any]:
        config = base_config()
        config.name = self.model
        config.version_policy.specific.versions.extend(sorted(versions))
        return dict(json.loads(to_json(config)))

    def _answer(self, call: str) -> None:
        if not self.live or call in self.no_answer:
            raise ServerUnreachable(f"{call}: ClientConnectorError: cannot connect")

    async def is_live(self) -> bool:
        return self.live

    async def model_versions(self, model: str) -> list[VersionState]:
        self._answer("index")
        states = [
            VersionState(v, "READY" if v in self.ready else "UNLOADING" if v in self.unloading else "UNAVAILABLE", "")
            for v in self.repository
        ]
        if self.unloading:
            self.unloading_reads -= 1
            if self.unloading_reads <= 0:
                self.unloading = set()
        return states

    async def ready_versions(self, model: str) -> list[int]:
        self._answer("index")
        return sorted(self.ready)

    async def model_config(self, model: str) -> dict[str, Any]:
        self._answer("config")
        if not self.ready or self.config is None:
            raise TritonError(f"Request for unknown model: '{model}' has no available versions")
        return copy.deepcopy(self.config)

    async def load(self, model: str, config_json: str | None) -> None:
        self._answer("load")
        if config_json is None:
            versions = [max(self.repository)]  # the repository's config: its latest version
            config = self._config_for(versions)
            config.pop("version_policy")
            self.calls.append("load as-is")
        else:
            config = json.loads(config_json)
            versions = served_versions(config) or [max(self.repository)]
            self.calls.append(f"load {versions}")
        missing = [v for v in versions if v not in self.repository]
        if missing:
            raise TritonError(f"failed to load '{model}': version {missing[0]} is not in the repository")
        loading = self._to_load(versions, config)
        if len(self.ready) + len(loading) > self.capacity:
            raise TritonError(f"failed to load '{model}' version {loading[-1]}: {CUDA_OOM}")
        broken = [self.broken[v] for v in loading if v in self.broken]
        if broken:
            raise TritonError(broken[0])
        if self.hold is not None:
            await self.hold.wait()
        if self.clock is not None:
            self.clock.advance(self.load_seconds)
        self._take(config, versions)

    def _to_load(self, versions: list[int], config: dict[str, Any]) -> list[int]:
        """The versions a load request loads (the others it lists are updated in place)."""
        return sorted(
            v
            for v in versions
            if v not in self.ready
            or self.stamps.get(v, 0) != self.polled.get(v, 0)
            or _requires_reload(self.loaded_with[v], config)
        )

    def _take(self, config: dict[str, Any], versions: list[int]) -> None:
        """A load request that succeeded: what it loaded, what it updated, what it unloaded."""
        loading = self._to_load(versions, config)
        self.polled = dict(self.stamps)  # read before loading: bytecode written now is news next time
        for version in loading:
            self.loads.append(version)
            if self.writes_bytecode and version not in self.compiled:
                self.compiled.add(version)
                self.stamps[version] = self.stamps.get(version, 0) + 1
        self.in_place.extend(v for v in sorted(versions) if v not in loading)
        self.ready = set(versions)
        self.loaded_with = {v: copy.deepcopy(config) for v in versions}
        self.config = config

    async def unload(self, model: str) -> None:
        self._answer("unload")
        self.calls.append("unload")
        self.unloading = set(self.ready) if self.unloading_reads > 0 else set()
        self.ready = set()
        self.config = None
        self.loaded_with = {}
        self.polled = {}  # Triton forgets an unloaded model: the next load reads the repository afresh

    async def request_activity(self, model: str) -> RequestActivity:
        self._answer("metrics")
        pending = (self.pending.pop(0) if len(self.pending) > 1 else self.pending[0]) if self.pending else 0.0
        finished = (self.finished.pop(0) if len(self.finished) > 1 else self.finished[0]) if self.finished else 0.0
        return RequestActivity(pending=pending, finished=finished)


@dataclass
class FakeTritons:
    """The servers by pod IP; `connect` stands in for TritonServer(ip, control_key)."""

    servers: dict[str, FakeTriton] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)  # control keys the operator used

    def connect(self, ip: str, control_key: str) -> FakeTriton:
        self.keys.add(control_key)
        return self.servers.setdefault(ip, FakeTriton(live=False))


def make_pod(
    name: str,
    ip: str,
    *,
    gate: str | None = "True",
    containers_ready: bool = True,
    phase: str = "Running",
    rollout_hash: str = "hash",
    namespace: str = "n",
) -> dict[str, Any]:
    """A pod of the Deployment as the API server shows it (Ready as the kubelet would set it)."""
    conditions = [
        {"type": "PodScheduled", "status": "True"},
        {"type": "ContainersReady", "status": str(containers_ready)},
    ]
    if gate is not None:
        conditions.append({"type": MODEL_READY_GATE, "status": gate})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": {"app.kubernetes.io/instance": "m"},
            "annotations": {ANNOTATION_ROLLOUT_HASH: rollout_hash},
        },
        "spec": {"nodeName": "node-1", "readinessGates": [{"conditionType": MODEL_READY_GATE}]},
        "status": {"phase": phase, "podIP": ip, "conditions": conditions},
    }
    kubelet_ready(pod)
    return pod


def pod_of(deployment: dict[str, Any], name: str = "operator-0") -> dict[str, Any]:
    """A pod of a Deployment as the API server stores it: the template's spec, unchanged."""
    template = deployment["spec"]["template"]
    metadata = {**copy.deepcopy(template.get("metadata", {})), "name": name}
    metadata["namespace"] = deployment["metadata"]["namespace"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": copy.deepcopy(template["spec"])}


def kubelet_ready(pod: dict[str, Any], at: str | None = None) -> None:
    """Ready: the containers are ready and every readiness gate's condition is True. at: the
    lastTransitionTime a change of Ready gets (None: none, as make_pod's pods have no times)."""
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    gates = [g["conditionType"] for g in pod["spec"].get("readinessGates", [])]
    ready = conditions.get("ContainersReady", {}).get("status") == "True" and all(
        conditions.get(g, {}).get("status") == "True" for g in gates
    )
    old = conditions.get("Ready", {})
    kept = [c for c in pod["status"]["conditions"] if c["type"] != "Ready"]
    new = {"type": "Ready", "status": str(ready)}
    since = old.get("lastTransitionTime") if old.get("status") == str(ready) else at
    if since is not None:
        new["lastTransitionTime"] = since
    pod["status"]["conditions"] = [*kept, new]


def stamp(clock: FakeClock, seconds_ago: float = 0.0) -> str:
    """A metav1.Time on the fake clock's wall time."""
    return rfc3339(datetime.datetime.fromtimestamp(clock.time() - seconds_ago, datetime.UTC))


def started_pod(pod: dict[str, Any], clock: FakeClock, created: float, scheduled: float, container: float) -> None:
    """A pod's start as the API server, scheduler and kubelet stamp it: created, scheduled and its
    server container started, each that many seconds ago on the fake clock."""
    pod["metadata"]["creationTimestamp"] = stamp(clock, created)
    for condition in pod["status"]["conditions"]:
        if condition["type"] == "PodScheduled":
            condition["lastTransitionTime"] = stamp(clock, scheduled)
    running = {"running": {"startedAt": stamp(clock, container)}}
    pod["status"]["containerStatuses"] = [{"name": CONTAINER_NAME, "ready": False, "restartCount": 0, "state": running}]


class FakeKube:
    """The pods of the API server: readiness-gate patches, with the kubelet's Ready following
    them at once unless `kubelet` is False (then Ready stays as it was)."""

    def __init__(self, *pods: dict[str, Any], kubelet: bool = True, clock: FakeClock | None = None) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.kubelet = kubelet
        self.clock = clock  # where the kubelet stamps Ready's transitions (None: no stamps)
        self.version = {"major": "1", "minor": "37", "gitVersion": "v1.37.2"}  # what /version answers
        self.patches: list[tuple[str, str, str]] = []  # (pod, condition type, status)
        self._versions = itertools.count(2)
        for pod in pods:
            self.add(pod)

    def add(self, pod: dict[str, Any]) -> None:
        self.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = copy.deepcopy(pod)

    def pod_list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(pod) for pod in self.pods.values()]

    def condition(self, name: str, kind: str, namespace: str = "n") -> str | None:
        """A pod's condition status (MODEL_READY_GATE: its gate; "Ready": the kubelet's verdict)."""
        pod = self.pods[(namespace, name)]
        return next((c["status"] for c in pod["status"]["conditions"] if c["type"] == kind), None)

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        pod = self.pods.get((namespace or "", name)) if kind == "Pod" else None
        return copy.deepcopy(pod) if pod is not None else None

    async def server_version(self) -> dict[str, Any]:
        return dict(self.version)

    async def patch_pod_condition(self, namespace: str, name: str, condition: dict[str, Any]) -> dict[str, Any] | None:
        pod = self.pods.get((namespace, name))
        if pod is None:
            return None
        self.patches.append((name, condition["type"], condition["status"]))
        kept = [c for c in pod["status"]["conditions"] if c["type"] != condition["type"]]
        pod["status"]["conditions"] = [*kept, dict(condition)]
        if self.kubelet:
            self.kubelet_ready(name, namespace)
        pod["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(pod)

    def kubelet_ready(self, name: str, namespace: str = "n") -> None:
        """The kubelet's verdict on a pod now (when `kubelet` is False, the test calls it)."""
        pod = self.pods[(namespace, name)]
        kubelet_ready(pod, stamp(self.clock) if self.clock is not None else None)
        pod["metadata"]["resourceVersion"] = str(next(self._versions))


class FakeApiServer(FakeKube):
    """Every call a reconcile makes (tritonop.k8s.KubeApi), in memory: objects by kind, namespace
    and name with resourceVersions; server-side apply as a merge; status patches; Events. `calls`
    counts requests by verb, so a test can say an idle reconcile made none. Pods are not created
    by a Deployment here: the test plays the kubelet (start_pods)."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock=clock)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.calls: dict[str, int] = {}

    def _count(self, verb: str) -> None:
        self.calls[verb] = self.calls.get(verb, 0) + 1

    def writes(self) -> int:
        return sum(n for verb, n in self.calls.items() if verb not in ("get", "list"))

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        return obj

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as the API server would (a user's kubectl apply, the kubelet's pod)."""
        meta = obj["metadata"]
        stored = self._stamp(copy.deepcopy(obj))
        if obj["kind"] == "Pod":
            self.add(stored)
        else:
            self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = stored
        return copy.deepcopy(stored)

    def object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Pod":
            return self.pods.get((namespace, name))
        return self.objects.get((kind, namespace, name))

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self._count("get")
        found = self.object(kind, namespace or "", name)
        return copy.deepcopy(found) if found is not None else None

    async def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Any]:
        self._count("list")
        wanted = dict(pair.split("=", 1) for pair in (label_selector or "").split(",") if pair)
        candidates = self.pod_list() if kind == "Pod" else [copy.deepcopy(o) for o in self.objects.values()]
        return [
            obj
            for obj in candidates
            if obj.get("kind", kind) == kind
            and (namespace is None or obj["metadata"].get("namespace") == namespace)  # None: every namespace
            and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]

    async def list_snapshot(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[Any], int | None]:
        return await self.list(kind, namespace, label_selector), None

    async def apply(self, obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        self._count("apply")
        meta = obj["metadata"]
        live = self.object(obj["kind"], meta.get("namespace", ""), meta["name"]) or {}
        return self.put({**live, **copy.deepcopy(obj), "metadata": {**live.get("metadata", {}), **meta}})

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._count("create")
        return self.put(obj)

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._count("replace")
        return self.put(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self._count("delete")
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self._count("patch_status")
        obj = self.objects[(kind, namespace, name)]
        obj["status"] = merge_patch(obj.get("status", {}), status)
        return copy.deepcopy(self._stamp(obj))

    async def patch_pod_condition(self, namespace: str, name: str, condition: dict[str, Any]) -> dict[str, Any] | None:
        self._count("patch_pod_condition")
        return await super().patch_pod_condition(namespace, name, condition)

    async def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str, component: str = "tritonop"
    ) -> None:
        self._count("post_event")
        self.events.append((event_type, reason, message))

    async def close(self) -> None:
        return None


def _requires_reload(loaded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Triton's ConfigChangeRequiresReload: any difference but instance_group and version_policy."""

    def rest(config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in ("instance_group", "version_policy")}

    return rest(loaded) != rest(wanted)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
