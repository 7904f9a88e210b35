"""Reliability under faults (slow: `make test-chaos`, which CI runs too).

Each scenario runs on the dev cluster with real Triton pods where it matters, and checks at the
end: exactly the expected owned objects (no duplicates, no orphans), status true to the world,
and how many client requests failed. Operators here are processes of their own, watching this
module's c-* namespaces only."""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import pid_alive, stop_pid, wait_until
from loadgen import LoadGenerator

from .conftest import OperatorProcess, start_operator
from .helpers import (
    apply_md,
    events_for,
    get_md,
    infer_version,
    md_condition,
    md_manifest,
    md_pods,
    ready_ips,
    sleepy_spec,
    slow_repository,
    wait_for_condition,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SEED = 20261125


@pytest.fixture
def chaos_namespace(cluster: DevCluster, crd: None, core: client.CoreV1Api) -> Iterator[str]:
    name = f"c-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until("default ServiceAccount", lambda: core.read_namespaced_service_account("default", name) is not None, 30)
    yield name
    core.delete_namespace(name)


@pytest.fixture
def chaos_operator(cluster: DevCluster, chaos_namespace: str, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """A restartable operator for one namespace: the list holds the current process."""
    holder = [start_operator(cluster, chaos_namespace, tmp_path / "operator.log")]
    yield holder
    for running in holder:
        stop_pid(running.process.pid)


def restart_operator(cluster: DevCluster, holder: list[OperatorProcess], namespace: str) -> None:
    """SIGKILL the operator wherever it is, then start a new one (the fault under test)."""
    holder[0].process.send_signal(signal.SIGKILL)
    holder[0].process.wait()
    holder[0] = start_operator(cluster, namespace, holder[0].log_path)


def owned_counts(api: client.ApiClient, core: client.CoreV1Api, namespace: str) -> dict[str, int]:
    selector = "app.kubernetes.io/managed-by=tritonop"
    return {
        "deployments": len(client.AppsV1Api(api).list_namespaced_deployment(namespace, label_selector=selector).items),
        "services": len(core.list_namespaced_service(namespace, label_selector=selector).items),
        "secrets": len(core.list_namespaced_secret(namespace, label_selector=selector).items),
    }


def report(scenario: str, runs: int, converged: bool, sent: int, failed: int, seconds: float) -> None:
    print(
        f"\nCHAOS | {scenario} | runs {runs} | converged {converged} | requests {sent}/{failed} failed | {seconds:.1f}s"
    )


def test_operator_killed_during_creation_of_50(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
) -> None:
    rng = random.Random(SEED)
    items = [md_manifest(f"m{i}", sleepy_spec(replicas=0), chaos_namespace) for i in range(50)]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    started = time.monotonic()
    for _ in range(20):
        time.sleep(rng.uniform(0.05, 0.6))  # a random point in the middle of the work: the fault itself
        restart_operator(cluster, chaos_operator, chaos_namespace)

    def all_ready() -> bool:
        output = cluster.kubectl(
            "get",
            "md",
            "-n",
            chaos_namespace,
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ).stdout
        return output.split().count("True") == 50

    wait_until("50 ModelDeployments Ready", all_ready, timeout=300)
    assert owned_counts(api, core, chaos_namespace) == {"deployments": 50, "services": 50, "secrets": 50}
    report("operator SIGKILL x20 while creating 50", 20, True, 0, 0, time.monotonic() - started)


def test_operator_killed_during_a_version_switch(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
) -> None:
    namespace = chaos_namespace
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    pods_before = {pod.metadata.uid for pod in md_pods(core, namespace, "sleepy")}
    started = time.monotonic()
    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", 20, max_seconds=300) as load:
        for version in (3, 1, 2, 3):
            spec = sleepy_spec(replicas=2)
            spec["model"]["version"] = version
            apply_md(cluster, namespace, "sleepy", spec)
            time.sleep(0.3)  # let the switch begin: the fault must land in the middle of it
            restart_operator(cluster, chaos_operator, namespace)
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
    assert md["status"]["activeVersion"] == 3
    assert {pod.metadata.uid for pod in md_pods(core, namespace, "sleepy")} == pods_before
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}
    assert load.stats.failed == 0, load.stats.errors.most_common(3)
    report(
        "operator SIGKILL during 4 switches", 4, True, load.stats.sent, load.stats.failed, time.monotonic() - started
    )


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_while_the_operator_runs(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
    component: str,
) -> None:
    if cluster.state is None or component not in cluster.state.commands:
        pytest.skip("the cluster was started by an older devcluster without restart support")
    namespace = chaos_namespace
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    started = time.monotonic()
    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", 10, max_seconds=300) as load:
        cluster.restart(component)
        # The operator was not restarted: its watches must come back by themselves.
        spec = sleepy_spec(replicas=1)
        spec["model"]["version"] = 3
        wait_until(
            "the API answering again", lambda: bool(cluster.kubectl("get", "ns", check=False).returncode == 0), 60
        )
        apply_md(cluster, namespace, "sleepy", spec)
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=180)
    assert md["status"]["activeVersion"] == 3
    assert chaos_operator[0].process.poll() is None
    assert load.stats.failed == 0, load.stats.errors.most_common(3)
    report(f"{component} restart", 1, True, load.stats.sent, load.stats.failed, time.monotonic() - started)


