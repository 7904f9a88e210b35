"""The dev cluster's stand-in for a kubelet with a container runtime, for Triton pods only.

kwok marks pods Running and gives each an IP in 127.1.0.0/16. For every such pod whose
container runs `tritonserver`, this starts a real tritonserver (from the nvidia-pytriton
wheel) bound to the pod IP with the pod's own args, env and volumes mapped to local paths,
keeps its log in <pods-dir>/<namespace>_<name>_<uid>.log and stops it (by pid) when the pod
goes away: after the container's `lifecycle.preStop.sleep` (the server keeps answering while
clients drop the pod), then SIGTERM, as a kubelet does. It is also the readiness prober for
pods on fake nodes: a pod with a readinessProbe or readiness gates stays not-ready (see
devcluster/kwok/pod-ready.yaml) until its probe passes against the pod IP and every gate
condition is True, as a kubelet reports it. A Triton process that exits is restarted with
back-off and counted in restartCount, like restartPolicy: Always.

Run-to-completion pods (restartPolicy Never/OnFailure, e.g. the operator's verification Jobs)
whose container runs `tritonop` (the operator image's entrypoint) are run too: the venv's
`python -m tritonop` with the pod's args, env and volumes mapped, once; on exit the pod is
reported Succeeded or Failed with the exit code and its termination message (the file at
terminationMessagePath), as a kubelet reports it, so the Job controller completes the Job.
kwok's own pod-complete stage (which would mark every Job pod Succeeded at once) is not used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import importlib.util
import ipaddress
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from .cluster import group_members, wait_gone

LOG = logging.getLogger("podrunner")
TICK_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 30.0
PREPARE_RETRY_SECONDS = 2.0
# Flags whose values the runner sets itself: the addresses are the pod IP, and the
# backends/caches are the ones in the nvidia-pytriton wheel (the image's /opt/tritonserver).
OWNED_FLAGS = ("--http-address", "--grpc-address", "--metrics-address", "--backend-directory", "--cache-directory")


# -- the Triton installation from the nvidia-pytriton wheel ------------------------------
@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backends: Path
    caches: Path
    env: dict[str, str]

    @classmethod
    def prepare(cls, work_dir: Path) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("nvidia-pytriton is not installed in this Python environment")
        dist = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        site_packages = dist.parent.parent
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        # The wheel ships a python-backend stub per Python version; pytriton copies the
        # matching one into backends/python at start-up, and so do we (once).
        backends = work_dir / "backends"
        if not (backends / "python" / "triton_python_backend_stub").exists():
            shutil.rmtree(backends, ignore_errors=True)
            shutil.copytree(dist / "backends", backends)
            shutil.copy(
                dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                backends / "python" / "triton_python_backend_stub",
            )
        venv_bin = Path(sys.executable).parent
        env = {
            "LD_LIBRARY_PATH": os.pathsep.join(
                filter(None, [str(site_packages / "nvidia_pytriton.libs"), os.environ.get("LD_LIBRARY_PATH")])
            ),
            # The python backend's stub finds the venv (numpy, torch, ...) through these.
            "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "/usr/bin:/bin")]),
            "PYTHONPATH": str(site_packages),
        }
        return cls(binary=dist / "bin" / "tritonserver", backends=backends, caches=dist / "caches", env=env)


# -- pure helpers (unit-tested) -----------------------------------------------------------
def container_argv(container: dict[str, Any]) -> list[str]:
    # With no command, the image's entrypoint runs the args (Triton's image exec's them).
    return list(container.get("command") or []) + list(container.get("args") or [])


def is_triton_container(container: dict[str, Any]) -> bool:
    argv = container_argv(container)
    return bool(argv) and os.path.basename(argv[0]) == "tritonserver"


# Entrypoints of images whose programs are installed here: the operator's own (`tritonop`).
TASK_COMMANDS = ("tritonop",)
TERMINATION_MESSAGE_LIMIT = 4096  # bytes, as the kubelet truncates it


def is_task_container(container: dict[str, Any], restart_policy: str | None) -> bool:
    argv = container_argv(container)
    return restart_policy in ("Never", "OnFailure") and bool(argv) and os.path.basename(argv[0]) in TASK_COMMANDS


def task_argv(container: dict[str, Any], env: dict[str, str], mounts: dict[str, Path], work_dir: Path) -> list[str]:
    """`python -m <entrypoint>` with the container's args, paths mapped; its termination message
    path becomes work_dir/termination-log."""
    argv = [expand_k8s_vars(arg, env) for arg in container_argv(container)]
    message_path = container.get("terminationMessagePath", "/dev/termination-log")
    args = [str(work_dir / "termination-log") if arg == message_path else map_path(arg, mounts) for arg in argv[1:]]
    return [sys.executable, "-m", os.path.basename(argv[0]), *args]


def expand_k8s_vars(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion for command/args/env: $$ escapes, unknown names stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_.-]*\)|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, value)


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """Rewrite a container path (or --flag=path) onto the local directory backing its mount."""
    prefix, sep, path = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount_path in sorted(mounts, key=len, reverse=True):
        root = mount_path.rstrip("/") or "/"
        if path == root or path.startswith(root + "/"):
            mapped = str(mounts[mount_path]) + path[len(root) :]
            return f"{prefix}{sep}{mapped}"
    return value


def drop_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """Remove `--flag=value` and `--flag value` forms of the given flags."""
    result: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip_next = "=" not in arg
            continue
        result.append(arg)
    return result


def triton_argv(
    container: dict[str, Any], env: dict[str, str], mounts: dict[str, Path], pod_ip: str, install: TritonInstall
) -> list[str]:
    argv = [expand_k8s_vars(arg, env) for arg in container_argv(container)]
    args = drop_flags(argv[1:], OWNED_FLAGS)
    args = [map_path(arg, mounts) for arg in args]
    return [
        str(install.binary),
        *args,
        f"--http-address={pod_ip}",
        f"--grpc-address={pod_ip}",
        f"--metrics-address={pod_ip}",
        f"--backend-directory={install.backends}",
        f"--cache-directory={install.caches}",
    ]


def now_rfc3339() -> str:
    """A metav1.Time for the pod status this runner writes as the kubelet would.

    The same format as tritonop.clock.rfc3339, deliberately not imported from it: devcluster is
    the test bed (it plays the kubelet) and depends on nothing of the operator under test.
    """
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- per-pod state -------------------------------------------------------------------------
@dataclass
class Probe:
    """Readiness probing as a kubelet does it: period, timeout and thresholds."""

    spec: dict[str, Any]
    started: float
    last_run: float = float("-inf")  # the first probe runs as soon as the initial delay is over
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        delay = float(self.spec.get("initialDelaySeconds") or 0)
        return now - self.started >= delay and now - self.last_run >= self.period

    def record(self, ok: bool) -> bool | None:
        """Count a result; return the new readiness when a threshold is crossed, else None."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes == int(self.spec.get("successThreshold") or 1):
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures == int(self.spec.get("failureThreshold") or 3):
                return False
        return None


