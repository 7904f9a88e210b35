"""Replay seeded open-loop traces against the fixed-time model under three autoscaling policies,
paired runs side by side, on the dev cluster with real Triton pods. The traces, their seeded
arrivals and the KPA and HPA rules are the simulator's (bench/traces.py,
bench/reference_policies.py), so a cluster run and a simulated run of the same seed see the same
request times:

1. tritonop: the operator's own policy (spec.autoscaling, p95 target 400 ms, spareReplicas unset);
2. hpa-queue: the rule of Triton's Kubernetes example, HPA on average queue time per request,
   with HPA's default algorithm (15 s sync, tolerance 0.1, 300 s scale-down stabilization,
   scale-up at most max(100%, +4 pods) per 15 s), driving the ModelDeployment's scale subresource;
3. knative: a KPA-style concurrency rule (60 s stable window, 6 s panic window, panic at 200%,
   target 0.7 in-flight requests per replica), also through the scale subresource.

    .venv/bin/python bench/autoscale_policies.py --traces step,spikes --runs 5 --out runs.jsonl
    .venv/bin/python bench/autoscale_policies.py --report runs.jsonl     # the table again, + simulator
    .venv/bin/python bench/autoscale_policies.py --policies tritonop,knative --load-delay-s 60 \
        --routing random --runs 3 --out slow-start.jsonl    # a large model's start: loads take 60 s

Run order: for each seed, each trace, every policy (the order rotates with the seed), so slow
drift of this shared machine falls on all policies alike. Each run is appended to --out as one
JSON line as soon as it ends (a cut-off session keeps what finished). Printed per trace and policy:
mean, 95% CI and range over the runs of SLO attainment (% of requests at or under the target,
measured at the client from each request's due time; failed requests are misses),
replica-seconds (ready replicas sampled once a second), failed requests and direction changes;
tritonop's and the HPA rule's paired differences from the KPA rule; the pod start delay measured
on the cluster (pod created -> Ready, for every pod added during the runs); and the simulator's
figures for the same traces and settings (graceful removal, pod start delays drawn from the
measured ones) over 40 seeds beside the cluster's, with whether every cluster run falls inside
the simulator's range. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from autoscale_sim import Settings, mean_ci  # noqa: E402
from autoscale_sim import simulate as simulate_run  # noqa: E402
from reference_policies import HpaQueueRule, KpaRule, queue_ms_since  # noqa: E402
from traces import Trace, arrivals  # noqa: E402
from traces import get as get_trace  # noqa: E402

from devcluster import running_cluster  # noqa: E402
from devcluster.cluster import DevCluster, free_port, stop_pid, wait_until  # noqa: E402
from loadgen import LoadGenerator, slow_repository  # noqa: E402

NAMESPACE = "bench-autoscale"
MODEL = "slow"
BATCH_MS = 100  # one request at a time, 100 ms each: 10 requests/s per replica
TARGET_MS = 400
MAX_REPLICAS = 8
POLICIES = ("tritonop", "knative", "hpa-queue")
BASELINE = "knative"
SIMULATOR_SEEDS = 40  # the simulator's side of the calibration: mean, CI and range over this many seeds


@dataclass
class Run:
    policy: str
    trace: str
    seed: int
    replicas: list[int] = field(default_factory=list)  # ready replicas, once a second
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    pod_starts: list[float] = field(default_factory=list)  # seconds, pod created -> Ready
    routing: str = "round-robin"  # the clients' choice of pod: round robin, or random (kube-proxy's)
    load_delay_s: float = 0.0  # the model's load time (a stand-in for a large model's start)

    def report(self) -> dict[str, Any]:
        within = sum(1 for latency in self.latencies if latency <= TARGET_MS)
        changes, last_direction = 0, 0
        for previous, count in zip(self.replicas, self.replicas[1:], strict=False):
            if count != previous:
                direction = 1 if count > previous else -1
                if direction != last_direction:
                    changes += 1
                    last_direction = direction
        return {
            "policy": self.policy,
            "trace": self.trace,
            "seed": self.seed,
            "attainment": round(100.0 * within / max(1, self.sent), 2),
            "replica_seconds": sum(self.replicas),
            "direction_changes": changes,
            "requests": self.sent,
            "failed": self.failed,
            "max_replicas": max(self.replicas, default=0),
            "pod_starts_s": self.pod_starts,
            "replicas": self.replicas,
            "routing": self.routing,
            "load_delay_s": self.load_delay_s,
        }


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Cluster:
    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster
        # pod uid -> (created, ready) wall-clock seconds, for the start delay of added pods
        self.pod_times: dict[str, tuple[float, float | None]] = {}

    def md(self) -> dict[str, Any]:
        return json.loads(self.cluster.kubectl("get", "md", MODEL, "-n", NAMESPACE, "-o", "json").stdout)

    def ready_ips(self) -> list[str]:
        pods = json.loads(
            self.cluster.kubectl(
                "get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={MODEL}", "-o", "json"
            ).stdout
        )["items"]
        ips = []
        for p in pods:
            ready = next(
                (c for c in p["status"].get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"), None
            )
            uid = p["metadata"]["uid"]
            created = _timestamp(p["metadata"]["creationTimestamp"])
            if uid not in self.pod_times or self.pod_times[uid][1] is None:
                self.pod_times[uid] = (created, _timestamp(ready["lastTransitionTime"]) if ready else None)
            if ready and not p["metadata"].get("deletionTimestamp"):
                ips.append(p["status"]["podIP"])
        return ips

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


def tritonop_spec() -> dict[str, Any]:
    return {
        "minReplicas": 1,
        "maxReplicas": MAX_REPLICAS,
        "metric": "p95",
        "targetLatencyMs": TARGET_MS,
        "scaleDownStabilizationSeconds": 30,
        # spareReplicas unset, as the simulator's default: the policy derives headroom (issue 20).
        # The 2026-12-01 runs in bench/README.md set spareReplicas: 3.
    }


def run_policy(
    env: Cluster, policy: str, repository: Path, trace: Trace, seed: int, routing: str, load_delay_s: float
) -> Run:
    spec: dict[str, Any] = {"model": {"name": MODEL, "repository": f"file://{repository}"}}
    if policy == "tritonop":
        spec["autoscaling"] = tritonop_spec()
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
    ready_timeout = 120 + 2 * load_delay_s
    env.cluster.kubectl(
        "wait", f"md/{MODEL}", "-n", NAMESPACE, "--for=condition=Ready", f"--timeout={ready_timeout:.0f}s"
    )

    run = Run(policy, trace.name, seed, routing=routing, load_delay_s=load_delay_s)
    stop = threading.Event()
    ips: list[str] = env.ready_ips()
    first_pods = set(env.pod_times)
    wall_start = time.time()
    # No client-side cap that matters: every policy sees its servers' queues grow as they are.
    load = LoadGenerator(
        lambda: ips,
        MODEL,
        trace.rate_at(0),
        timeout=30,
        max_seconds=trace.seconds + 60,
        max_in_flight=1024,
        schedule=arrivals(trace, seed),
        routing=routing,
    )
    controllers: list[threading.Thread] = []
    if policy == "hpa-queue":
        controllers.append(threading.Thread(target=hpa_controller, args=(env, stop), daemon=True))
    elif policy == "knative":
        controllers.append(threading.Thread(target=knative_controller, args=(env, load, stop), daemon=True))
    load.start()
    for thread in controllers:
        thread.start()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < trace.seconds:
        ips[:] = env.ready_ips()
        run.replicas.append(len(ips))
        time.sleep(max(0.0, 1 - (time.monotonic() - started - elapsed)))
    stop.set()
    stats = load.stop()
    run.sent, run.failed = stats.sent, stats.failed
    run.latencies = [latency for _, latency in stats.latencies_ms] + [float("inf")] * stats.failed
    run.pod_starts = [
        ready - created
        for uid, (created, ready) in env.pod_times.items()
        if uid not in first_pods and ready is not None and created >= wall_start - 1
    ]
    return run


# -- the report: cluster runs beside the simulator -----------------------------------------------


def _stats(values: list[float]) -> str:
    mean, half = mean_ci(values)
    spread = f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else ""
    return f"{mean:7.1f} ± {half:<5.1f} ({spread})" if not math.isnan(half) else f"{mean:7.1f} (1 run)"


def pod_start_range(runs: list[dict[str, Any]]) -> tuple[float, float] | None:
    starts = sorted(s for r in runs for s in r.get("pod_starts_s", []))
    if len(starts) < 5:
        return None
    # The middle 80%: timestamps have 1 s resolution, so the extremes are +-1 s anyway.
    return starts[len(starts) // 10], starts[(9 * len(starts)) // 10]


def report(runs: list[dict[str, Any]], simulate: bool = True) -> None:
    starts = sorted(s for r in runs for s in r.get("pod_starts_s", []))
    start_range = pod_start_range(runs)
    routing = runs[0].get("routing", "round-robin") if runs else "round-robin"
    if starts:
        print(
            f"pod start on the cluster (created -> Ready, {len(starts)} pods added during the runs): "
            f"median {statistics.median(starts):.1f} s, middle 80% {start_range}, "
            f"min {starts[0]:.1f}, max {starts[-1]:.1f}"
        )
    if starts:
        # The measured delays themselves (their spread is skewed: most pods start in seconds, a
        # few wait for the others when many start at once), bounded by their extremes.
        settings = Settings(
            deletion="graceful",
            pod_start_s=(starts[0], starts[-1]),
            pod_start_samples=tuple(starts),
            routing=routing,
        )
        print(
            f"simulator settings: graceful removal, {routing} routing, "
            f"pod start drawn from the {len(starts)} measured delays"
        )
    else:
        settings = Settings(deletion="graceful", routing=routing)
        print(f"simulator settings: graceful removal, {routing} routing, pod start uniform 6-10 s (nothing measured)")
    header = (
        f"{'trace':<7} {'policy':<10} {'n':>2}  {'attainment % (cluster)':<28} {'replica-s (cluster)':<28} "
        f"{'failed':>7} {'changes':>7}"
    )
    print(
        header + f"  {'attainment % (simulator)':<28} {'replica-s (simulator)':<28} {'inside':>6}"
        if simulate
        else header
    )
    for trace_name in dict.fromkeys(r["trace"] for r in runs):
        by_policy: dict[str, dict[int, dict[str, Any]]] = {}
        for r in runs:
            if r["trace"] == trace_name:
                by_policy.setdefault(r["policy"], {})[r["seed"]] = r
        for policy, by_seed in by_policy.items():
            rows = list(by_seed.values())
            failed = statistics.fmean(r["failed"] for r in rows)
            changes = statistics.fmean(r["direction_changes"] for r in rows)
            line = (
                f"{trace_name:<7} {policy:<10} {len(rows):>2}  {_stats([r['attainment'] for r in rows]):<28} "
                f"{_stats([float(r['replica_seconds']) for r in rows]):<28} {failed:>7.1f} {changes:>7.1f}"
            )
            if simulate:
                # The simulator's spread over many seeds: where single cluster runs should fall.
                trace = get_trace(trace_name)
                sims = [simulate_run(trace, policy, seed, settings) for seed in range(SIMULATOR_SEEDS)]
                attainments, sim_seconds = [s.attainment for s in sims], [float(s.replica_seconds) for s in sims]
                inside = all(
                    min(attainments) <= r["attainment"] <= max(attainments)
                    and min(sim_seconds) <= r["replica_seconds"] <= max(sim_seconds)
                    for r in rows
                )
                line += f"  {_stats(attainments):<28} {_stats(sim_seconds):<28} {'yes' if inside else 'no':>6}"
            print(line)
        baseline = by_policy.get(BASELINE, {})
        for policy, by_seed in by_policy.items():
            seeds = sorted(set(by_seed) & set(baseline))
            if policy == BASELINE or len(seeds) < 2:
                continue
            attainment = mean_ci([by_seed[s]["attainment"] - baseline[s]["attainment"] for s in seeds])
            replica_seconds = mean_ci(
                [float(by_seed[s]["replica_seconds"] - baseline[s]["replica_seconds"]) for s in seeds]
            )
            ahead = attainment[0] - attainment[1] > 0 and replica_seconds[0] + replica_seconds[1] < 0
            print(
                f"{trace_name:<7} {policy} - {BASELINE} over {len(seeds)} paired seeds: attainment "
                f"{attainment[0]:+.1f} ± {attainment[1]:.1f} points, replica-seconds {replica_seconds[0]:+.0f} ± "
                f"{replica_seconds[1]:.0f}{'  (ahead on both, 95%)' if ahead else ''}"
            )


def load_runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--traces", default="step", help="comma list of bench/traces.py names")
    parser.add_argument("--runs", type=int, default=1, help="paired runs per policy and trace (seeds first..)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append each run as a JSON line here")
    parser.add_argument("--report", type=Path, help="print the table of recorded runs (JSON lines) and exit")
    parser.add_argument("--no-simulator", action="store_true", help="leave the simulator's columns out")
    parser.add_argument(
        "--routing",
        choices=("round-robin", "random"),
        default="round-robin",
        help="how the clients pick a ready pod per request (random: as kube-proxy picks a Service's backend)",
    )
    parser.add_argument(
        "--load-delay-s",
        type=float,
        default=0.0,
        help="the model's load takes this long, so a new pod starts in about that much more (a large model)",
    )
    args = parser.parse_args()
    if args.report:
        report(load_runs(args.report), simulate=not args.no_simulator)
        return
    policies = args.policies.split(",")
    traces = [get_trace(name) for name in args.traces.split(",")]
    results: list[dict[str, Any]] = []
    with running_cluster() as cluster, tempfile.TemporaryDirectory(dir=ROOT / ".devcluster") as tmp:
        repository = slow_repository(Path(tmp) / "repo", MODEL, BATCH_MS, load_delay_s=args.load_delay_s)
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
        try:
            for seed in range(args.first_seed, args.first_seed + args.runs):
                for trace in traces:
                    shift = seed % len(policies)
                    for policy in policies[shift:] + policies[:shift]:
                        print(f"seed {seed}: {policy} on {trace.name} ({trace.seconds} s)...", flush=True)
                        run = run_policy(env, policy, repository, trace, seed, args.routing, args.load_delay_s)
                        result = run.report()
                        results.append(result)
                        print(json.dumps({k: v for k, v in result.items() if k != "replicas"}), flush=True)
                        if args.out:
                            with args.out.open("a") as out:
                                out.write(json.dumps(result) + "\n")
        finally:
            stop_pid(operator.pid)
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    report(results, simulate=not args.no_simulator)


if __name__ == "__main__":
    main()
