"""A real node next to the kwok nodes: kubelet, containerd 2.x, runc, CNI and kube-proxy.

Everything the node does on the network happens inside network namespaces this module creates,
with addresses from 198.18.0.0/15 (reserved for benchmarking, never routed off this machine):

    host netns ── veth ── node netns (kubelet, containerd, kube-proxy; bridge cni0 for pods)
    198.19.254.4k+1       198.19.254.4k+2 (the node's InternalIP)
                          cni0 198.18.k.1/24 ── pods 198.18.k.2..254
                          198.19.253.4k+1 ── veth ── client netns 198.19.253.4k+2 (test clients)

k (0..59) is derived from the cluster's state dir, so two dev clusters on one machine get
different names and addresses (unless their hashes collide, 1 in 60). The node netns has no
default route, so nothing a pod sends can leave the machine. The kubelet and kube-proxy reach
the apiserver (which listens on 127.0.0.1 of the host) through a socat relay bound to the host
end of the veth; pods reach it the same way through the `kubernetes` Service (an EndpointSlice
for the relay, masqueraded out of the node netns). kube-proxy runs in nftables mode: its rules
are a table in the node netns, gone with the netns.

Outside the namespaces the node changes what any kubelet changes, and node-down puts back:
cgroups under /tritonop-node<k> in every cgroup hierarchy, the kernel tunables the kubelet
sets (vm.overcommit_memory, kernel.panic, ...; saved before and restored after), and the bind
mount the kubelet makes of its root dir.

    python -m devcluster node-up      # the cluster must be up (python -m devcluster up)
    python -m devcluster node-down
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import ociimage, versions
from .certs import ensure_client_certificate
from .cluster import (
    SERVICE_CIDR,
    DevCluster,
    JsonState,
    free_port,
    log,
    pid_alive,
    stop_pid,
    wait_until,
    write_kubeconfig,
)

PAUSE_IMAGE = "localhost/tritonop/pause:3.10"
BUSYBOX_IMAGE = "localhost/tritonop/busybox:1.35"
TAINT_KEY = "tritonop.dev/real-node"
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
# What the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables); saved and put back.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
STOP_ORDER = ("kubelet", "kube-proxy", "containerd", "relay")


def run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True, input=input)


@dataclass
class NodeState(JsonState):
    name: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)
    cgroup_root: str = ""
    started_at: float = 0.0


class RealNode:
    def __init__(self, cluster: DevCluster, name: str = "real-node-0") -> None:
        self.cluster = cluster
        self.name = name
        digest = hashlib.sha256(str(cluster.state_dir.resolve()).encode()).digest()
        self.k = digest[1] % 60  # 0..59: 4k+2 stays below 255
        self.dir = cluster.state_dir / "node"
        bin_dir = cluster.cache_dir / "bin"
        self.kube_bin = bin_dir / f"kubernetes-node-{versions.KUBERNETES}"
        self.containerd_bin = bin_dir / f"containerd-{versions.CONTAINERD}"
        self.runc_bin = bin_dir / f"runc-{versions.RUNC}"
        self.cni_bin = bin_dir / f"cni-plugins-{versions.CNI_PLUGINS}"

    # -- names and addresses -------------------------------------------------------------
    @property
    def netns(self) -> str:
        return f"tritonop-node{self.k}"

    @property
    def client_netns(self) -> str:
        """A network namespace for test clients, routed through the node (like a pod elsewhere)."""
        return f"tritonop-client{self.k}"

    @property
    def host_veth(self) -> str:
        return f"tnode{self.k}"

    @property
    def host_ip(self) -> str:
        return f"198.19.254.{4 * self.k + 1}"

    @property
    def node_ip(self) -> str:
        return f"198.19.254.{4 * self.k + 2}"

    @property
    def client_gateway(self) -> str:
        return f"198.19.253.{4 * self.k + 1}"

    @property
    def client_ip(self) -> str:
        return f"198.19.253.{4 * self.k + 2}"

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{self.k}.0/24"

    @property
    def cgroup_root(self) -> str:
        return f"/tritonop-node{self.k}"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def state_file(self) -> Path:
        return self.dir / "node.json"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def state(self) -> NodeState | None:
        return NodeState.load(self.state_file)

    def is_up(self) -> bool:
        state = self.state
        return state is not None and bool(state.pids) and all(pid_alive(p) for p in state.pids.values())

    def in_netns(self, *argv: str, netns: str | None = None) -> list[str]:
        """argv run in the node's (or another) network namespace, in the host's mount namespace
        (unlike `ip netns exec`), so the kubelet's volume mounts are visible to containerd."""
        return ["nsenter", f"--net=/run/netns/{netns or self.netns}", "--", *argv]

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            str(self.containerd_bin / "ctr"), f"--address={self.containerd_socket}", "-n", "k8s.io", *args, check=check
        )

    def pod_netns(self, container_id: str) -> str:
        """The network namespace (a /proc/<pid>/ns/net path) of a pod, from one of its containers'
        IDs (status.containerStatuses[].containerID), for running a host tool "inside" the pod."""
        info = json.loads(self.ctr("containers", "info", container_id.removeprefix("containerd://")).stdout)
        return str(next(n["path"] for n in info["Spec"]["linux"]["namespaces"] if n["type"] == "network"))

    # -- build ---------------------------------------------------------------------------
    def build(self) -> None:
        env = dict(
            os.environ,
            K8S_VERSION=versions.KUBERNETES,
            CONTAINERD_VERSION=versions.CONTAINERD,
            RUNC_VERSION=versions.RUNC,
            CNI_PLUGINS_VERSION=versions.CNI_PLUGINS,
            TRITONOP_CACHE=str(self.cluster.cache_dir),
        )
        script = Path(__file__).with_name("build-binaries.sh")
        subprocess.run(["bash", str(script), "node"], env=env, check=True)

    def check_host(self) -> None:
        """Root, and the tools the node needs from Debian, named if missing."""
        if os.geteuid() != 0:
            raise RuntimeError("a real node needs root: network namespaces, cgroups, mounts")
        missing = [tool for tool in ("nft", "nsenter", "socat", "ip", "mount") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(f"missing host tools {missing}: apt-get install nftables socat util-linux iproute2")
        if not Path("/bin/busybox").exists():
            raise RuntimeError("the test image needs Debian's busybox-static (apt-get install busybox-static)")

    # -- lifecycle -----------------------------------------------------------------------
    def up(self) -> None:
        if self.is_up():
            log(f"real node {self.name} already up")
            return
        if not self.cluster.is_up():
            raise RuntimeError("the dev cluster is not up: python -m devcluster up")
        self.check_host()
        self.build()
        self.down()  # whatever a crashed run left behind
        started = time.monotonic()
        # A fresh node each time, as the control plane's etcd: the last run's containers, pod
        # volumes and IP leases are gone (down() killed and unmounted them); images are re-imported.
        for stale in ("containerd", "kubelet", "cni"):
            shutil.rmtree(self.dir / stale, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        state = NodeState(name=self.name, started_at=time.time(), cgroup_root=self.cgroup_root)
        state.save(self.state_file)
        try:
            self._network(state)
            self._identities()
            self._start_relay(state)
            self._start_containerd(state)
            self._import_images()
            self._start_kubelet(state)
            self._start_kube_proxy(state)
            self._publish_apiserver()
            self._wait_ready()
        except BaseException:
            log(f"real node start failed; logs are in {self.log_dir}")
            self.down()
            raise
        took = time.monotonic() - started
        log(f"real node {self.name} Ready in {took:.1f}s (node IP {self.node_ip}, pods {self.pod_cidr})")

    def _spawn(self, state: NodeState, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=self.dir,
            )
        state.pids[name] = process.pid
        state.save(self.state_file)

    def _alive(self, state: NodeState, name: str) -> None:
        if not pid_alive(state.pids[name]):
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{tail}")

    def _network(self, state: NodeState) -> None:
        for netns in (self.netns, self.client_netns):
            # Named after this cluster's state dir: one left by a run that lost its node.json is ours.
            run("ip", "netns", "delete", netns, check=False)
            run("ip", "netns", "add", netns)
            state.netns.append(netns)
            state.save(self.state_file)
            run("ip", "-n", netns, "link", "set", "lo", "up")
        # host <-> node: the node's InternalIP; the kubelet and kube-proxy reach the apiserver
        # relay at the host end, the apiserver reaches the kubelet at the node end.
        run("ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", "uplink", "netns", self.netns)
        run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_veth)
        run("ip", "link", "set", self.host_veth, "up")
        run("ip", "-n", self.netns, "addr", "add", f"{self.node_ip}/30", "dev", "uplink")
        run("ip", "-n", self.netns, "link", "set", "uplink", "up")
        # node <-> client: clients in their own namespace, routed through the node to ClusterIPs.
        run(
            "ip",
            "-n",
            self.netns,
            "link",
            "add",
            "client0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.client_netns,
        )
        run("ip", "-n", self.netns, "addr", "add", f"{self.client_gateway}/30", "dev", "client0")
        run("ip", "-n", self.netns, "link", "set", "client0", "up")
        run("ip", "-n", self.client_netns, "addr", "add", f"{self.client_ip}/30", "dev", "eth0")
        run("ip", "-n", self.client_netns, "link", "set", "eth0", "up")
        run("ip", "-n", self.client_netns, "route", "add", "198.18.0.0/15", "via", self.client_gateway)
        # ClusterIPs from the node itself: a local connect needs a route before kube-proxy's
        # output hook rewrites the address. This kernel has no dummy device (CONFIG_DUMMY unset),
        # so the Service range points at lo: what no Service matches loops back and is dropped.
        run("ip", "-n", self.netns, "route", "add", SERVICE_CIDR, "dev", "lo", "src", self.node_ip)
        # Routing between client, pods and Services happens in the node netns only (its own sysctl).
        run(*self.in_netns("sysctl", "-qw", "net.ipv4.ip_forward=1"))

    def _identities(self) -> None:
        pki = self.cluster.certs.directory
        ensure_client_certificate(pki, f"node-{self.name}", f"system:node:{self.name}", "system:nodes")
        ensure_client_certificate(pki, "kube-proxy", "system:kube-proxy", None)
        # Only RBAC is on (no Node authorizer): bind the nodes group to the system:node role.
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "devcluster:system:nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))

    def _start_relay(self, state: NodeState) -> None:
        cluster_state = self.cluster.state
        assert cluster_state is not None
        self.relay_port = free_port()
        api = cluster_state.ports["apiserver"]
        self._spawn(
            state,
            "relay",
            [
                "socat",
                f"TCP-LISTEN:{self.relay_port},bind={self.host_ip},fork,reuseaddr",
                f"TCP:127.0.0.1:{api}",
            ],
        )
        # The apiserver's certificate names 127.0.0.1, not the relay's address.
        server = f"https://{self.host_ip}:{self.relay_port}"
        for who in (f"node-{self.name}", "kube-proxy"):
            path = self.dir / f"{who}.kubeconfig"
            write_kubeconfig(path, server, self.cluster.certs, who)
            config = json.loads(path.read_text())
            config["clusters"][0]["cluster"]["tls-server-name"] = "127.0.0.1"
            path.write_text(json.dumps(config, indent=2))

    def _start_containerd(self, state: NodeState) -> None:
        root = self.dir / "containerd"
        for sub in ("root", "state", "opt"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        cni_conf = self.dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-devcluster.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "devcluster",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.pod_cidr}]],
                                # Pods route only the reserved range (pods, Services, node links) via
                                # cni0; no default route, so nothing a pod sends leaves the machine.
                                "routes": [{"dst": "198.18.0.0/15"}],
                                "dataDir": str(self.dir / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        # Config version 4 (containerd 2.4's own; a version 3 file is migrated with a warning, and
        # version 4 has no top-level [grpc]: servers are plugins). No imports: nothing from the
        # host's /etc/containerd/conf.d. Every path under the node's dir, except the shims'
        # sockets: containerd keeps them in /run/containerd/s (a socket path must stay short).
        config = f"""version = 4
imports = []
root = "{root / "root"}"
state = "{root / "state"}"
oom_score = 0  # -999 needs CAP_SYS_RESOURCE, which no process here has
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[plugins."io.containerd.server.v1.grpc"]
  address = "{self.containerd_socket}"

[plugins."io.containerd.server.v1.ttrpc"]
  address = "{self.containerd_socket}.ttrpc"

[plugins."io.containerd.server.v1.debug"]
  address = ""

[plugins."io.containerd.server.v1.metrics"]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # This machine's processes lack CAP_SYS_RESOURCE (not in the bounding set), so no process may
  # lower an oom_score_adj: runc failed the pause container's -998 with "nsexec: failed to update
  # /proc/self/oom_score_adj: Permission denied". Clamp scores to containerd's own (0) instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{self.runc_bin / "runc"}"
        Root = "{root / "state" / "runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{self.cni_bin}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        (root / "config.toml").write_text(config)
        # The shim is found on PATH, and runs runc by the BinaryName above.
        env = dict(os.environ, PATH=f"{self.containerd_bin}:{self.runc_bin}:{os.environ['PATH']}")
        self._spawn(
            state,
            "containerd",
            self.in_netns(
                str(self.containerd_bin / "containerd"),
                f"--config={root / 'config.toml'}",
                "--log-level=info",
            ),
            env=env,
        )

        def serving() -> bool:
            self._alive(state, "containerd")
            return self.ctr("version", check=False).returncode == 0

        wait_until("containerd serving", serving, timeout=30)

    def _import_images(self) -> None:
        images = self.cluster.cache_dir / "images"
        pause = images / "pause-3.10.oci.tar"
        ociimage.pause_image(pause, PAUSE_IMAGE, self.kube_bin / "pause")
        applets = run("/bin/busybox", "--list").stdout.split()
        busybox = images / "busybox-1.35.oci.tar"
        ociimage.busybox_image(busybox, BUSYBOX_IMAGE, Path("/bin/busybox"), applets)
        for archive in (pause, busybox):
            self.ctr("images", "import", "--platform=linux/amd64", str(archive))
        log(f"images imported into the node's containerd: {PAUSE_IMAGE}, {BUSYBOX_IMAGE}")

    def ensure_image(self, archive: Path, reference: str) -> str:
        """Import an OCI archive into the node's containerd unless the image is there already."""
        listed = self.ctr("images", "ls", "-q", check=False).stdout.split()
        if reference not in listed:
            started = time.monotonic()
            self.ctr("images", "import", "--platform=linux/amd64", str(archive))
            log(f"{reference} imported into the node's containerd in {time.monotonic() - started:.0f}s")
        return reference

    def triton_image(self) -> str:
        """The CPU Triton image (devcluster/images.py) in the node's containerd; its reference."""
        from . import images

        archive, reference = images.triton_cpu_image(self.cluster.cache_dir)
        return self.ensure_image(archive, reference)

    def operator_image(self) -> str:
        """The operator image (devcluster/images.py, from this checkout) in the node's containerd."""
        from . import images
        from .cluster import REPO_ROOT

        archive, reference = images.operator_image(self.cluster.cache_dir, REPO_ROOT)
        return self.ensure_image(archive, reference)

    def _create_cgroups(self) -> None:
        """The kubelet's cgroupRoot must exist in every v1 hierarchy it uses."""
        for hierarchy in CGROUP_V1_ROOT.iterdir():
            if hierarchy.is_dir() and (hierarchy / "cgroup.procs").exists():
                (hierarchy / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)
        # cpuset: a new cgroup starts with no CPUs or memory nodes; copy the parent's.
        cpuset = CGROUP_V1_ROOT / "cpuset"
        if cpuset.is_dir():
            child = cpuset / self.cgroup_root.lstrip("/")
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (child / knob).write_text((cpuset / knob).read_text())

    def _start_kubelet(self, state: NodeState) -> None:
        for name in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                state.sysctls[name] = Path("/proc/sys", name).read_text().strip()
        state.save(self.state_file)
        self._create_cgroups()
        root_dir = self.dir / "kubelet"
        root_dir.mkdir(parents=True, exist_ok=True)
        resolv = self.dir / "resolv.conf"
        resolv.write_text("# no DNS on the dev cluster's real node\noptions ndots:1\n")
        certs = self.cluster.certs
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroups are v1 here; kubelet >= 1.35 refuses v1 unless told not to.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(certs.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "resolvConf": str(resolv),
            "failSwapOn": False,
            "protectKernelDefaults": False,
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
            "serializeImagePulls": False,
            "staticPodPath": "",
            "podPidsLimit": 4096,
            "maxPods": 50,
        }
        config_file = self.dir / "kubelet.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        env = dict(os.environ, PATH=f"{self.containerd_bin}:{self.runc_bin}:{os.environ['PATH']}")
        self._spawn(
            state,
            "kubelet",
            self.in_netns(
                str(self.kube_bin / "kubelet"),
                f"--config={config_file}",
                f"--kubeconfig={self.dir / f'node-{self.name}.kubeconfig'}",
                f"--root-dir={root_dir}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--node-labels=tritonop.dev/node-kind=real",
                "--v=2",
            ),
            env=env,
        )

    def _start_kube_proxy(self, state: NodeState) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "mode": "nftables",
            "hostnameOverride": self.name,
            "bindAddress": self.node_ip,
            "clusterCIDR": self.pod_cidr,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": ["primary"],
            # conntrack limits are not per network namespace: leave the host's as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        config_file = self.dir / "kube-proxy.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        self._spawn(
            state,
            "kube-proxy",
            self.in_netns(
                str(self.kube_bin / "kube-proxy"),
                f"--config={config_file}",
                "--v=2",
            ),
        )

    def _publish_apiserver(self) -> None:
        """Pods reach the apiserver as in any cluster: the `kubernetes` Service (198.19.0.1:443).

        The apiserver runs with --endpoint-reconciler-type=none (it listens on 127.0.0.1, which an
        EndpointSlice refuses), so the Service has no endpoints; this publishes the relay at the
        host end of the node's veth as its endpoint. Traffic from pods to it leaves the node netns
        by the uplink, masqueraded to the node IP (the host has no route to pod addresses)."""
        nft = f"""table ip tritonop-node {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "uplink" ip saddr != {self.node_ip} masquerade
  }}
}}
"""
        run(*self.in_netns("nft", "-f", "-"), input=nft)
        endpoint_slice = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes-devcluster-relay",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "devcluster.tritonop.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.host_ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": self.relay_port, "protocol": "TCP"}],
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(endpoint_slice))

    def _wait_ready(self) -> None:
        state = self.state
        assert state is not None

        def ready() -> bool:
            for name in state.pids:
                self._alive(state, name)
            result = self.cluster.kubectl(
                "get", "node", self.name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
            )
            return result.stdout.strip() == "True"

        wait_until(f"node {self.name} Ready", ready, timeout=120, interval=1)

        def proxying() -> bool:
            self._alive(state, "kube-proxy")
            out = run(*self.in_netns("nft", "list", "tables"), check=False).stdout
            return "kube-proxy" in out

        wait_until("kube-proxy's nftables table", proxying, timeout=60, interval=1)

    # -- teardown ------------------------------------------------------------------------
    def down(self) -> None:
        """Stop everything node-up started and undo what it changed on the host."""
        state = self.state
        if state is None:
            return
        if self.cluster.is_up() and state.name:
            # Pods bound to a node that is going away would stay Terminating; remove them.
            self.cluster.kubectl(
                "delete",
                "pods",
                "--all-namespaces",
                "--field-selector",
                f"spec.nodeName={state.name}",
                "--force",
                "--grace-period=0",
                check=False,
            )
        for name in STOP_ORDER:
            if name in state.pids:
                stop_pid(state.pids[name])
        self._kill_cgroup_processes(state.cgroup_root)
        self._kill_shims()
        self._unmount_under(self.dir)
        # The shims' socket dir containerd made in /run (their sockets go with them); only if empty.
        for directory in (Path("/run/containerd/s"), Path("/run/containerd")):
            with contextlib.suppress(OSError):
                directory.rmdir()
        for netns in reversed(state.netns):
            run("ip", "netns", "delete", netns, check=False)
        run("ip", "link", "delete", self.host_veth, check=False)  # gone with the netns; to be sure
        self._remove_cgroups(state.cgroup_root)
        for name, value in state.sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(value)
        if self.cluster.is_up() and state.name:
            self.cluster.kubectl("delete", "node", state.name, "--ignore-not-found", check=False)
            self.cluster.kubectl(
                "delete",
                "endpointslice",
                "-n",
                "default",
                "kubernetes-devcluster-relay",
                "--ignore-not-found",
                check=False,
            )
        self.state_file.unlink(missing_ok=True)
        log(f"real node {state.name} stopped and cleaned up")

    def _cgroup_dirs(self, cgroup_root: str) -> list[Path]:
        if not cgroup_root:
            return []
        found = []
        for hierarchy in CGROUP_V1_ROOT.iterdir():
            top = hierarchy / cgroup_root.lstrip("/")
            if top.is_dir():
                # deepest first, so rmdir works bottom-up
                found += [*sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), top]
        return found

    def _kill_cgroup_processes(self, cgroup_root: str) -> None:
        """Containers (and their shims' children) live in the node's cgroups; stop what is left."""
        for _ in range(50):
            pids: set[int] = set()
            for directory in self._cgroup_dirs(cgroup_root):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, 9)
            time.sleep(0.1)

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes of this node's containerd (they outlive it by design)."""
        address = str(self.containerd_socket)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and address.encode() in b" ".join(cmdline):
                stop_pid(int(entry), grace=3)

    def _unmount_under(self, directory: Path) -> None:
        prefix = str(directory.resolve())
        for _ in range(5):
            mounts = []
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    mounts.append(point)
            if not mounts:
                return
            for point in sorted(mounts, key=len, reverse=True):
                run("umount", "-l", point, check=False)

    def _remove_cgroups(self, cgroup_root: str) -> None:
        for directory in self._cgroup_dirs(cgroup_root):
            with contextlib.suppress(OSError):
                directory.rmdir()