def test_triton_process_killed_comes_back_serving_the_target(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
) -> None:
    """One of two autoscaled replicas loses its tritonserver under load: the pod restarts it,
    the operator loads the target again, and the autoscaler neither adds nor removes replicas
    over the dead server (it measures ready pods only, and a restarted server's counters)."""
    namespace = chaos_namespace
    spec = sleepy_spec(autoscaling={"minReplicas": 2, "maxReplicas": 4, "targetLatencyMs": 5000})
    spec["model"]["version"] = 3
    apply_md(cluster, namespace, "sleepy", spec)
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    wait_until("two ready replicas", lambda: len(ready_ips(core, namespace, "sleepy")) == 2, timeout=60)
    victim = md_pods(core, namespace, "sleepy")[0]
    pid_file = cluster.pods_dir / f"{namespace}_{victim.metadata.name}_{victim.metadata.uid}.pid"
    pid = int(pid_file.read_text())
    desired: list[int] = []

    def restarted_and_serving() -> bool:
        desired.append(int(get_md(api, namespace, "sleepy")["status"]["desiredReplicas"]))
        pod = core.read_namespaced_pod(victim.metadata.name, namespace)
        return victim.status.pod_ip in ready_ips(core, namespace, "sleepy") and (
            pod.status.container_statuses[0].restart_count == 1
        )

    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", 10, max_seconds=300) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        started = time.monotonic()
        stop_pid(pid, grace=0)  # SIGTERM the server's process group, SIGKILL if it lingers
        assert not pid_alive(pid)
        wait_until("the server restarted and serving version 3 again", restarted_and_serving, timeout=120)
        wait_until("version 3 answers", lambda: infer_version(victim.status.pod_ip) == 3, timeout=60)
        wait_for_condition(api, namespace, "sleepy", "Ready", "True")
        converged = time.monotonic() - started
        sent_before = load.stats.sent
        wait_until("more load served after the restart", lambda: load.stats.sent >= sent_before + 30, timeout=30)
    assert set(desired) == {2}, f"the autoscaler acted on a dead server: {desired}"
    pods = md_pods(core, namespace, "sleepy")
    assert len(pods) == 2 and victim.metadata.uid in {pod.metadata.uid for pod in pods}, "restarted in place"
    # Requests already on their way to the killed server fail (no client retries here); the
    # other replica must have answered everything sent to it.
    assert all(error.startswith(f"{victim.status.pod_ip}:") for error in load.stats.errors), load.stats.errors
    report("tritonserver killed (autoscaled, under load)", 1, True, load.stats.sent, load.stats.failed, converged)


def test_twenty_quick_edits_end_in_the_last_spec(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
) -> None:
    namespace = chaos_namespace
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    rng = random.Random(SEED)
    started = time.monotonic()
    last: dict[str, Any] = {}
    for _ in range(20):
        last = sleepy_spec(replicas=rng.choice([1, 2, 3]))
        last["model"]["version"] = rng.choice([1, 2, 3])
        last["model"]["config"] = {"maxBatchSize": rng.choice([2, 4, 8])}
        apply_md(cluster, namespace, "sleepy", last)
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=180)
    wait_until(
        "replicas as the last spec says",
        lambda: (
            len(ready_ips(core, namespace, "sleepy")) == last["replicas"]
            and len(md_pods(core, namespace, "sleepy")) == last["replicas"]
        ),
        timeout=120,
    )
    md = get_md(api, namespace, "sleepy")
    assert md["status"]["activeVersion"] == last["model"]["version"]
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {last["model"]["version"]}
    log = chaos_operator[0].log_path.read_text()
    assert "reconcile failed" not in log, "conflicts must be retried quietly, not surface as errors"
    assert owned_counts(api, core, namespace) == {"deployments": 1, "services": 1, "secrets": 1}
    report("20 quick spec edits", 20, True, 0, 0, time.monotonic() - started)


