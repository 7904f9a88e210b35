"""Canary rollouts on the dev cluster with real Triton: k of n pods switched in place first,
judged on Triton's per-version counters against the other pods, then promoted or rolled back in
place. The test's own client sends load at the pod IPs (round robin, as a Service would
balance), so the canary's traffic share is k/n."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster.cluster import DevCluster, stop_pid, wait_until
from loadgen import LoadGenerator
from tests.integration.conftest import OperatorProcess, start_operator
from tests.integration.helpers import (
    apply_md,
    canary_repository,
    events_for,
    get_md,
    infer_version,
    md_condition,
    md_manifest,
    md_pods,
    ready_ips,
    wait_for_condition,
)
from tests.integration.test_install import argocd_health

pytestmark = pytest.mark.integration
MODEL = "canary"
RATE = 24  # requests/s over 4 replicas: a 25% canary serves ~6/s, 30 per 5 s window
FAST = {
    "steps": [{"weight": 25, "pauseSeconds": 10}, {"weight": 50, "pauseSeconds": 5}],
    "analysis": {"intervalSeconds": 5, "minRequests": 20, "maxLatencyIncreasePercent": 50, "failureLimit": 0},
}


def spec(repository: Path, version: int, replicas: int = 4, canary: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model": {"name": MODEL, "repository": f"file://{repository}", "version": version},
        "replicas": replicas,
        "rollout": {"strategy": "Canary", "canary": canary or FAST},
    }


def rollout_of(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return get_md(api, namespace, MODEL)["status"].get("rollout") or {}


def wait_phase(api: client.ApiClient, namespace: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    wait_until(f"rollout {phase}", lambda: rollout_of(api, namespace).get("phase") == phase, timeout=timeout)
    return get_md(api, namespace, MODEL)


def identities(core: client.CoreV1Api, namespace: str) -> dict[str, tuple[str, int]]:
    return {
        p.metadata.name: (p.metadata.uid, p.status.container_statuses[0].restart_count)
        for p in md_pods(core, namespace, MODEL)
    }


def serving(cluster: DevCluster, api: client.ApiClient, namespace: str, repository: Path, version: int) -> None:
    apply_md(cluster, namespace, MODEL, spec(repository, version))
    wait_for_condition(api, namespace, MODEL, "Ready", "True", timeout=180)


def wait_step_analysing(api: client.ApiClient, namespace: str, version: int) -> None:
    """The current step's canary pods all serve `version` (its analysis window has begun)."""
    wait_until(f"canary pods serving v{version}", lambda: bool(rollout_of(api, namespace).get("stepStartedAt")), 120)


def wait_every_pod_on(core: client.CoreV1Api, namespace: str, version: int) -> None:
    wait_until(
        f"every pod on v{version}",
        lambda: {infer_version(ip, MODEL) for ip in ready_ips(core, namespace, MODEL)} == {version},
        timeout=60,
    )


