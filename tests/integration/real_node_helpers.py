"""What the real-node tests share: the node itself, the operator installed with Helm from its
image onto it, and the Service's clients run in the clients' network namespace."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devcluster import versions
from devcluster.cluster import wait_until
from devcluster.realnode import TAINT_KEY, RealNode

REPO_ROOT = Path(__file__).resolve().parents[2]

# Pods of a ModelDeployment's spec.server on the real node only (its selector and its taint's toleration).
ON_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {"tritonop.dev/node-kind": "real"},
    "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
}

NEEDS_ROOT_AND_TOOLS = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root (netns, cgroups, mounts)"),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("nft", "socat", "nsenter")) or not Path("/bin/busybox").exists(),
        reason="a real node needs Debian's nftables, socat, util-linux and busybox-static",
    ),
]


def skip_without_image_tools(node: RealNode) -> None:
    if shutil.which("mmdebstrap") is None and not any((node.cluster.cache_dir / "images").glob("debian-*")):
        pytest.skip("the images' Debian base needs mmdebstrap (apt-get install mmdebstrap)")


@contextlib.contextmanager
def helm_operator(node: RealNode, api: client.ApiClient, watch_namespace: str) -> Iterator[str]:
    """`helm install` of the chart as docs/install.md says, the operator from its image on the
    real node (two replicas, leader election, its ServiceAccount, Pod Security restricted),
    watching one namespace; uninstalled afterwards. Yields the operator's namespace once a
    leader holds the lease."""
    from ..unit.test_chart import CHART, helm

    if not (node.cluster.cache_dir / "bin" / f"helm-{versions.HELM}" / "helm").exists():
        pytest.skip("helm is not built (make helm)")
    skip_without_image_tools(node)
    suffix = uuid.uuid4().hex[:6]
    release, operator_namespace = f"tritonop-real-{suffix}", f"real-{suffix}"
    repository, tag = node.operator_image().rsplit(":", 1)
    helm(
        "install", release, str(CHART), "-n", "default",
        "--set", f"namespace.name={operator_namespace},watchNamespaces={{{watch_namespace}}}",
        "--set", f"image.repository={repository},image.tag={tag},image.pullPolicy=Never",
        "--set-json", f"nodeSelector={json.dumps(ON_REAL_NODE['nodeSelector'])}",
        "--set-json", f"tolerations={json.dumps(ON_REAL_NODE['tolerations'])}",
        "--wait", "--timeout=120s",
        kubeconfig=node.cluster.kubeconfig,
    )  # fmt: skip
    try:
        wait_until(
            "a leader among the operator's pods",
            lambda: any(
                lease.spec.holder_identity
                for lease in client.CoordinationV1Api(api).list_namespaced_lease(operator_namespace).items
            ),
            timeout=30,
        )
        yield operator_namespace
    finally:
        # The ModelDeployments go first, while their operator runs to finalize them.
        node.cluster.kubectl("delete", "modeldeployments", "--all", "-n", watch_namespace, "--wait=true",
                             "--timeout=90s", check=False)  # fmt: skip
        helm("uninstall", release, "-n", "default", "--wait", "--timeout=60s", check=False,
             kubeconfig=node.cluster.kubeconfig)  # fmt: skip


@contextlib.contextmanager
def readable_repository(prefix: str, write: Callable[[Path], Path]) -> Iterator[Path]:
    """A model repository written by `write(root)` where the servers' containers can read it:
    they run as a non-root user, and pytest's temporary folders are root's alone (0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        repository = write(folder / "repo")
        for path in [folder, repository, *repository.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield repository
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def model_spec(node: RealNode, model: str, repository: Path, replicas: int, **rest: Any) -> dict[str, Any]:
    """A ModelDeployment's spec serving `model` from `repository` on the real node (CPU Triton image)."""
    return {
        "model": {"name": model, "repository": f"file://{repository}", "version": 1},
        "replicas": replicas,
        "server": {"gpus": 0, "image": node.triton_image(), **ON_REAL_NODE},
        **rest,
    }


@dataclass
class Seen:
    """What one kind of client (http or grpc) saw: the service_clients' record for it."""

    record: dict[str, Any]

    def counts(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Answers per version (and "failed") in the whole seconds from `since` to `until`."""
        total: dict[str, int] = {}
        for second, counts in self.record["perSecond"].items():
            if since - 1 < int(second) <= until:
                for version, count in counts.items():
                    total[version] = total.get(version, 0) + count
        return total

    def failed(self, since: float = 0.0, until: float = float("inf")) -> int:
        return self.counts(since, until).get("failed", 0)

    def share(self, version: str, since: float, until: float) -> float:
        counts = self.counts(since, until)
        answered = sum(count for kind, count in counts.items() if kind != "failed")
        return 100.0 * counts.get(version, 0) / answered if answered else 0.0


class ServiceClients:
    """loadgen.service_clients in the clients' network namespace: keep-alive HTTP and gRPC
    clients of a Service's ClusterIP. `seen()` reads what they wrote last (every second)."""

    def __init__(self, node: RealNode, cluster_ip: str, model: str, out: Path, **flags_: float) -> None:
        self.out = out
        # the kinds of client that run: http, http-forever, grpc, sse, grpc-stream
        kinds = ("http", "http_forever", "grpc", "sse", "grpc_stream")
        self.kinds = [name.replace("_", "-") for name in kinds if flags_.get(name)]
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in flags_.items()]
        argv = node.in_netns(
            sys.executable, "-m", "loadgen.service_clients", cluster_ip, model, *flags, f"--out={out}",
            netns=node.client_netns,
        )  # fmt: skip
        self.log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 (the clients outlive this call)
        self.process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def seen(self) -> dict[str, Seen]:
        if not self.out.exists():
            return {}
        return {kind: Seen(record) for kind, record in json.loads(self.out.read_text()).items() if kind != "stopped"}

    def answered(self, kind: str) -> int:
        seen = self.seen().get(kind)
        return seen.record["sent"] - seen.record["failed"] if seen else 0

    def wait_answers(self, more: int, timeout: float = 60) -> None:
        """Until each kind of client has had `more` answers beyond what it has now."""
        now = {kind: self.answered(kind) for kind in self.kinds}
        wait_until(
            f"{more} more answers to each kind of client",
            lambda: all(self.answered(kind) >= now[kind] + more for kind in now),
            timeout=timeout,
            interval=0.5,
        )

    def wait_only(self, version: str, seconds: int = 3, timeout: float = 120) -> None:
        """Until, for `seconds` whole seconds, every answer to every kind of client that runs came
        from `version` (failures are counted apart)."""

        def only() -> bool:
            end = int(time.time()) - 1
            seen = self.seen()
            return all(
                kind in seen and set(seen[kind].counts(end - seconds + 1, end)) - {"failed"} == {version}
                for kind in self.kinds
            )

        try:
            wait_until(f"every answer from version {version} for {seconds}s", only, timeout=timeout, interval=0.5)
        except TimeoutError as error:
            last = {kind: part.counts(time.time() - seconds - 1, time.time()) for kind, part in self.seen().items()}
            raise TimeoutError(f"{error}; the last seconds: {last} at {time.time():.0f}") from None

    def stop(self) -> dict[str, Seen]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=40)
        self.log.close()
        stopped = json.loads(self.out.read_text())
        assert stopped.get("stopped"), f"the clients did not write their last record; see {self.log.name}"
        return self.seen()

    def __enter__(self) -> ServiceClients:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def failures(seen: dict[str, Seen], since: float, until: float) -> dict[str, int]:
    return {kind: part.failed(since, until) for kind, part in seen.items()}