def test_deletion_while_the_operator_is_down(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
) -> None:
    namespace = chaos_namespace
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True")
    assert not get_md(api, namespace, "sleepy")["metadata"].get("finalizers"), "no finalizer to get stuck"
    stop_pid(chaos_operator[0].process.pid)
    started = time.monotonic()
    # The operator holds no finalizer: deletion completes without it, and GC removes the rest.
    cluster.kubectl("delete", "md", "sleepy", "-n", namespace, "--timeout=30s")
    wait_until(
        "owned objects collected",
        lambda: owned_counts(api, core, namespace) == dict.fromkeys(("deployments", "services", "secrets"), 0),
        timeout=60,
    )
    chaos_operator[0] = start_operator(cluster, namespace, chaos_operator[0].log_path)
    assert owned_counts(api, core, namespace) == {"deployments": 0, "services": 0, "secrets": 0}
    report("delete while operator down", 1, True, 0, 0, time.monotonic() - started)


def test_a_leftover_finalizer_goes_the_documented_way(
    cluster: DevCluster, api: client.ApiClient, chaos_namespace: str, chaos_operator: list[OperatorProcess]
) -> None:
    """A finalizer tritonop never adds (an older release's, or a hand-added one) with the
    operator gone for good: deletion waits on it, and the README's command ends the wait."""
    namespace = chaos_namespace
    manifest = md_manifest("stuck", sleepy_spec(replicas=0), namespace)
    manifest["metadata"]["finalizers"] = ["tritonop.dev/finalizer"]
    # Operator first gone: a running one strips its finalizer from every object (kopf does, as no
    # deletion handler needs it), so it never stays stuck while tritonop runs.
    stop_pid(chaos_operator[0].process.pid)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    cluster.kubectl("delete", "md", "stuck", "-n", namespace, "--wait=false")
    assert get_md(api, namespace, "stuck")["metadata"]["deletionTimestamp"], "deletion waits on the finalizer"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = next(line for line in readme.splitlines() if "kubectl patch md/NAME" in line)
    patch = documented.split("-p '", 1)[1].split("'", 1)[0]
    cluster.kubectl("patch", "md/stuck", "-n", namespace, "--type=json", "-p", patch)
    wait_until(
        "the object gone",
        lambda: "stuck" not in cluster.kubectl("get", "md", "-n", namespace, "-o", "name").stdout,
        timeout=30,
    )


# -- admission fuzzing -----------------------------------------------------------------------------
integers = st.integers(min_value=-5, max_value=40)
specs = st.fixed_dictionaries(
    {
        "model": st.fixed_dictionaries(
            {
                "repository": st.sampled_from(
                    ["file:///srv/m", "pvc://models/a", "s3://bucket-1/x", "ftp://x", "models", "pvc://"]
                )
            },
            optional={
                "version": integers,
                "config": st.fixed_dictionaries({}, optional={"maxBatchSize": integers, "instanceCount": integers}),
            },
        ),
    },
    optional={
        "replicas": integers,
        "server": st.fixed_dictionaries(
            {},
            optional={
                "gpus": integers,
                "extraArgs": st.lists(
                    st.sampled_from(
                        ["--log-verbose=1", "--http-port=1", "--model-control-mode=poll", "--exit-timeout-secs=5"]
                    ),
                    max_size=3,
                ),
                "gpuResourceName": st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "amd.com/gpu"]),
            },
        ),
        "autoscaling": st.fixed_dictionaries(
            {"maxReplicas": integers, "targetLatencyMs": integers},
            optional={"minReplicas": integers, "metric": st.sampled_from(["p95", "p99", "average", "queue", "p90"])},
        ),
        "rollout": st.fixed_dictionaries(
            {"strategy": st.sampled_from(["InPlace", "Recreate", "Rolling", "BlueGreen"])}
        ),
    },
)


def expected_valid(spec: dict[str, Any]) -> bool:
    """The rules the API promises, written out independently of the CRD."""
    model = spec["model"]
    if model["repository"] in ("ftp://x", "models", "pvc://"):
        return False
    if model.get("version", 1) < 1 or model.get("config", {}).get("maxBatchSize", 0) < 0:
        return False
    if model.get("config", {}).get("instanceCount", 1) < 1 or model.get("config", {}).get("instanceCount", 1) > 64:
        return False
    if spec.get("replicas", 0) < 0 or ("replicas" in spec and "autoscaling" in spec):
        return False
    server = spec.get("server", {})
    if not 0 <= server.get("gpus", 1) <= 16 or server.get("gpuResourceName") == "amd.com/gpu":
        return False
    if server.get("gpuResourceName", "").startswith("nvidia.com/mig-") and server.get("gpus", 1) > 1:
        return False  # a CUDA process sees one MIG device
    if any(arg in ("--http-port=1", "--model-control-mode=poll") for arg in server.get("extraArgs", [])):
        return False
    auto = spec.get("autoscaling")
    if auto is not None:
        if auto["maxReplicas"] < 1 or auto["targetLatencyMs"] < 1 or auto.get("minReplicas", 1) < 1:
            return False
        if auto.get("minReplicas", 1) > auto["maxReplicas"] or auto.get("metric") == "p90":
            return False
    return spec.get("rollout", {}).get("strategy") != "BlueGreen"


