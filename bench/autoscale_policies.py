"""Replay one bursty open-loop trace against the fixed-time model under three autoscaling
policies, one run each, side by side, on the dev cluster with real Triton pods (the trace and
the KPA and HPA rules are shared with the simulator: bench/traces.py, bench/reference_policies.py):

1. tritonop: the operator's own latency policy (spec.autoscaling, p95 target);
2. hpa-queue: the rule of Triton's Kubernetes example, HPA on average queue time per request,
   with HPA's default algorithm (15 s sync, tolerance 0.1, 300 s scale-down stabilization,
   scale-up at most max(100%, +4 pods) per 15 s), driving the ModelDeployment's scale subresource;
3. knative: a KPA-style concurrency rule (60 s stable window, 6 s panic window, panic at 200%,
   target 0.7 in-flight requests per replica), also through the scale subresource.

    .venv/bin/python bench/autoscale_policies.py [--policies tritonop,hpa-queue,knative]

Printed per policy: SLO attainment (% of requests at or under the target, measured at the
client), replica-seconds, time from burst start to the first added replica serving, scale
direction changes; and an oracle lower bound on replica-seconds (each second, the fewest replicas
whose capacity covers the arrival rate). Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reference_policies import HpaQueueRule, KpaRule, queue_ms_since  # noqa: E402
from traces import STEP_BURST_START, STEP_SEGMENTS  # noqa: E402

from devcluster import running_cluster  # noqa: E402
from devcluster.cluster import DevCluster, free_port, stop_pid, wait_until  # noqa: E402
from tests.integration.helpers import slow_repository  # noqa: E402
from tests.loadgen import LoadGenerator  # noqa: E402

NAMESPACE = "bench-autoscale"
MODEL = "slow"
BATCH_MS = 100  # one request at a time, 100 ms each: 10 requests/s per replica
CAPACITY = 1000 / BATCH_MS
TARGET_MS = 400
MAX_REPLICAS = 8
# (start second, end second, start rate, end rate): warm-up, step burst, ramp down, tail.
TRACE = STEP_SEGMENTS
BURST_START = STEP_BURST_START


def rate_at(second: float) -> float:
    for start, end, first, last in TRACE:
        if start <= second < end:
            return first + (last - first) * (second - start) / (end - start)
    return 0.0


def oracle_replica_seconds() -> float:
    return sum(max(1, math.ceil(rate_at(s) / CAPACITY)) for s in range(TRACE[-1][1]))


@dataclass
class Run:
    policy: str
    replicas: list[tuple[float, int]] = field(default_factory=list)  # (second, ready replicas)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    failed: int = 0

    def report(self) -> dict[str, Any]:
        within = sum(1 for latency in self.latencies if latency <= TARGET_MS)
        attainment = 100.0 * within / max(1, self.sent)
        replica_seconds = sum(count for _, count in self.replicas)  # sampled once a second
        first_added = next(
            (t - BURST_START for t, count in self.replicas if t >= BURST_START and count > self.replicas[0][1]), None
        )
        changes, last_direction, previous = 0, 0, None
        for _, count in self.replicas:
            if previous is not None and count != previous:
                direction = 1 if count > previous else -1
                if direction != last_direction:
                    changes += 1
                    last_direction = direction
            previous = count
        return {
            "policy": self.policy,
            "slo_attainment_pct": round(attainment, 2),
            "replica_seconds": replica_seconds,
            "first_added_replica_serving_s": None if first_added is None else round(first_added, 1),
            "direction_changes": changes,
            "requests": self.sent,
            "failed": self.failed,
            "max_replicas": max(count for _, count in self.replicas),
        }


class Cluster:
    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster

    def md(self) -> dict[str, Any]:
        return json.loads(self.cluster.kubectl("get", "md", MODEL, "-n", NAMESPACE, "-o", "json").stdout)

    def ready_ips(self) -> list[str]:
        pods = json.loads(
            self.cluster.kubectl(
                "get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={MODEL}", "-o", "json"
            ).stdout
        )["items"]
        return [
            p["status"]["podIP"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]

    def scale(self, replicas: int) -> None:
        self.cluster.kubectl("scale", f"md/{MODEL}", "-n", NAMESPACE, f"--replicas={replicas}")


def queue_ms(ips: list[str], previous: dict[str, tuple[float, float]]) -> float | None:
    """Average queue time per request since the last call (Triton's counters), over all pods."""
    totals: dict[str, tuple[float, float]] = {}
    for ip in ips:
        try:
            with urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            continue
        values = {"queue": 0.0, "success": 0.0}
        for line in text.splitlines():
            if line.startswith(f'nv_inference_queue_duration_us{{model="{MODEL}"'):
                values["queue"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith(f'nv_inference_request_success{{model="{MODEL}"'):
                values["success"] += float(line.rsplit(" ", 1)[1])
        totals[ip] = (values["queue"], values["success"])
    return queue_ms_since(previous, totals)


def hpa_controller(env: Cluster, stop: threading.Event) -> None:
    """HPA's algorithm on average queue time (target: the latency budget minus service time)."""
    rule = HpaQueueRule(target_ms=TARGET_MS - BATCH_MS, max_replicas=MAX_REPLICAS)
    previous: dict[str, tuple[float, float]] = {}
    while not stop.wait(rule.period):
        current = int(env.md()["spec"]["replicas"])
        desired = rule.decide(time.monotonic(), queue_ms(env.ready_ips(), previous), current)
        if desired != current:
            env.scale(desired)


def knative_controller(env: Cluster, load: LoadGenerator, stop: threading.Event) -> None:
    """KPA: desired = in-flight / (target concurrency); panic when the 6 s view wants >= 2x."""
    rule = KpaRule(max_replicas=MAX_REPLICAS)
    while not stop.wait(rule.period):
        now, in_flight = time.monotonic(), float(load.in_flight)
        current = int(env.md()["spec"]["replicas"])
        desired = rule.decide(now, in_flight, current, len(env.ready_ips()))
        if desired != current:
            env.scale(desired)


def run_policy(env: Cluster, policy: str, repository: Path) -> Run:
    spec: dict[str, Any] = {"model": {"name": MODEL, "repository": f"file://{repository}"}}
    if policy == "tritonop":
        spec["autoscaling"] = {
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "metric": "p95",
            "targetLatencyMs": TARGET_MS,
            "scaleDownStabilizationSeconds": 30,
            "spareReplicas": 3,  # the simulator's choice (bench/README.md): bursts up to 3 replicas' worth
        }
    else:
        spec["replicas"] = 1
    env.cluster.kubectl("delete", "md", MODEL, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    wait_until("old pods gone", lambda: not env.ready_ips(), timeout=120)
    manifest = {
        "apiVersion": "tritonop.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": spec,
    }
    env.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    env.cluster.kubectl("wait", f"md/{MODEL}", "-n", NAMESPACE, "--for=condition=Ready", "--timeout=120s")

    run = Run(policy)
    stop = threading.Event()
    ips: list[str] = env.ready_ips()
    # No client-side cap that matters: every policy sees its servers' queues grow as they are.
    load = LoadGenerator(lambda: ips, MODEL, rate_at(0), timeout=30, max_seconds=TRACE[-1][1] + 60, max_in_flight=1024)
    controllers: list[threading.Thread] = []
    if policy == "hpa-queue":
        controllers.append(threading.Thread(target=hpa_controller, args=(env, stop), daemon=True))
    elif policy == "knative":
        controllers.append(threading.Thread(target=knative_controller, args=(env, load, stop), daemon=True))
    load.start()
    for thread in controllers:
        thread.start()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < TRACE[-1][1]:
        ips[:] = env.ready_ips()
        load.set_rate(rate_at(elapsed))
        run.replicas.append((elapsed, len(ips)))
        time.sleep(max(0.0, 1 - (time.monotonic() - started - elapsed)))
    stop.set()
    stats = load.stop()
    run.sent, run.failed = stats.sent, stats.failed
    run.latencies = [latency for _, latency in stats.latencies_ms] + [float("inf")] * stats.failed
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="tritonop,hpa-queue,knative")
    args = parser.parse_args()
    with running_cluster() as cluster, tempfile.TemporaryDirectory(dir=ROOT / ".devcluster") as tmp:
        repository = slow_repository(Path(tmp) / "repo", MODEL, BATCH_MS)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
        # A namespace left terminating by an earlier run would refuse the ModelDeployment.
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s")
        cluster.kubectl("create", "namespace", NAMESPACE)
        log = open(cluster.state_dir / "logs" / "bench-autoscale-operator.log", "wb")  # noqa: SIM115
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tritonop",
                "run",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--metrics-port={free_port()}",
                "--liveness-port=0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        env = Cluster(cluster)
        results = []
        try:
            for policy in args.policies.split(","):
                print(f"running {policy} ({TRACE[-1][1]} s trace)...", flush=True)
                results.append(run_policy(env, policy, repository).report())
                print(json.dumps(results[-1]), flush=True)
        finally:
            stop_pid(operator.pid)
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        oracle = oracle_replica_seconds()
        print(f"\noracle lower bound: {oracle:.0f} replica-seconds (capacity {CAPACITY:.0f} req/s per replica)")
        print(
            f"{'policy':<12} {'SLO %':>7} {'replica-s':>10} {'x oracle':>9} {'first add (s)':>14} {'changes':>8} "
            f"{'requests':>9} {'failed':>7}"
        )
        for r in results:
            print(
                f"{r['policy']:<12} {r['slo_attainment_pct']:>7.2f} {r['replica_seconds']:>10} "
                f"{r['replica_seconds'] / oracle:>9.2f} {r['first_added_replica_serving_s']!s:>14} "
                f"{r['direction_changes']:>8} {r['requests']:>9} {r['failed']:>7}"
            )


if __name__ == "__main__":
    main()
