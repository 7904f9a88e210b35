"""Integration tests run against the real local cluster (devcluster) and real Triton."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devcluster import DevCluster, running_cluster
from devcluster.cluster import free_port, pid_alive, stop_pid, wait_until
from devcluster.realnode import RealNode
from loadgen import scrape_metrics
from tests import leftover_processes
from tests.integration.helpers import apply_md, get_md, md_condition

REPO_ROOT = Path(__file__).resolve().parents[2]

# Processes at session start (this module is imported at collection, before any test runs), and a
# mark in the environment that every process the session starts inherits: see no_leftover_processes.
PROCESSES_AT_START = leftover_processes.snapshot()
SESSION_ID = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
os.environ[leftover_processes.SESSION_VARIABLE] = SESSION_ID
LEFTOVER_GRACE_SECONDS = 15.0


def left_running_cluster() -> set[int]:
    """The processes of a dev cluster still up after the session: its components and the Triton
    servers of its pods (by pid file). `running_cluster` stops a cluster it started and removes
    its state file, so a state file still there means a cluster the session found running and
    leaves running on purpose (its components may have been restarted by chaos tests meanwhile)."""
    cluster = DevCluster()
    state = cluster.state
    if state is None:
        return set()
    pids = set(state.pids.values())
    for pid_file in cluster.pods_dir.glob("*.pid") if cluster.pods_dir.exists() else ():
        try:
            pids.add(int(pid_file.read_text()))
        except (OSError, ValueError):
            continue
    return pids


def session_leftovers() -> list[leftover_processes.ProcessInfo]:
    """The project's processes this session started that are still running: its descendants, or
    carrying SESSION_ID in their environment (those whose parent died first)."""
    now = leftover_processes.snapshot()
    me = os.getpid()

    def ours(info: leftover_processes.ProcessInfo) -> bool:
        return leftover_processes.descends_from(info.pid, {me}, now) or leftover_processes.has_environment(
            info.pid, leftover_processes.SESSION_VARIABLE, SESSION_ID
        )

    return leftover_processes.leftovers(PROCESSES_AT_START, now, ours, keep=left_running_cluster())


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """After the whole session (set up first, so finalized after every fixture that starts a
    process: the cluster, operators, Prometheus, MinIO), none of the project's long-lived
    processes (leftover_processes.BINARIES, .MODULES) that the session started may still run.
    Not counted: what ran before the session (a dev cluster from `make cluster-up`, a demo),
    and a dev cluster the session leaves running (see left_running_cluster)."""
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    left = session_leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)  # processes still shutting down (stopped without waiting) get a moment
        left = session_leftovers()
    if left:
        pytest.fail(
            f"{len(left)} process(es) started by this test session still running "
            f"{LEFTOVER_GRACE_SECONDS:.0f}s after its last fixture was finalized:\n"
            + leftover_processes.describe(left),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[DevCluster]:
    with running_cluster() as started:
        yield started


@pytest.fixture(scope="session")
def api(cluster: DevCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


def fresh_namespace(core: client.CoreV1Api, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the controller manager has made the namespace's ServiceAccount.
    wait_until(
        f"ServiceAccount default in {name}",
        lambda: core.read_namespaced_service_account("default", name) is not None,
        timeout=30,
    )
    return name


def restricted_namespace_named(core: client.CoreV1Api, name: str) -> str:
    """A namespace enforcing Pod Security `restricted` (as a platform team's would), its default
    ServiceAccount there."""
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    wait_until("default ServiceAccount", lambda: core.read_namespaced_service_account("default", name) is not None, 30)
    return name


@pytest.fixture
def namespace(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (and its pods with it)."""
    name = fresh_namespace(core)
    yield name
    core.delete_namespace(name)


@pytest.fixture
def unwatched_namespace(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace that no test's operator watches (the session operator watches t-*)."""
    name = fresh_namespace(core, prefix="x")
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def dry_run_namespace(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    """One namespace for a module's server-side dry runs (nothing is created in it). A namespace
    per case left ~90 terminating at once; an operator started then (watching t-*, so every one
    of them) once received no event for the next test's ModelDeployment for 90 s."""
    name = fresh_namespace(core)
    yield name
    core.delete_namespace(name)


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    def metrics(self) -> dict[str, float]:
        """The operator's Prometheus metrics, `name{labels}` -> value."""
        return scrape_metrics(self.metrics_port)

    def write_requests(self, excluding: tuple[str, ...] = ()) -> float:
        """Writes to the Kubernetes API so far, optionally leaving some resources out (e.g. leases)."""
        return sum(
            value
            for key, value in self.metrics().items()
            if key.startswith("tritonop_kubernetes_requests_total{")
            and any(f'verb="{verb}"' in key for verb in ("apply", "patch", "create", "delete", "update"))
            and not any(f'resource="{resource}"' in key for resource in excluding)
        )


@pytest.fixture(scope="session")
def crd(cluster: DevCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO_ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.tritonop.dev", "--timeout=60s")


def start_operator(
    cluster: DevCluster,
    namespace_pattern: str,
    log_path: Path,
    kubeconfig: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> OperatorProcess:
    """`python -m tritonop run` as a real process, watching namespaces that match the pattern;
    returns once its liveness endpoint answers."""
    metrics_port, liveness_port = free_port(), free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tritonop",
                "run",
                f"--kubeconfig={kubeconfig or cluster.kubeconfig}",
                "--resync-seconds=5",
                "--relist-seconds=4",  # the cache's relist runs within every test's idle windows
                f"--namespace={namespace_pattern}",
                f"--metrics-port={metrics_port}",
                f"--liveness-port={liveness_port}",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def live() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_until("the operator's liveness endpoint", live, timeout=60)
    except BaseException:
        stop_pid(process.pid)  # no caller gets it to stop: do not leave it running
        raise
    return OperatorProcess(process, metrics_port, log_path)


def wait_until_reconciling(cluster: DevCluster, api: client.ApiClient, core: client.CoreV1Api, log_path: Path) -> None:
    """Liveness says the process serves HTTP, not that its watches run: on a freshly booted
    cluster the first test once waited 90 s for a first reconcile that never came. So a probe
    object (a missing repository: a condition within one reconcile, no pod) must get its
    condition first; if it does not, the failure carries the operator's log."""
    namespace = fresh_namespace(core)
    try:
        apply_md(cluster, namespace, "probe", {"model": {"name": "probe", "repository": "file:///nonexistent/probe"}})

        def reconciled() -> bool:
            return bool(md_condition(get_md(api, namespace, "probe"), "RepositoryValid"))

        try:
            wait_until("the operator's first reconcile", reconciled, timeout=180)
        except TimeoutError:
            pytest.fail(f"the operator reconciled nothing in 180 s; its log:\n{log_path.read_text()[-6000:]}")
    finally:
        core.delete_namespace(namespace)


@pytest.fixture(scope="session")
def operator(
    cluster: DevCluster,
    crd: None,
    api: client.ApiClient,
    core: client.CoreV1Api,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as a real process against the dev cluster, for the tests' t-* namespaces
    (tests that run operators of their own use other namespaces); returned once it reconciles."""
    running = start_operator(cluster, "t-*", tmp_path_factory.mktemp("operator") / "operator.log")
    try:
        wait_until_reconciling(cluster, api, core, running.log_path)
    except BaseException:
        stop_pid(running.process.pid)
        raise
    yield running
    crashed = running.process.poll()
    stop_pid(running.process.pid)
    assert not pid_alive(running.process.pid)
    # Bad input must never crash the operator: it has to be alive after every test.
    assert crashed is None, f"the operator exited with {crashed}; log: {running.log_path}"


@dataclass
class PrometheusProcess:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def prometheus_process(workdir: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[PrometheusProcess]:
    """Debian's prometheus on a free loopback port with these scrape configs (2 s interval),
    ready to query; stopped on exit."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs Debian's prometheus")
    port = free_port()
    config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"}, "scrape_configs": scrape_configs}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError((workdir / "prometheus.log").read_text()[-2000:])
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    try:
        try:
            wait_until("prometheus ready", ready, timeout=60)
        except TimeoutError:
            pytest.fail(f"prometheus did not become ready: {(workdir / 'prometheus.log').read_text()[-2000:]}")
        yield PrometheusProcess(url, process)
    finally:  # also when it never became ready
        stop_pid(process.pid)


@pytest.fixture(scope="session")
def prometheus(
    cluster: DevCluster, core: client.CoreV1Api, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProcess]:
    """Debian's prometheus scraping each Triton pod's metrics port at its pod IP.

    Debian builds Prometheus without Kubernetes service discovery (kubernetes_sd_configs is
    rejected as an unknown field), so discovery is the one stand-in here: a thread lists the
    pods the way `role: pod` would (annotation prometheus.io/scrape, container port "metrics")
    and writes them to a file_sd target file. Scraping and PromQL are Prometheus's own."""
    workdir = tmp_path_factory.mktemp("prometheus")
    targets_file = workdir / "targets.json"
    targets_file.write_text("[]")
    stop = threading.Event()

    def discover() -> None:
        while not stop.wait(1.0):
            try:
                pods = core.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=tritonop").items
            except Exception:  # the API is briefly away (chaos tests): keep the last targets
                continue
            targets = []
            for pod in pods:
                annotations = pod.metadata.annotations or {}
                ports = [p for c in pod.spec.containers for p in c.ports or [] if p.name == "metrics"]
                if annotations.get("prometheus.io/scrape") != "true" or not pod.status.pod_ip or not ports:
                    continue
                labels = {"pod": pod.metadata.name, "namespace": pod.metadata.namespace}
                targets.append({"targets": [f"{pod.status.pod_ip}:{ports[0].container_port}"], "labels": labels})
            tmp = targets_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(targets))
            tmp.replace(targets_file)

    discovery = threading.Thread(target=discover, daemon=True)
    discovery.start()
    scrape = [{"job_name": "triton", "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "2s"}]}]
    try:
        with prometheus_process(workdir, scrape) as running:
            yield running
    finally:
        stop.set()


@pytest.fixture(scope="module")
def real_node(cluster: DevCluster) -> Iterator[RealNode]:
    """The real node (tests/integration/real_node_helpers.py): one already up (`python -m
    devcluster node-up`) is reused and left running."""
    node = RealNode(cluster)
    started = not node.is_up()
    if started:
        node.up()
    yield node
    if started:
        node.down()
