"""Users' traffic through a ModelDeployment's Service on the real node, while the operator (run
from its image, installed with Helm) switches versions, runs canaries and scales: HTTP clients
that keep their connection open and gRPC clients that keep their channel, in their own network
namespace, calling the Service's ClusterIP through kube-proxy (loadgen/service_clients.py).

Each phase's failed requests are counted from the clients' own record, per whole second, between
the moment the test changed the spec and the moment the change was complete."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from devcluster.realnode import RealNode
from devcluster.volumes import host_path_claim
from loadgen import MODEL_REPO, slow_repository

from .conftest import fresh_namespace
from .helpers import (
    GROUP,
    PLURAL,
    VERSION,
    apply_md,
    canary_repository,
    get_md,
    md_pods,
    one_copy_repository,
    token_generator_repository,
    wait_for_condition,
)
from .real_node_helpers import (
    NEEDS_ROOT_AND_TOOLS,
    ServiceClients,
    failures,
    helm_operator,
    model_spec,
    readable_repository,
)

pytestmark = NEEDS_ROOT_AND_TOOLS


@pytest.fixture(scope="module")
def watched(real_node: RealNode, cluster: DevCluster, crd: None, api: client.ApiClient) -> Iterator[str]:
    """A namespace (x-*: no other test's operator watches it) that the Helm-installed operator watches."""
    core = client.CoreV1Api(api)
    namespace = fresh_namespace(core, prefix="x")
    try:
        with helm_operator(real_node, api, namespace):
            yield namespace
    finally:
        core.delete_namespace(namespace)


def ready_pods(core: client.CoreV1Api, namespace: str, model: str) -> list[str]:
    return [
        pod.metadata.name
        for pod in md_pods(core, namespace, model)
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def only_pods(core: client.CoreV1Api, namespace: str, model: str, count: int) -> None:
    """Until exactly `count` pods of the model exist, all Ready: the others are gone, not only
    terminating (a leaving pod serves its connections until tritonserver exits)."""
    selector = f"app.kubernetes.io/instance={model},app.kubernetes.io/name=tritonserver"
    wait_until(
        f"{count} pods of {model}, all Ready, none terminating",
        lambda: (
            len(core.list_namespaced_pod(namespace, label_selector=selector).items)
            == count
            == len(ready_pods(core, namespace, model))
        ),
        timeout=150,
        interval=0.5,
    )


def test_switch_rolling_and_scale_down_fail_no_request_through_the_service(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    spec = model_spec(real_node, "sleepy", MODEL_REPO, 2)
    apply_md(cluster, watched, "sleepy", spec)
    wait_for_condition(api, watched, "sleepy", "Ready", "True", timeout=180)
    cluster_ip = core.read_namespaced_service("sleepy", watched).spec.cluster_ip  # type: ignore[union-attr]
    phases: dict[str, tuple[float, float]] = {}

    def phase(name: str, change: dict[str, Any], done: Any) -> None:
        spec.update(change)
        began = time.time()
        apply_md(cluster, watched, "sleepy", spec)
        done()
        clients.wait_answers(20)
        phases[name] = (began, time.time())

    out = tmp_path / "clients.json"
    with ServiceClients(real_node, cluster_ip, "sleepy", out, http=6, http_forever=2, grpc=2, rate=4) as clients:
        clients.wait_answers(20, timeout=90)  # kube-proxy has the endpoints; both kinds answered
        pods = set(ready_pods(core, watched, "sleepy"))

        def switched() -> None:
            clients.wait_only("2")
            wait_for_condition(api, watched, "sleepy", "Ready", "True", timeout=60)

        phase("in-place switch v1 -> v2", {"model": {**spec["model"], "version": 2}}, switched)
        assert set(ready_pods(core, watched, "sleepy")) == pods, "an in-place switch keeps the pods"

        def rolled() -> None:
            clients.wait_only("3", timeout=180)
            only_pods(core, watched, "sleepy", 2)
            wait_for_condition(api, watched, "sleepy", "Ready", "True", timeout=60)

        phase(
            "Rolling v2 -> v3", {"model": {**spec["model"], "version": 3}, "rollout": {"strategy": "Rolling"}}, rolled
        )
        phase("scale-down 2 -> 1", {"replicas": 1}, lambda: only_pods(core, watched, "sleepy", 1))
        staying = set(ready_pods(core, watched, "sleepy"))
        new_pod_served: list[float] = []

        def new_pod_serves() -> None:
            # A new replica gets only new connections: gRPC channels at their maximum age, HTTP
            # clients when they renew. Until its Triton has answered 40 requests.
            only_pods(core, watched, "sleepy", 2)
            ready_at = time.monotonic()
            (new,) = set(ready_pods(core, watched, "sleepy")) - staying
            ip = core.read_namespaced_pod(new, watched).status.pod_ip  # type: ignore[union-attr]
            wait_until(
                f"the new replica {new} serving 40 requests",
                lambda: served_requests(real_node, ip, "sleepy") >= 40,
                timeout=60,
                interval=1,
            )
            new_pod_served.append(time.monotonic() - ready_at)

        phase("scale-up 1 -> 2", {"replicas": 2}, new_pod_serves)
        seen = clients.stop()

    report = {name: failures(seen, *window) for name, window in phases.items()}
    for name, (began, ended) in phases.items():
        answered = {
            kind: sum(v for k, v in part.counts(began, ended).items() if k != "failed") for kind, part in seen.items()
        }
        print(f"{name}: {ended - began:.1f}s, answered {answered}, failed {report[name]}")
    print({kind: part.record["errors"] for kind, part in seen.items()})
    assert get_md(api, watched, "sleepy")["status"]["conditions"]
    # An in-place switch keeps the pods: no client notices, whatever it does with its connection.
    assert report["in-place switch v1 -> v2"] == {"http": 0, "http-forever": 0, "grpc": 0}
    # A leaving pod: gRPC channels reach their maximum age and move during the preStop sleep;
    # HTTP clients that renew their connection move during tritonserver's exit timeout. HTTP
    # clients that never renew theirs are cut when it ends (measured, docs/real-node.md).
    for name in ("Rolling v2 -> v3", "scale-down 2 -> 1"):
        assert {kind: report[name][kind] for kind in ("http", "grpc")} == {"http": 0, "grpc": 0}, name
    print(f"scale-up: the new replica served 40 requests {new_pod_served[0]:.1f}s after it was Ready")
    assert report["scale-up 1 -> 2"] == {"http": 0, "http-forever": 0, "grpc": 0}


def served_requests(node: RealNode, pod_ip: str, model: str) -> float:
    """The model's successful requests on one pod, from its Triton's metrics (read from the
    clients' network namespace: the operator's view, not the clients')."""
    from tritonop.promtext import samples

    url = f"http://{pod_ip}:8002/metrics"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    argv = node.in_netns(sys.executable, "-c", code, netns=node.client_netns)
    page = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout
    return sum(
        value for _, labels, value in samples(page, ["nv_inference_request_success"]) if labels["model"] == model
    )


CANARY = {
    "steps": [{"weight": 25, "pauseSeconds": 20}, {"weight": 50, "pauseSeconds": 10}],
    "analysis": {"intervalSeconds": 5, "minRequests": 20, "maxLatencyIncreasePercent": 50, "failureLimit": 0},
}


def test_canary_promoted_and_rolled_back_fail_no_request_through_the_service(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str, tmp_path: Path
) -> None:
    # A healthy canary (v2) is promoted and a slow one (v3) rolled back, in place, while clients
    # call the Service: none of their requests fails. Each analysis window's measured share is
    # within 10 points of its step's weight, or its message says why (clients' connections).
    core = client.CoreV1Api(api)
    with readable_repository("canary-repo-", canary_repository) as repository:
        spec = model_spec(real_node, "canary", repository, 4, rollout={"strategy": "Canary", "canary": CANARY})
        apply_md(cluster, watched, "canary", spec)
        wait_for_condition(api, watched, "canary", "Ready", "True", timeout=240)
        cluster_ip = core.read_namespaced_service("canary", watched).spec.cluster_ip  # type: ignore[union-attr]
        pods = set(ready_pods(core, watched, "canary"))
        windows: list[dict[str, Any]] = []  # every analysis the rollout recorded
        steps: dict[int, list[float]] = {}  # step -> [first seen analysing, last seen]

        def rollout_reaches(phase: str) -> bool:
            rollout = get_md(api, watched, "canary")["status"].get("rollout") or {}
            analysis = rollout.get("lastAnalysis")
            if analysis and (not windows or windows[-1] != analysis):
                windows.append(analysis)
            if rollout.get("phase") == "Progressing" and rollout.get("stepStartedAt"):
                steps.setdefault(rollout["step"], [time.time(), time.time()])[1] = time.time()
            return rollout.get("phase") == phase

        out = tmp_path / "clients.json"
        with ServiceClients(real_node, cluster_ip, "canary", out, http=12, grpc=4, rate=2) as clients:
            clients.wait_answers(20, timeout=90)
            healthy_began = time.time()
            apply_md(cluster, watched, "canary", {**spec, "model": {**spec["model"], "version": 2}})
            wait_until("v2 promoted", lambda: rollout_reaches("Succeeded"), timeout=300, interval=0.5)
            clients.wait_only("2")
            healthy = (healthy_began, time.time())
            healthy_windows, windows[:] = list(windows), []
            bad_began = time.time()
            apply_md(cluster, watched, "canary", {**spec, "model": {**spec["model"], "version": 3}})
            wait_until("v3 rolled back", lambda: rollout_reaches("RolledBack"), timeout=300, interval=0.5)
            clients.wait_only("2")
            rolled_back = (bad_began, time.time())
            seen = clients.stop()

    for name, (began, ended) in (("healthy canary v1 -> v2", healthy), ("canary v2 -> v3 rolled back", rolled_back)):
        print(f"{name}: {ended - began:.1f}s, failed {failures(seen, began, ended)}")
    for step, (began, ended) in sorted(steps.items()):
        shares = {
            kind: round(part.share("2", began, ended), 1) for kind, part in seen.items() if kind != "http-forever"
        }
        print(f"step {step}: the clients' share of v2 answers {shares}")
    for window in healthy_windows:
        share, message = window["measuredShare"], window["message"]
        print(f"step {window['step']} at {window['weight']}%: measured share {share}%: {message}")
    assert failures(seen, *healthy) == {"http": 0, "http-forever": 0, "grpc": 0}
    assert failures(seen, *rolled_back) == {"http": 0, "http-forever": 0, "grpc": 0}
    assert set(ready_pods(core, watched, "canary")) == pods, "a canary switches in place: the pods stay"
    assert sorted(steps) == [1, 2]
    assert healthy_windows
    for window in healthy_windows:
        if window.get("measuredShare") is not None:
            off = abs(window["measuredShare"] - window["weight"])
            assert off <= 10 or "clients that keep connections open" in window["message"], window


def test_a_pod_by_pod_swap_fails_no_request_of_clients_that_reconnect(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str, tmp_path: Path
) -> None:
    # A version that does not fit beside the old one is switched pod by pod: a pod leaves the
    # Service (its gate closed), its clients move, then it unloads and loads. gRPC channels move
    # at their maximum age; HTTP clients that renew their connection move when they do.
    core = client.CoreV1Api(api)
    with readable_repository("onecopy-repo-", one_copy_repository) as repository:
        spec = model_spec(real_node, "onecopy", repository, 2, rollout={"strategy": "InPlace"})
        apply_md(cluster, watched, "onecopy", spec)
        wait_for_condition(api, watched, "onecopy", "Ready", "True", timeout=240)
        cluster_ip = core.read_namespaced_service("onecopy", watched).spec.cluster_ip  # type: ignore[union-attr]
        pods = set(ready_pods(core, watched, "onecopy"))
        out = tmp_path / "clients.json"
        with ServiceClients(real_node, cluster_ip, "onecopy", out, http=6, grpc=2, rate=4) as clients:
            clients.wait_answers(20, timeout=90)
            began = time.time()
            apply_md(cluster, watched, "onecopy", {**spec, "model": {**spec["model"], "version": 2}})
            clients.wait_only("2", timeout=300)
            wait_for_condition(api, watched, "onecopy", "Ready", "True", timeout=120)
            clients.wait_answers(20)
            ended = time.time()
            seen = clients.stop()
    md = get_md(api, watched, "onecopy")
    reasons = [
        event.reason for event in core.list_namespaced_event(watched).items if event.involved_object.name == "onecopy"
    ]
    print(f"pod-by-pod swap v1 -> v2: {ended - began:.1f}s, failed {failures(seen, began, ended)}")
    assert "VersionDoesNotFitTwice" in reasons and reasons.count("VersionSwapped") >= 2, reasons
    assert md["status"]["activeVersion"] == 2
    assert set(ready_pods(core, watched, "onecopy")) == pods, "a swap keeps the pods"
    assert failures(seen, began, ended) == {"http": 0, "http-forever": 0, "grpc": 0}


def test_a_streaming_model_switches_in_place_with_no_failed_stream_through_the_service(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str, tmp_path: Path
) -> None:
    # LLM clients as users run them, through the Service's ClusterIP and kube-proxy: Triton's HTTP
    # generate_stream (server-sent events) on keep-alive connections, and gRPC streams kept open.
    # The token generator switches from version 1 to 2 (slower decode steps) in place: every
    # stream gets all its tokens, both kinds are answered by version 2 after, the pods stay.
    core = client.CoreV1Api(api)
    with readable_repository("tokens-repo-", token_generator_repository) as repository:
        spec = model_spec(real_node, "tokens", repository, 2)
        apply_md(cluster, watched, "tokens", spec)
        wait_for_condition(api, watched, "tokens", "Ready", "True", timeout=240)
        cluster_ip = core.read_namespaced_service("tokens", watched).spec.cluster_ip  # type: ignore[union-attr]
        pods = set(ready_pods(core, watched, "tokens"))
        out = tmp_path / "clients.json"
        with ServiceClients(
            real_node, cluster_ip, "tokens", out, http=0, grpc=0, sse=4, grpc_stream=2, rate=2
        ) as clients:
            clients.wait_answers(10, timeout=90)
            began = time.time()
            apply_md(cluster, watched, "tokens", {**spec, "model": {**spec["model"], "version": 2}})
            clients.wait_only("2")
            wait_for_condition(api, watched, "tokens", "Ready", "True", timeout=60)
            clients.wait_answers(10)
            ended = time.time()
            seen = clients.stop()
        pods_after = set(ready_pods(core, watched, "tokens"))
        # Its pods would only take CPU from the tests after it.
        client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, "tokens")
    answered = {kind: seen[kind].counts(began, ended) for kind in ("sse", "grpc-stream")}
    print(f"streaming switch v1 -> v2 through the Service: {ended - began:.1f}s, answered {answered}")
    print({kind: part.record["errors"] for kind, part in seen.items()})
    assert failures(seen, began, ended) == {"http": 0, "http-forever": 0, "grpc": 0, "sse": 0, "grpc-stream": 0}
    for kind in ("sse", "grpc-stream"):
        assert seen[kind].counts(0, began).get("1", 0) >= 10, kind  # served by version 1 before the switch
    assert pods_after == pods, "an in-place switch keeps the pods"


TOKENS_CANARY = {
    "steps": [{"weight": 50, "pauseSeconds": 20}],
    "analysis": {"intervalSeconds": 10, "minRequests": 8, "maxLatencyIncreasePercent": 50, "failureLimit": 0},
}


def test_a_streaming_canary_is_rolled_back_on_its_token_latencies_through_the_service(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str, tmp_path: Path
) -> None:
    # The token generator's version 2 has decode steps four times as long. Its canary (one of two
    # pods) is judged on TTFT and ITL from the pods' vLLM-style families and switched back in
    # place, while SSE and gRPC-stream clients call the Service: no stream fails.
    core = client.CoreV1Api(api)
    with readable_repository("tokens-canary-repo-", token_generator_repository) as repository:
        spec = model_spec(
            real_node, "tokens-canary", repository, 2, rollout={"strategy": "Canary", "canary": TOKENS_CANARY}
        )
        spec["model"]["name"] = "tokens"
        apply_md(cluster, watched, "tokens-canary", spec)
        wait_for_condition(api, watched, "tokens-canary", "Ready", "True", timeout=240)
        cluster_ip = core.read_namespaced_service("tokens-canary", watched).spec.cluster_ip  # type: ignore[union-attr]
        pods = set(ready_pods(core, watched, "tokens-canary"))
        out = tmp_path / "clients.json"
        with ServiceClients(
            real_node, cluster_ip, "tokens", out, http=0, grpc=0, sse=4, grpc_stream=2, rate=2
        ) as clients:
            clients.wait_answers(10, timeout=90)
            began = time.time()
            apply_md(cluster, watched, "tokens-canary", {**spec, "model": {**spec["model"], "version": 2}})

            def rolled_back() -> bool:
                rollout = get_md(api, watched, "tokens-canary")["status"].get("rollout") or {}
                return rollout.get("phase") == "RolledBack"

            wait_until("the canary rolled back", rolled_back, timeout=240, interval=0.5)
            clients.wait_only("1")
            ended = time.time()
            seen = clients.stop()
        analysis = get_md(api, watched, "tokens-canary")["status"]["rollout"]["lastAnalysis"]
        pods_after = set(ready_pods(core, watched, "tokens-canary"))
        client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, "tokens-canary")
    answered = {kind: seen[kind].counts(began, ended) for kind in ("sse", "grpc-stream")}
    print(f"streaming canary v1 -> v2 rolled back through the Service: {ended - began:.1f}s, answered {answered}")
    print(f"analysis: {analysis['reason']}: {analysis['message']}")
    assert analysis["reason"] in ("InterTokenLatencyRegression", "TimeToFirstTokenRegression"), analysis
    assert analysis["canary"]["interTokenLatencyMs"] > 1.5 * analysis["stable"]["interTokenLatencyMs"], analysis
    assert failures(seen, began, ended) == {"http": 0, "http-forever": 0, "grpc": 0, "sse": 0, "grpc-stream": 0}
    assert pods_after == pods, "a canary switches in place: the pods stay"


def test_a_model_that_loads_for_a_minute_is_not_restarted_by_the_kubelets_probes(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str
) -> None:
    # The kubelet runs the startup, liveness and readiness probes the operator renders. A large
    # model loads for minutes: its server must stay live (no restart) and the pod must not be
    # Ready until it serves. 60 s is twice what liveness alone tolerates (3 x 10 s).
    core = client.CoreV1Api(api)

    def slow(root: Path) -> Path:
        return slow_repository(root, "slowload", batch_ms=20, load_delay_s=60)

    with readable_repository("slow-repo-", slow) as repository:
        spec = model_spec(real_node, "slowload", repository, 1)
        del spec["model"]["version"]  # the repository's highest
        created = time.monotonic()
        apply_md(cluster, watched, "slowload", spec)
        wait_until("the pod's container running", lambda: bool(ready_or_running(core, watched)), timeout=120)
        running = time.monotonic()
        assert not ready_pods(core, watched, "slowload"), "Ready before the model loaded"
        wait_for_condition(api, watched, "slowload", "Ready", "True", timeout=240)
        ready = time.monotonic()
    pod = md_pods(core, watched, "slowload")[0]
    restarts = pod.status.container_statuses[0].restart_count  # type: ignore[index,union-attr]
    probe_events = [
        event.message
        for event in core.list_namespaced_event(watched).items
        if event.involved_object.name == pod.metadata.name and event.reason in ("Unhealthy", "Killing")
    ]
    print(
        f"slow load: container running {running - created:.1f}s, Ready {ready - created:.1f}s after apply;",
        probe_events,
    )
    assert ready - running >= 55, "the pod was Ready before its 60 s load ended"
    assert restarts == 0 and not any("Liveness" in message or "Startup" in message for message in probe_events)
    cluster.kubectl("delete", "modeldeployment", "slowload", "-n", watched, "--wait=true", "--timeout=90s")


def ready_or_running(core: client.CoreV1Api, namespace: str) -> list[str]:
    """Names of the model's pods whose container runs (started, Ready or not)."""
    return [
        pod.metadata.name
        for pod in md_pods(core, namespace, "slowload")
        if any(status.state.running for status in pod.status.container_statuses or [])
    ]


def test_a_node_cache_serves_through_the_service_and_prefetches_a_switch(
    real_node: RealNode, cluster: DevCluster, api: client.ApiClient, watched: str, tmp_path: Path
) -> None:
    # spec.model.cache in a real kubelet and containerd: the staging Job (operator image) writes
    # the node's cache folder through a hostPath PersistentVolume's claim; the servers mount it
    # read-only with subPathExpr (the node's name) and load through relative links; a switch is
    # staged on the node first. Clients call the Service throughout.
    from tritonop.repository import tools

    core = client.CoreV1Api(api)

    def write(root: Path) -> Path:
        for version in (1, 2):
            shutil.copytree(MODEL_REPO / "sleepy" / str(version), root / "sleepy" / str(version))
            tools.write_manifest(root / "sleepy" / str(version))
        shutil.copy(MODEL_REPO / "sleepy" / "config.pbtxt", root / "sleepy" / "config.pbtxt")
        return root

    cache = Path(tempfile.mkdtemp(prefix="tritonop-cache-", dir="/var/tmp"))
    cache.chmod(0o777)  # the stager runs as uid 1000: the platform team makes the folder writable by it
    volume = f"cache-{watched}"
    claim = host_path_claim(watched, "model-cache", volume, cache)
    try:
        with readable_repository("cache-repo-", write) as repository:
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(claim))
            spec = model_spec(real_node, "sleepy", repository, 2)
            spec["model"]["cache"] = {"claimName": "model-cache", "budget": "64Mi"}
            apply_md(cluster, watched, "cached", spec)
            md = wait_for_condition(api, watched, "cached", "Ready", "True", timeout=180)
            (entry,) = md["status"]["cache"]
            assert (entry["node"], entry["version"], entry["state"]) == (real_node.name, 1, "Staged"), entry
            node_cache = cache / real_node.name
            assert (node_cache / "repos" / f"{watched}.cached" / "sleepy" / "1").is_symlink()
            # A third pod on the node starts warm: no staging, only its server's start and load.
            before = set(ready_pods(core, watched, "cached"))
            scaled = time.monotonic()
            apply_md(cluster, watched, "cached", {**spec, "replicas": 3})
            wait_until("a third pod Ready", lambda: len(ready_pods(core, watched, "cached")) == 3, timeout=120)
            warm_s = time.monotonic() - scaled
            (third,) = set(ready_pods(core, watched, "cached")) - before

            def measured() -> dict[str, Any]:
                return dict(get_md(api, watched, "cached")["status"].get("startup") or {})

            wait_until("the third pod's start in status", lambda: measured().get("pod") == third, timeout=30)
            print(f"warm pod on the real node: Ready {warm_s:.1f} s after the replica write; {measured()}")
            assert measured()["stagingSeconds"] == 0  # its node held the version: nothing was staged for it
            spec = {**spec, "replicas": 3}
            cluster_ip = core.read_namespaced_service("cached", watched).spec.cluster_ip  # type: ignore[union-attr]
            out = tmp_path / "clients.json"
            with ServiceClients(real_node, cluster_ip, "sleepy", out, http=4, grpc=2, rate=4) as clients:
                clients.wait_answers(20, timeout=90)
                began = time.time()
                apply_md(cluster, watched, "cached", {**spec, "model": {**spec["model"], "version": 2}})
                clients.wait_only("2", timeout=120)
                md = wait_for_condition(api, watched, "cached", "Ready", "True", timeout=60)
                clients.wait_answers(20)
                seen = clients.stop()
            assert not any(failures(seen, began, time.time()).values()), failures(seen, began, time.time())
            staged = {(e["node"], e["version"]): e["state"] for e in md["status"]["cache"]}
            assert staged == {(real_node.name, 2): "Staged"}, md["status"]["cache"]
            assert len(list((node_cache / "versions").iterdir())) == 2
            cluster.kubectl("delete", "modeldeployment", "cached", "-n", watched, "--wait=true", "--timeout=90s")
    finally:
        cluster.kubectl("delete", "pvc", "model-cache", "-n", watched, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)
        shutil.rmtree(cache, ignore_errors=True)