@dataclass
class PodProcess:
    uid: str
    namespace: str
    name: str
    pod_ip: str
    container: str
    argv: list[str] | None  # None: not a Triton pod, only probed
    env: dict[str, str]
    work_dir: Path
    log_path: Path
    pid_path: Path
    probe: Probe | None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    probe_ok: bool | None = None  # None: no verdict yet
    gates: tuple[str, ...] = ()
    gates_ok: bool = True
    reported: bool | None = None  # the Ready status last written
    probing: bool = False
    last_exit: int | None = None
    started_at: str | None = None  # when the running process started (containerStatuses' startedAt)
    prestop_seconds: float = 0.0  # lifecycle.preStop.sleep: keep serving this long after deletion
    stop_at: float | None = None  # deleted: SIGTERM once the preStop sleep is over


def on_fake_node(pod_ip: str) -> bool:
    """kwok's pods have loopback IPs (the dev cluster's kwok --cidr is inside 127.0.0.0/8); a real
    node's pods have addresses in 198.18.0.0/15."""
    try:
        return ipaddress.ip_address(pod_ip).is_loopback
    except ValueError:
        return False


class PodRunner:
    def __init__(self, core: client.CoreV1Api, pods_dir: Path, install: TritonInstall) -> None:
        self.core = core
        self.pods_dir = pods_dir
        self.install = install
        self.pods: dict[str, PodProcess] = {}
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.prober = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.unprepared: dict[str, tuple[float, dict[str, Any]]] = {}  # uid -> (retry at, pod)
        self.tasks: dict[str, subprocess.Popen[bytes]] = {}  # run-to-completion pods, by uid

    # -- watching --------------------------------------------------------------------------
    def watch_pods(self) -> None:
        resource_version = ""
        while not self.stopping.is_set():
            try:
                if not resource_version:
                    listing = self.as_dict(self.core.list_pod_for_all_namespaces())
                    resource_version = listing["metadata"]["resourceVersion"]
                    self.events.put(("SYNC", {"items": listing.get("items", [])}))
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    resource_version=resource_version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                )
                for event in stream:
                    obj = event["raw_object"]
                    resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.events.put((event["type"], obj))
            except ApiException as error:
                if error.status == 410:  # resourceVersion too old: relist
                    resource_version = ""
                else:
                    LOG.warning("watch failed: %s", error)
                    time.sleep(1)
            except Exception as error:
                if self.stopping.is_set():
                    return
                LOG.warning("watch failed: %s", error)
                resource_version = ""
                time.sleep(1)

    # -- reconciling -----------------------------------------------------------------------
    def handle(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "SYNC":
            alive = set()
            for pod in obj["items"]:
                alive.add(pod["metadata"]["uid"])
                self.sync_pod(pod)
            for uid in list(self.pods):
                if uid not in alive:
                    self.begin_stop(uid, "pod is gone")
            return
        if kind == "DELETED":
            self.begin_stop(obj["metadata"]["uid"], "pod deleted")
            return
        self.sync_pod(obj)

    def sync_pod(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            self.begin_stop(uid, "pod terminating")
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            self.stop_pod(uid, "pod finished")
            return
        if uid in self.tasks:
            return
        gates = tuple(gate["conditionType"] for gate in spec.get("readinessGates") or [])
        if uid in self.pods:
            tracked = self.pods[uid]
            tracked.gates_ok = gates_satisfied(gates, status)
            self.refresh_ready(tracked)
            return
        if status.get("phase") != "Running" or not status.get("podIP"):
            return
        if not on_fake_node(status["podIP"]):
            # A real node's pod (devcluster/realnode.py): its kubelet runs and probes it, and
            # reports its status; the pod runner must not write a second Ready condition.
            return
        containers = spec.get("containers", [])
        task = next((c for c in containers if is_task_container(c, spec.get("restartPolicy"))), None)
        if task is not None:
            self.start_task(pod, task)
            return
        triton = next((c for c in containers if is_triton_container(c)), None)
        probed = triton or next((c for c in containers if c.get("readinessProbe")), None)
        if probed is None and gates:
            probed = containers[0]
        if probed is None:
            return
        base = f"{meta['namespace']}_{meta['name']}_{uid}"
        work_dir = self.pods_dir / base
        work_dir.mkdir(parents=True, exist_ok=True)
        argv: list[str] | None = None
        env: dict[str, str] = {}
        if triton is not None:
            try:
                env = self.container_env(pod, triton)
                mounts = self.materialize_volumes(pod, triton, work_dir, env)
                env = {key: map_path(value, mounts) for key, value in env.items()}
                argv = triton_argv(triton, env, mounts, status["podIP"], self.install)
            except Exception as error:
                # Like a kubelet (CreateContainerConfigError): say why, and try again shortly.
                LOG.error("%s/%s: cannot prepare tritonserver: %s", meta["namespace"], meta["name"], error)
                (self.pods_dir / f"{base}.log").write_text(f"devcluster podrunner: cannot start: {error}\n")
                self.unprepared[uid] = (time.monotonic() + PREPARE_RETRY_SECONDS, pod)
                return
        self.unprepared.pop(uid, None)
        for other_uid, other in list(self.pods.items()):
            # kwok frees a deleted pod's IP at once (a kubelet holds it until the sandbox is torn
            # down): a pod still in its preStop sleep at this IP must give way now.
            if other.stop_at is not None and other.pod_ip == status["podIP"]:
                self.stop_pod(other_uid, "its pod IP went to a new pod")
        probe_spec = probed.get("readinessProbe")
        self.pods[uid] = PodProcess(
            uid=uid,
            namespace=meta["namespace"],
            name=meta["name"],
            pod_ip=status["podIP"],
            container=probed["name"],
            argv=argv,
            env=env,
            work_dir=work_dir,
            log_path=self.pods_dir / f"{base}.log",
            pid_path=self.pods_dir / f"{base}.pid",
            probe=Probe(spec=resolve_named_port(probe_spec, probed), started=time.monotonic()) if probe_spec else None,
            probe_ok=None if probe_spec else True,
            gates=gates,
            gates_ok=gates_satisfied(gates, status),
            prestop_seconds=prestop_sleep_seconds(triton) if triton is not None else 0.0,
        )
        self.refresh_ready(self.pods[uid])
        LOG.info("%s/%s: tracking pod at %s", meta["namespace"], meta["name"], status["podIP"])

    def container_env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                data = self.config_map_data(source["configMapRef"]["name"], namespace)
            elif "secretRef" in source:
                data = self.secret_data(source["secretRef"]["name"], namespace)
            else:
                continue
            env.update({source.get("prefix", "") + k: v.decode() for k, v in data.items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = expand_k8s_vars(item["value"], env)
                continue
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                secret = self.secret_data(ref["secretKeyRef"]["name"], namespace)
                env[item["name"]] = secret[ref["secretKeyRef"]["key"]].decode()
            elif "configMapKeyRef" in ref:
                config_map = self.config_map_data(ref["configMapKeyRef"]["name"], namespace)
                env[item["name"]] = config_map[ref["configMapKeyRef"]["key"]].decode()
            elif "fieldRef" in ref:
                env[item["name"]] = str(field_value(pod, ref["fieldRef"]["fieldPath"]))
        return env

    def materialize_volumes(
        self, pod: dict[str, Any], container: dict[str, Any], work_dir: Path, env: dict[str, str] | None = None
    ) -> dict[str, Path]:
        """Local directories standing in for each volumeMount's mountPath. A subPath or subPathExpr
        (expanded with the container's env) that does not exist is created, as a kubelet does."""
        namespace = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod.get("spec", {}).get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            local: Path
            if "hostPath" in volume:
                local = Path(volume["hostPath"]["path"])
            elif "persistentVolumeClaim" in volume:
                local = self.pvc_path(namespace, volume["persistentVolumeClaim"]["claimName"])
            else:
                local = work_dir / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
                if "configMap" in volume:
                    data = self.config_map_data(volume["configMap"]["name"], namespace)
                    write_items(local, data, volume["configMap"].get("items"))
                elif "secret" in volume:
                    data = self.secret_data(volume["secret"]["secretName"], namespace)
                    write_items(local, data, volume["secret"].get("items"))
            sub = mount.get("subPath") or expand_k8s_vars(mount.get("subPathExpr") or "", env or {})
            if sub:
                local = local / sub
                local.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = local
        return mounts

    def as_dict(self, obj: object) -> dict[str, Any]:
        return cast(dict[str, Any], self.core.api_client.sanitize_for_serialization(obj))

    def config_map_data(self, name: str, namespace: str) -> dict[str, bytes]:
        config_map = self.as_dict(self.core.read_namespaced_config_map(name, namespace))
        return {key: value.encode() for key, value in (config_map.get("data") or {}).items()}

    def secret_data(self, name: str, namespace: str) -> dict[str, bytes]:
        secret = self.as_dict(self.core.read_namespaced_secret(name, namespace))
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}

    def pvc_path(self, namespace: str, claim: str) -> Path:
        pvc = self.as_dict(self.core.read_namespaced_persistent_volume_claim(claim, namespace))
        volume_name = pvc.get("spec", {}).get("volumeName")
        if not volume_name:
            raise RuntimeError(f"PersistentVolumeClaim {namespace}/{claim} is not bound")
        pv_spec = self.as_dict(self.core.read_persistent_volume(volume_name)).get("spec", {})
        source = pv_spec.get("hostPath") or pv_spec.get("local")
        if source is None:
            raise RuntimeError(f"PersistentVolume {volume_name} is neither hostPath nor local")
        return Path(source["path"])

    def start_task(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        meta = pod["metadata"]
        base = f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
        work_dir = self.pods_dir / base
        work_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.pods_dir / f"{base}.log"
        try:
            env = self.container_env(pod, container)
            mounts = self.materialize_volumes(pod, container, work_dir, env)
            argv = task_argv(container, env, mounts, work_dir)
        except Exception as error:
            LOG.error("%s/%s: cannot prepare %s: %s", meta["namespace"], meta["name"], container["name"], error)
            self.unprepared[meta["uid"]] = (time.monotonic() + PREPARE_RETRY_SECONDS, pod)
            return
        self.unprepared.pop(meta["uid"], None)
        started = now_rfc3339()
        with open(log_path, "ab") as log_file:
            log_file.write(f"--- devcluster podrunner: running {' '.join(argv)}\n".encode())
            log_file.flush()
            process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=work_dir,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self.tasks[meta["uid"]] = process
        LOG.info("%s/%s: running %s pid %d", meta["namespace"], meta["name"], container["name"], process.pid)
        threading.Thread(
            target=self.finish_task, args=(pod, container, process, work_dir, started), daemon=True
        ).start()

    def finish_task(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        process: subprocess.Popen[bytes],
        work_dir: Path,
        started: str,
    ) -> None:
        code = process.wait()
        meta = pod["metadata"]
        if self.tasks.get(meta["uid"]) is not process:
            return  # the pod was deleted meanwhile: nothing to report
        message_file = work_dir / "termination-log"
        message = (
            message_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
            if message_file.exists()
            else ""
        )
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        if message:
            terminated["message"] = message
        now = now_rfc3339()
        patch = {
            "status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        }
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], patch)
            LOG.info("%s/%s: %s exited with %d", meta["namespace"], meta["name"], container["name"], code)
        except ApiException as error:
            LOG.warning("%s/%s: cannot report the exit: %s", meta["namespace"], meta["name"], error)

    def begin_stop(self, uid: str, why: str) -> None:
        """A deleted pod, as a kubelet stops it: the preStop sleep first (the server keeps
        answering while clients drop the pod), then SIGTERM (tick() does it when the time comes)."""
        pod = self.pods.get(uid)
        if pod is None or pod.prestop_seconds <= 0 or pod.process is None:
            self.stop_pod(uid, why)
            return
        if pod.stop_at is None:
            pod.stop_at = time.monotonic() + pod.prestop_seconds
            LOG.info("%s/%s: %s; preStop sleep %.0fs before SIGTERM", pod.namespace, pod.name, why, pod.prestop_seconds)

    def stop_pod(self, uid: str, why: str) -> None:
        self.unprepared.pop(uid, None)
        task = self.tasks.pop(uid, None)
        if task is not None:
            terminate(task)
        pod = self.pods.pop(uid, None)
        if pod is None:
            return
        if pod.process is not None:
            if pod.process.poll() is None:
                LOG.info("%s/%s: stopping tritonserver pid %d (%s)", pod.namespace, pod.name, pod.process.pid, why)
            terminate(pod.process)  # an exited tritonserver may have left its stubs running
        pod.pid_path.unlink(missing_ok=True)

    # -- processes and probes --------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        for uid, (retry_at, unprepared) in list(self.unprepared.items()):
            if now >= retry_at:
                del self.unprepared[uid]
                self.sync_pod(unprepared)
        for pod in list(self.pods.values()):
            if pod.stop_at is not None:  # deleted, in its preStop sleep: no restarts, no status
                if now >= pod.stop_at:
                    self.stop_pod(pod.uid, "preStop sleep over")
                continue
            if pod.argv is not None:
                self.supervise(pod, now)
            if pod.probe is not None and not pod.probing and pod.probe.due(now):
                pod.probing = True
                pod.probe.last_run = now
                self.prober.submit(self.run_probe, pod)

    def supervise(self, pod: PodProcess, now: float) -> None:
        if pod.process is not None:
            code = pod.process.poll()
            if code is None:
                return
            # In a container the kernel kills every process of the PID namespace when its first
            # one exits: tritonserver's Python backend stubs die with it here too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pod.process.pid, signal.SIGKILL)
            pod.process = None
            pod.last_exit = code
            pod.restarts += 1
            backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** min(pod.restarts, 5))
            pod.next_start = now + backoff
            pod.pid_path.unlink(missing_ok=True)
            LOG.warning("%s/%s: tritonserver exited with %d; restart in %.0fs", pod.namespace, pod.name, code, backoff)
            self.report_exit(pod, code)
            return
        if now < pod.next_start:
            return
        assert pod.argv is not None
        with open(pod.log_path, "ab") as log_file:
            log_file.write(f"--- devcluster podrunner: starting {' '.join(pod.argv)}\n".encode())
            log_file.flush()
            pod.process = subprocess.Popen(
                pod.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=pod.work_dir,
                env={**os.environ, **pod.env, **self.install.env},
                start_new_session=True,
            )
        pod.started_at = now_rfc3339()
        pod.pid_path.write_text(str(pod.process.pid))
        if pod.probe is not None:
            pod.probe = Probe(spec=pod.probe.spec, started=now)
        LOG.info("%s/%s: started tritonserver pid %d on %s", pod.namespace, pod.name, pod.process.pid, pod.pod_ip)

    def run_probe(self, pod: PodProcess) -> None:
        try:
            assert pod.probe is not None
            verdict = pod.probe.record(probe_once(pod.probe.spec, pod.pod_ip))
            if verdict is not None:
                pod.probe_ok = verdict
            self.refresh_ready(pod)
        finally:
            pod.probing = False

    def refresh_ready(self, pod: PodProcess) -> None:
        """Write Ready when the probe verdict and the gates together say something new."""
        ready = bool(pod.probe_ok) and pod.gates_ok
        with self.lock:
            if ready == pod.reported or pod.uid not in self.pods:
                return
            try:
                self.report_ready(pod, ready)
                pod.reported = ready
            except Exception as error:  # retried on the next probe or event
                LOG.warning("%s/%s: cannot report readiness: %s", pod.namespace, pod.name, error)

    def report_ready(self, pod: PodProcess, ready: bool) -> None:
        status = "True" if ready else "False"
        now = now_rfc3339()
        patch = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": status, "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                ],
                "containerStatuses": [self.container_status(pod, ready)],
            }
        }
        self.patch_status(pod, patch)
        LOG.info("%s/%s: ready=%s", pod.namespace, pod.name, ready)

    def report_exit(self, pod: PodProcess, code: int) -> None:
        pod.reported = False
        pod.probe_ok = None if pod.probe is not None else pod.probe_ok
        now = now_rfc3339()
        patch = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
                ],
                "containerStatuses": [self.container_status(pod, False)],
            }
        }
        try:
            self.patch_status(pod, patch)
        except ApiException as error:
            LOG.warning("%s/%s: cannot report exit: %s", pod.namespace, pod.name, error)

    def container_status(self, pod: PodProcess, ready: bool) -> dict[str, Any]:
        state: dict[str, Any]
        if pod.process is not None:
            # As a kubelet reports it: when this process started, not when the status is written.
            state = {"running": {"startedAt": pod.started_at or now_rfc3339()}}
        elif pod.last_exit is None:
            state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"tritonserver exited with {pod.last_exit}"}}
        status: dict[str, Any] = {
            "name": pod.container,
            "ready": ready,
            "restartCount": pod.restarts,
            "state": state,
        }
        if pod.last_exit is not None:
            status["lastState"] = {
                "terminated": {"exitCode": pod.last_exit, "reason": "Error", "finishedAt": now_rfc3339()}
            }
        return status

    def patch_status(self, pod: PodProcess, patch: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod.name, pod.namespace, patch)

    def shutdown(self) -> None:
        self.stopping.set()
        for uid in list(self.pods):
            self.stop_pod(uid, "runner stopping")
        self.prober.shutdown(wait=False, cancel_futures=True)

    def run(self, ready_file: Path) -> None:
        threading.Thread(target=self.watch_pods, name="watch", daemon=True).start()
        ready_file.write_text(str(os.getpid()))
        while not self.stopping.is_set():
            try:
                kind, obj = self.events.get(timeout=TICK_SECONDS)
                self.handle(kind, obj)
            except queue.Empty:
                pass
            except Exception:
                LOG.exception("handling a pod event failed")
            self.tick()