def ip_of(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    return {p.status.pod_ip: p.metadata.name for p in md_pods(core, namespace, MODEL)}


def test_healthy_canary_is_promoted_through_every_step_in_place(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = canary_repository(tmp_path / "repo")
    serving(cluster, api, namespace, repository, 1)
    before = identities(core, namespace)
    generation = get_md(api, namespace, MODEL)["metadata"]["generation"]
    seen: list[dict[str, Any]] = []
    with LoadGenerator(lambda: ready_ips(core, namespace, MODEL), MODEL, RATE, max_seconds=400) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        apply_md(cluster, namespace, MODEL, spec(repository, 2))

        def watch(phase: str) -> bool:
            md = get_md(api, namespace, MODEL)
            if md.get("status", {}).get("rollout"):
                seen.append(md)
            return bool(md["status"].get("rollout", {}).get("phase") == phase)

        wait_until(
            "step 1 running", lambda: watch("Progressing") and rollout_of(api, namespace).get("stepStartedAt"), 120
        )
        step_one = rollout_of(api, namespace)
        assert (step_one["step"], step_one["weight"], len(step_one["canaryPods"])) == (1, 25, 1), step_one
        assert argocd_health(get_md(api, namespace, MODEL))["status"] == "Progressing"
        md = get_md(api, namespace, MODEL)
        assert md_condition(md, "Ready")["reason"] == "CanaryInProgress"
        wait_until("promoted", lambda: watch("Succeeded"), timeout=240)
        after = load.stats.sent
        wait_until("more requests after the promotion", lambda: load.stats.sent >= after + 20, timeout=30)
    md = wait_for_condition(api, namespace, MODEL, "Ready", "True", timeout=60)
    assert load.stats.failed == 0, load.stats.errors
    assert md["status"]["activeVersion"] == 2 and md["status"]["rollout"]["summary"] == "Promoted v2"
    assert {infer_version(ip, MODEL) for ip in ready_ips(core, namespace, MODEL)} == {2}
    assert identities(core, namespace) == before, "pods were replaced or restarted"
    steps = {s["status"]["rollout"].get("step") for s in seen if s["status"]["rollout"]["phase"] == "Progressing"}
    assert steps == {1, 2}, steps
    reasons = [e.reason for e in events_for(core, namespace, MODEL)]
    assert reasons.count("StepPassed") == 2 and "Promoted" in reasons, reasons
    assert md_condition(md, "CanaryHealthy")["status"] == "True"
    assert argocd_health(md)["status"] == "Healthy"
    # The operator never wrote spec: the generation is the applier's, and only the applier manages spec.
    assert md["metadata"]["generation"] == generation + 1
    spec_managers = {
        entry["manager"]
        for entry in md["metadata"]["managedFields"]
        if "f:spec" in json.dumps(entry.get("fieldsV1", {})) and entry.get("subresource") != "status"
    }
    assert spec_managers and not any(m.startswith("tritonop") for m in spec_managers), spec_managers


def test_latency_regression_rolls_back_in_place(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = canary_repository(tmp_path / "repo")
    serving(cluster, api, namespace, repository, 1)
    before = identities(core, namespace)
    with LoadGenerator(lambda: ready_ips(core, namespace, MODEL), MODEL, RATE, max_seconds=400) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        applied = time.monotonic()
        apply_md(cluster, namespace, MODEL, spec(repository, 3))
        wait_step_analysing(api, namespace, 3)
        canary_pods = set(rollout_of(api, namespace)["canaryPods"])
        started = time.monotonic()
        md = wait_phase(api, namespace, "RolledBack", timeout=120)
        detected = time.monotonic()
        wait_every_pod_on(core, namespace, 1)
        back = time.monotonic()
        after = load.stats.sent
        wait_until("more requests after the rollback", lambda: load.stats.sent >= after + 20, timeout=30)
    rollout = md["status"]["rollout"]
    print(
        f"\nlatency regression: analysing {started - applied:.1f}s after the apply, rolled back "
        f"{detected - started:.1f}s later, every pod on v1 {back - detected:.1f}s after that; "
        f"v3 served {load.stats.versions[3]} requests; failed {load.stats.failed}; {rollout['message']}"
    )
    assert load.stats.failed == 0, load.stats.errors
    assert rollout["summary"] == "RolledBack v3" and rollout["lastAnalysis"]["reason"] == "LatencyRegression"
    assert md_condition(md, "Ready")["reason"] == "RolledBack"
    assert md_condition(md, "CanaryHealthy")["reason"] == "LatencyRegression"
    health = argocd_health(md)
    assert health["status"] == "Degraded" and "RolledBack v3" in health["message"], health
    # Only the canary pod ever served the bad version, and the share matched the step (1 of 4).
    names = ip_of(core, namespace)
    bad = {names[ip] for (ip, version), count in load.stats.served_by.items() if version == 3 and count}
    assert bad and bad <= canary_pods, (bad, canary_pods)
    assert 10 <= rollout["measuredShare"] <= 45, rollout
    assert identities(core, namespace) == before
    warnings = [e for e in events_for(core, namespace, MODEL) if e.reason == "RolledBack"]
    assert warnings and "compute" in warnings[0].message and "ms vs" in warnings[0].message, warnings
    # Not retried for this generation: it stays rolled back, serving v1.
    assert rollout_of(api, namespace)["phase"] == "RolledBack"


def test_error_regression_rolls_back(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = canary_repository(tmp_path / "repo")
    serving(cluster, api, namespace, repository, 1)
    with LoadGenerator(lambda: ready_ips(core, namespace, MODEL), MODEL, RATE, max_seconds=400) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        apply_md(cluster, namespace, MODEL, spec(repository, 4))
        wait_step_analysing(api, namespace, 4)
        started = time.monotonic()
        md = wait_phase(api, namespace, "RolledBack", timeout=120)
        detected = time.monotonic()
        wait_every_pod_on(core, namespace, 1)
        failed_at_rollback = load.stats.failed
        after = load.stats.sent
        wait_until("more requests after the rollback", lambda: load.stats.sent >= after + 30, timeout=30)
    rollout = md["status"]["rollout"]
    print(
        f"\nerror regression: rolled back {detected - started:.1f}s after the canary began serving; "
        f"v4 answered {load.stats.versions[4]} requests and failed {failed_at_rollback}; {rollout['message']}"
    )
    assert rollout["lastAnalysis"]["reason"] in ("ErrorRegression", "ErrorBurst"), rollout
    assert md_condition(md, "CanaryHealthy")["reason"] == "ErrorRegression"
    assert failed_at_rollback > 0  # the bad version's own failures, counted by Triton and the client
    assert load.stats.failed == failed_at_rollback, "requests failed after the rollback"


def test_no_traffic_pauses_as_inconclusive_and_never_rolls_back(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = canary_repository(tmp_path / "repo")
    serving(cluster, api, namespace, repository, 1)
    apply_md(cluster, namespace, MODEL, spec(repository, 3))  # the slow one: no traffic, no verdict
    md = wait_phase(api, namespace, "Paused", timeout=120)
    first = md["status"]["rollout"]["lastAnalysis"]["at"]
    wait_until(
        "another inconclusive analysis",
        lambda: (rollout_of(api, namespace).get("lastAnalysis") or {}).get("at") not in (None, first),
        timeout=60,
    )
    md = get_md(api, namespace, MODEL)
    rollout = md["status"]["rollout"]
    assert (rollout["phase"], rollout["failedChecks"], rollout["step"]) == ("Paused", 0, 1), rollout
    assert rollout["lastAnalysis"]["reason"] == "InsufficientTraffic"
    assert md_condition(md, "CanaryHealthy")["reason"] == "InsufficientTraffic"
    assert md_condition(md, "Ready")["reason"] == "CanaryPaused"
    assert rollout["summary"] == "v3 25% 1/2 paused"


def test_reverting_the_spec_mid_canary_rolls_back_at_once(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = canary_repository(tmp_path / "repo")
    serving(cluster, api, namespace, repository, 1)
    patient = {**FAST, "steps": [{"weight": 25, "pauseSeconds": 600}]}
    apply_md(cluster, namespace, MODEL, spec(repository, 2, canary=patient))
    wait_step_analysing(api, namespace, 2)
    reverted = time.monotonic()
    apply_md(cluster, namespace, MODEL, spec(repository, 1, canary=patient))  # git revert
    md = wait_phase(api, namespace, "Aborted", timeout=30)
    wait_every_pod_on(core, namespace, 1)
    print(f"\nrevert mid-canary: every pod on v1 {time.monotonic() - reverted:.1f}s after the apply")
    md = wait_for_condition(api, namespace, MODEL, "Ready", "True", timeout=60)
    assert md["status"]["activeVersion"] == 1
    assert "CanaryAborted" in [e.reason for e in events_for(core, namespace, MODEL)]


@pytest.mark.chaos
def test_operator_killed_mid_step_resumes_at_that_step(
    cluster: DevCluster, crd: None, api: client.ApiClient, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """SIGKILL while step 2 runs: the next process resumes at step 2 from status.rollout (the
    analysis window starts afresh), and the rollout completes."""
    namespace = f"canary-kill-{uuid.uuid4().hex[:6]}"  # not t-*: the session's operator stays out
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    wait_until(
        "default ServiceAccount", lambda: core.read_namespaced_service_account("default", namespace) is not None, 30
    )
    log = tmp_path / "operator.log"
    running = start_operator(cluster, namespace, log)
    try:
        repository = canary_repository(tmp_path / "repo")
        serving(cluster, api, namespace, repository, 1)
        slow_steps = {**FAST, "steps": [{"weight": 25, "pauseSeconds": 5}, {"weight": 50, "pauseSeconds": 30}]}
        with LoadGenerator(lambda: ready_ips(core, namespace, MODEL), MODEL, RATE, max_seconds=400) as load:
            wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
            apply_md(cluster, namespace, MODEL, spec(repository, 2, canary=slow_steps))
            wait_until(
                "step 2 running",
                lambda: (
                    rollout_of(api, namespace).get("step") == 2
                    and bool(rollout_of(api, namespace).get("stepStartedAt"))
                ),
                timeout=180,
            )
            running.process.send_signal(signal.SIGKILL)
            running.process.wait(timeout=30)
            killed = rollout_of(api, namespace)
            running = start_operator(cluster, namespace, tmp_path / "operator-2.log")
            steps_after: set[int] = set()

            def promoted() -> bool:
                current = rollout_of(api, namespace)
                if current.get("phase") == "Progressing":
                    steps_after.add(current["step"])
                return current.get("phase") == "Succeeded"

            wait_until("promoted after the restart", promoted, timeout=240)
        assert killed["step"] == 2 and steps_after <= {2}, (killed, steps_after)
        assert load.stats.failed == 0, load.stats.errors
        assert {infer_version(ip, MODEL) for ip in ready_ips(core, namespace, MODEL)} == {2}
    finally:
        stop_pid(running.process.pid)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


BAD_CANARY = [
    ("canary-without-strategy", {"strategy": "InPlace", "canary": {}}, ["spec.rollout.canary", "strategy: Canary"]),
    (
        "weights-not-increasing",
        {"strategy": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 25}]}},
        ["spec.rollout.canary.steps", "must increase"],
    ),
    (
        "weights-repeated",
        {"strategy": "Canary", "canary": {"steps": [{"weight": 25}, {"weight": 25}]}},
        ["spec.rollout.canary.steps", "must increase"],
    ),
    ("weight-100", {"strategy": "Canary", "canary": {"steps": [{"weight": 100}]}}, ["weight", "99"]),
    ("weight-0", {"strategy": "Canary", "canary": {"steps": [{"weight": 0}]}}, ["weight", "1"]),
    (
        "eleven-steps",
        {"strategy": "Canary", "canary": {"steps": [{"weight": w} for w in range(5, 60, 5)]}},
        ["spec.rollout.canary.steps", "10"],
    ),
    (
        "zero-interval",
        {"strategy": "Canary", "canary": {"analysis": {"intervalSeconds": 0}}},
        ["spec.rollout.canary.analysis.intervalSeconds", "1"],
    ),
    (
        "negative-min-requests",
        {"strategy": "Canary", "canary": {"analysis": {"minRequests": -5}}},
        ["spec.rollout.canary.analysis.minRequests", "1"],
    ),
    ("unknown-strategy", {"strategy": "BlueGreen"}, ["spec.rollout.strategy", "Canary"]),
]


@pytest.mark.parametrize(("case", "rollout", "expected"), BAD_CANARY, ids=[c[0] for c in BAD_CANARY])
def test_bad_canary_specs_are_refused_at_admission(
    cluster: DevCluster, crd: None, dry_run_namespace: str, case: str, rollout: dict[str, Any], expected: list[str]
) -> None:
    body = {"model": {"repository": "pvc://models", "version": 2}, "rollout": rollout}
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(md_manifest("c", body, dry_run_namespace)),
        check=False,
    )
    output = result.stderr + result.stdout
    assert result.returncode != 0 and "is invalid" in output, (case, output)
    for fragment in expected:
        assert fragment in output, f"{case}: {fragment!r} not in {output!r}"


def test_strategy_canary_alone_gets_safe_defaults(cluster: DevCluster, crd: None, dry_run_namespace: str) -> None:
    body = {"model": {"repository": "pvc://models", "version": 2}, "rollout": {"strategy": "Canary"}}
    manifest = yaml.safe_dump(md_manifest("c", body, dry_run_namespace))
    result = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=manifest)
    assert json.loads(result.stdout)["spec"]["rollout"] == {"strategy": "Canary", "allowSwapDowntime": False}