FIELD_NAMES = ("spec.", "metadata.name")


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(spec=specs)
def test_admission_fuzz(cluster: DevCluster, crd: None, spec: dict[str, Any]) -> None:
    manifest = yaml.safe_dump(md_manifest("fuzz", spec, "default"))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    if expected_valid(spec):
        assert result.returncode == 0, f"refused a valid spec {spec}: {result.stderr}"
    else:
        assert result.returncode != 0, f"accepted an invalid spec {spec}"
        assert any(name in result.stderr for name in FIELD_NAMES), result.stderr


def test_fuzzed_valid_specs_reconcile_without_an_operator_exception(
    cluster: DevCluster, api: client.ApiClient, chaos_namespace: str, chaos_operator: list[OperatorProcess]
) -> None:
    examples: list[dict[str, Any]] = []

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(spec=specs)
    def collect(spec: dict[str, Any]) -> None:
        if expected_valid(spec) and len(examples) < 25:
            spec = json.loads(json.dumps(spec))
            spec["model"]["repository"] = "file:///nonexistent"  # reconciled for real, never served
            if "autoscaling" in spec:  # one replica each: the point is the reconcile, not the pods
                spec["autoscaling"].update(minReplicas=1, maxReplicas=1)
            else:
                spec["replicas"] = 0
            examples.append(spec)

    collect()
    assert len(examples) >= 10
    for index, spec in enumerate(examples):
        apply_md(cluster, chaos_namespace, f"f{index}", spec)
    for index in range(len(examples)):
        wait_for_condition(api, chaos_namespace, f"f{index}", "RepositoryValid", "False", "RepositoryNotFound", 120)
    log = chaos_operator[0].log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_bad_model_while_autoscaling_up_keeps_the_old_replica_serving(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    chaos_operator: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    """The served version's files go corrupt, then load rises: the autoscaler adds replicas that
    cannot load it. The replica that has it in memory keeps serving, the new ones never get
    traffic, a condition and a Warning say why; once the files are repaired the new ones load."""
    namespace = chaos_namespace
    repository = slow_repository(tmp_path / "repo", "slow", 100)  # one replica: 10 requests/s
    spec = {
        "model": {"name": "slow", "repository": f"file://{repository}"},
        "server": {"gpus": 1},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "metric": "p95",
            "targetLatencyMs": 150,
            "scaleDownStabilizationSeconds": 300,
        },
    }
    apply_md(cluster, namespace, "slow", spec)
    wait_for_condition(api, namespace, "slow", "Ready", "True")
    serving = ready_ips(core, namespace, "slow")
    model_file = repository / "slow" / "1" / "model.py"
    good = model_file.read_text()
    model_file.write_text("raise ImportError('corrupt weights file: truncated at byte 4096')\n")
    started = time.monotonic()
    with LoadGenerator(lambda: ready_ips(core, namespace, "slow"), "slow", 8, max_seconds=300) as load:
        wait_until(
            "a scale-up", lambda: get_md(api, namespace, "slow")["status"].get("desiredReplicas", 1) >= 2, timeout=120
        )
        md = wait_for_condition(api, namespace, "slow", "ModelLoaded", "False", "LoadFailed", timeout=120)
        assert "corrupt weights file" in md_condition(md, "ModelLoaded")["message"]
        assert ready_ips(core, namespace, "slow") == serving, "a replica that cannot load must get no traffic"
        assert md["status"]["readyReplicas"] == 1
        warnings = [e for e in events_for(core, namespace, "slow") if e.reason == "LoadFailed"]
        assert warnings and all(e.type == "Warning" for e in warnings)

        model_file.write_text(good)  # repaired: the operator retries failed loads by itself
        wait_until("a second replica serving", lambda: len(ready_ips(core, namespace, "slow")) >= 2, timeout=120)
        wait_for_condition(api, namespace, "slow", "ModelLoaded", "True", "Loaded", timeout=60)
    assert load.stats.failed == 0, load.stats.errors.most_common(3)
    report(
        "bad model while autoscaling up (then repaired)",
        1,
        True,
        load.stats.sent,
        load.stats.failed,
        time.monotonic() - started,
    )