def prestop_sleep_seconds(container: dict[str, Any]) -> float:
    """lifecycle.preStop.sleep.seconds (exec and httpGet hooks are not run here)."""
    sleep = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    return float(sleep.get("seconds", 0))


def gates_satisfied(gates: tuple[str, ...], status: dict[str, Any]) -> bool:
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return all(conditions.get(gate) == "True" for gate in gates)


def resolve_named_port(probe: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """A probe may name its port (`port: http`); the kubelet looks it up in the container's ports."""
    resolved = dict(probe)
    for kind in ("httpGet", "tcpSocket"):
        if kind in probe and isinstance(probe[kind].get("port"), str) and not probe[kind]["port"].isdigit():
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            resolved[kind] = {**probe[kind], "port": ports.get(probe[kind]["port"], probe[kind]["port"])}
    return resolved


def field_value(pod: dict[str, Any], path: str) -> Any:
    value: Any = pod
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return value


def write_items(directory: Path, data: dict[str, bytes], items: list[dict[str, str]] | None) -> None:
    chosen = [(item["key"], item["path"]) for item in items] if items else [(key, key) for key in data]
    for key, rel in chosen:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])


def probe_once(spec: dict[str, Any], pod_ip: str) -> bool:
    timeout = float(spec.get("timeoutSeconds") or 1)
    if "httpGet" in spec:
        http = spec["httpGet"]
        url = f"{http.get('scheme', 'HTTP').lower()}://{pod_ip}:{http['port']}{http.get('path', '/')}"
        request = urllib.request.Request(url, headers={h["name"]: h["value"] for h in http.get("httpHeaders") or []})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bool(200 <= response.status < 400)
        except (urllib.error.URLError, OSError):
            return False
    if "tcpSocket" in spec:
        try:
            with socket.create_connection((pod_ip, int(spec["tcpSocket"]["port"])), timeout=timeout):
                return True
        except OSError:
            return False
    # exec and grpc probes would need the container itself; report not ready, visibly.
    return False


def terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a container's process group (its leader started with start_new_session): SIGTERM,
    SIGKILL after grace. Like a kubelet, which tears down the whole container when its main
    process exits, whatever of the group outlives the leader (tritonserver's Python backend
    stubs, when tritonserver died first) gets the rest of the grace period, then SIGKILL."""
    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    rest = max(0.0, grace - (time.monotonic() - started))
    if not wait_gone(lambda: bool(group_members(process.pid)), rest):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        wait_gone(lambda: bool(group_members(process.pid)), 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--pods-dir", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.pods_dir.mkdir(parents=True, exist_ok=True)
    install = TritonInstall.prepare(args.pods_dir.parent / "triton")
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    runner = PodRunner(client.CoreV1Api(api), args.pods_dir, install)

    def stop(signum: int, _frame: object) -> None:
        runner.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        runner.run(args.pods_dir / "runner.ready")
    finally:
        runner.shutdown()


if __name__ == "__main__":
    main()