def leader_of(operators: list[OperatorProcess]) -> list[OperatorProcess]:
    return [op for op in operators if op.process.poll() is None and op.metrics().get("tritonop_leader") == 1]


def test_two_operators_at_once_only_the_leader_writes(
    cluster: DevCluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    chaos_namespace: str,
    tmp_path: Path,
) -> None:
    """Two operator processes at once, as during a rolling upgrade of the shipped Deployment
    (2 replicas, --leader-elect): the standby writes nothing; a clean stop hands over at once;
    a SIGKILLed leader is replaced after the lease expires; switches under load lose nothing."""
    namespace = chaos_namespace
    election = (
        "--leader-elect",
        f"--leader-election-namespace={namespace}",
        "--lease-duration=4",
        "--renew-deadline=3",
        "--retry-period=0.5",
    )
    operators = [
        start_operator(cluster, namespace, tmp_path / f"operator-{i}.log", extra_args=election) for i in (0, 1)
    ]
    try:
        wait_until("one leader", lambda: len(leader_of(operators)) == 1, timeout=30)
        leader = leader_of(operators)[0]
        standby = next(op for op in operators if op is not leader)
        apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
        wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
        pods_before = {pod.metadata.uid for pod in md_pods(core, namespace, "sleepy")}
        started = time.monotonic()
        with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", 20, max_seconds=300) as load:
            # Both processes up: a switch is done by the leader alone.
            spec = sleepy_spec(replicas=2)
            spec["model"]["version"] = 3
            apply_md(cluster, namespace, "sleepy", spec)
            wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
            assert leader.write_requests(excluding=("leases",)) > 0
            assert standby.write_requests(excluding=("leases",)) == 0, "the standby wrote to the cluster"

            # Upgrade: the leader is stopped cleanly in the middle of a switch and hands over.
            spec["model"]["version"] = 1
            apply_md(cluster, namespace, "sleepy", spec)
            stopped_at = time.monotonic()
            leader.process.send_signal(signal.SIGTERM)
            wait_until("hand-over to the standby", lambda: leader_of(operators) == [standby], timeout=30)
            handover = time.monotonic() - stopped_at
            assert leader.process.wait(timeout=30) == 0
            operators.append(start_operator(cluster, namespace, tmp_path / "operator-2.log", extra_args=election))
            newcomer = operators[-1]
            wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
            assert get_md(api, namespace, "sleepy")["status"]["activeVersion"] == 1

            # Crash: the leader is SIGKILLed in the middle of a switch; the newcomer waits out the lease.
            spec["model"]["version"] = 2
            apply_md(cluster, namespace, "sleepy", spec)
            killed_at = time.monotonic()
            standby.process.send_signal(signal.SIGKILL)
            standby.process.wait()
            wait_until("takeover after the lease expired", lambda: leader_of(operators) == [newcomer], timeout=60)
            takeover = time.monotonic() - killed_at
            md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving", timeout=120)
        assert md["status"]["activeVersion"] == 2
        assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {2}
        assert {pod.metadata.uid for pod in md_pods(core, namespace, "sleepy")} == pods_before
        assert owned_counts(api, core, namespace) == {"deployments": 1, "services": 1, "secrets": 1}
        assert load.stats.failed == 0, load.stats.errors.most_common(3)

        # No fight over the objects: several resyncs later (5 s each here) the Deployment is untouched.
        deployment = client.AppsV1Api(api).read_namespaced_deployment("sleepy", namespace)
        reconciles = newcomer.metrics()['tritonop_reconciles_total{result="success"}']
        wait_until(
            "two more resyncs",
            lambda: newcomer.metrics()['tritonop_reconciles_total{result="success"}'] >= reconciles + 2,
            timeout=60,
        )
        again = client.AppsV1Api(api).read_namespaced_deployment("sleepy", namespace)
        assert again.metadata.generation == deployment.metadata.generation
        managers = {entry.manager for entry in again.metadata.managed_fields if entry.operation == "Apply"}
        assert managers == {"tritonop"}
        print(f"\nleader election: clean hand-over {handover:.1f}s, takeover after SIGKILL {takeover:.1f}s (lease 4s)")
        report(
            "two operators at once (upgrade hand-over + leader SIGKILL)",
            2,
            True,
            load.stats.sent,
            load.stats.failed,
            time.monotonic() - started,
        )
    finally:
        for running in operators:
            stop_pid(running.process.pid)
