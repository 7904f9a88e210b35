"""Soak: create, edit and delete ModelDeployments in cycles for a long time, and check that the
operator gives back what it took (memory, file descriptors, entries in its in-process maps).

    .venv/bin/python bench/soak.py [--minutes 20] [--count 300] [--live 3]

Against the dev cluster (reused if up, else started and stopped), with the operator as a real
process watching every namespace (`--namespace-pattern soak-*` to scope it). One cycle:
1. create `count` ModelDeployments with `kubectl apply --server-side`: a third in the namespace
   soak-keep, which lives for the whole run (the same names come back every cycle with new
   uids), the rest spread over namespaces made for this cycle (soak-c<n>-<j>);
2. edit them twice (versions, replicas, autoscaling on and off), waiting each time until the
   operator has written status for the new generation;
3. delete them: the ones in soak-keep with `kubectl delete md`, every other one by deleting its
   whole namespace (the path that once leaked autoscaler metric readers);
4. wait until the operator's maps are back to their start sizes, then measure.

Start sizes are a baseline taken once the operator has taken in what the cluster already holds
(other ModelDeployments, e.g. the demo's, which the soak leaves alone): the operator settles when
every map is back at most at its baseline size, it manages no more ModelDeployments than then,
and none of the soak's own ModelDeployments is left.

Real `tritonserver` processes (one per running Triton pod, ~100+ MB and CPU each) are kept to
`live` at a time (plus the ones still stopping): only `live` ModelDeployments per cycle run
`sleepy` on CPU (gpus: 0, one replica; their versions switch in place and their autoscaling is
toggled, so the operator opens and closes metric readers against real Triton). The other ones
cost no process: replicas 0, or gpus: 9 on nodes with 8 GPUs (Pending, InsufficientGPU), with
or without autoscaling (an autoscaler and its reader exist for those too).

Measured after every cycle (start, middle and end called out): the operator's RSS (VmRSS), open
file descriptors (/proc/<pid>/fd) and the sizes of its in-process maps, as exported on its
metrics port (`tritonop_state_entries{map=...}`). At the end, a verdict: each map back to its
baseline size, RSS within 10% of its value after the first cycle, fds back to the start count
(+5 for pooled keep-alive connections). Not a test: it prints figures and exits 0 either way.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devcluster import running_cluster  # noqa: E402
from devcluster.cluster import DevCluster, free_port, stop_pid  # noqa: E402
from loadgen import scrape_metrics  # noqa: E402

MODEL_REPO = ROOT / "model_repo"
KEEP_NAMESPACE = "soak-keep"
BENCH_LABEL = "tritonop.dev/bench=soak"
STATE_GAUGE = "tritonop_state_entries"
MANAGED_GAUGE = "tritonop_modeldeployments"
RSS_GOAL = 0.10  # end within 10% of the RSS after the first cycle
FD_SLACK = 5  # idle keep-alive connections a client pool may still hold
BASELINE_LOOKS = 3  # samples in a row that must agree before they are the baseline
BASELINE_SECONDS = 120  # how long the operator may take to take in what the cluster holds
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "metric": "p95", "targetLatencyMs": 1000}
LIVE_AUTOSCALING = {"minReplicas": 1, "maxReplicas": 2, "metric": "p95", "targetLatencyMs": 1000}

# What each ModelDeployment looks like in the three steps of a cycle (create, edit 1, edit 2):
# (gpus, replicas or "auto", version). Parked profiles never run a tritonserver.
PARKED: dict[str, tuple[tuple[int, int | str, int], ...]] = {
    "zero": ((1, 0, 2), (9, 1, 3), (1, 0, 1)),  # replicas 0 -> Pending -> 0
    "pending": ((9, 1, 2), (9, "auto", 2), (9, 1, 3)),  # autoscaling on, then off
    "auto": ((9, "auto", 2), (9, 0, 3), (9, "auto", 1)),  # autoscaling off, then on
    "pair": ((9, 2, 2), (9, 0, 2), (9, 2, 3)),  # 2 replicas (a PodDisruptionBudget), 0, 2
}
PARKED_WEIGHTS = (("zero", 9), ("pending", 4), ("auto", 4), ("pair", 3))  # out of 20
LIVE: dict[str, tuple[tuple[int, int | str, int], ...]] = {
    "live-fixed": ((0, 1, 2), (0, 1, 3), (0, 1, 1)),  # version switches in place
    "live-auto": ((0, "auto", 2), (0, 1, 3), (0, "auto", 2)),  # autoscaling off, then on
    "live-toggle": ((0, 1, 2), (0, "auto", 1), (0, 1, 3)),  # autoscaling on, then off
}


# -- the operator process and what it exports ----------------------------------------------
@dataclass
class Sample:
    rss_mib: float
    fds: int
    maps: dict[str, float] | None  # None: the operator does not export tritonop_state_entries
    managed: float | None


def state_maps(values: dict[str, float]) -> dict[str, float] | None:
    prefix = STATE_GAUGE + "{"
    maps = {}
    for key, value in values.items():
        if key.startswith(prefix) and 'map="' in key:
            maps[key.split('map="', 1)[1].split('"', 1)[0]] = value
    return maps or None


def sample(pid: int, port: int) -> Sample:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    values = scrape_metrics(port)
    return Sample(rss, fds, state_maps(values), values.get(MANAGED_GAUGE))


def describe(s: Sample) -> str:
    maps = (
        "not exported by this operator"
        if s.maps is None
        else " ".join(f"{k}={v:.0f}" for k, v in sorted(s.maps.items()))
    )
    managed = "?" if s.managed is None else f"{s.managed:.0f}"
    return f"RSS {s.rss_mib:.1f} MiB | fds {s.fds} | managed {managed} | maps: {maps}"


def start_operator(cluster: DevCluster, namespace_pattern: str | None) -> tuple[subprocess.Popen[bytes], int, Path]:
    metrics_port, liveness_port = free_port(), free_port()
    log_path = cluster.state_dir / "logs" / "soak-operator.log"
    scope = [f"--namespace={namespace_pattern}"] if namespace_pattern else []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tritonop",
                "run",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--metrics-port={metrics_port}",
                f"--liveness-port={liveness_port}",
                *scope,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # KUBECONFIG too: kopf's default login reads it when the kubernetes package is imported.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "KUBECONFIG": str(cluster.kubeconfig)},
        )

    def live() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_for("the operator's liveness endpoint", live, timeout=60, fatal=True)
    except BaseException:
        stop_pid(process.pid)  # not returned, so no one else would stop it
        raise
    return process, metrics_port, log_path


# -- waiting, with a count of the tritonservers seen meanwhile ---------------------------------
@dataclass
class Watch:
    max_tritonservers: int = 0
    podrunner: int = 0  # pid of the dev cluster's pod runner, the parent of its tritonservers
    operator: subprocess.Popen[bytes] | None = None
    warnings: list[str] = field(default_factory=list)


WATCH = Watch()


def tritonservers() -> int:
    """tritonserver processes of this dev cluster (children of its pod runner; other clusters on
    the machine have their own)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name, _, rest = stat.partition("(")[2].rpartition(")")
            if name == "tritonserver" and int(rest.split()[1]) == WATCH.podrunner:
                count += 1
    return count


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 1.0, fatal: bool = False) -> bool:
    """Poll check until it holds; on timeout, note it and go on (a benchmark reports, it does not stop)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        WATCH.max_tritonservers = max(WATCH.max_tritonservers, tritonservers())
        if WATCH.operator is not None and WATCH.operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {WATCH.operator.returncode} while waiting for {what}")
        try:
            if check():
                return True
        except RuntimeError:
            raise
        except Exception as error:  # e.g. kubectl or the metrics port briefly failing
            last_error = error
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last_error})" if last_error else "")
            if fatal:
                raise TimeoutError(message)
            print(f"  WARNING: {message}", flush=True)
            WATCH.warnings.append(message)
            return False
        time.sleep(interval)


# -- the workload ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    namespace: str
    name: str
    profile: str

    @property
    def live(self) -> bool:
        return self.profile in LIVE


def workload(cycle: int, count: int, live: int, namespaces: list[str]) -> list[Item]:
    """count ModelDeployments: a third in soak-keep (same names every cycle), the rest over this
    cycle's namespaces; `live` of them, at positions that move every cycle, run a real Triton."""
    step = max(1, count // max(1, live))
    live_at = {(cycle * 7 + k * step) % count: list(LIVE)[k % len(LIVE)] for k in range(min(live, count))}
    parked = [name for name, weight in PARKED_WEIGHTS for _ in range(weight)]
    items = []
    for i in range(count):
        namespace = KEEP_NAMESPACE if i % 3 == 0 else namespaces[(i // 3) % len(namespaces)]
        items.append(Item(namespace, f"m{i}", live_at.get(i, parked[i % len(parked)])))
    return items


def md_spec(item: Item, step: int) -> dict[str, Any]:
    gpus, replicas, version = (LIVE.get(item.profile) or PARKED[item.profile])[step]
    spec: dict[str, Any] = {
        "model": {"name": "sleepy", "repository": f"file://{MODEL_REPO}", "version": version},
        "server": {"gpus": gpus},
    }
    if replicas == "auto":
        spec["autoscaling"] = LIVE_AUTOSCALING if item.live else AUTOSCALING
    else:
        spec["replicas"] = replicas
    return spec


def md_list(items: list[Item], step: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "tritonop.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {
                    "name": item.name,
                    "namespace": item.namespace,
                    "labels": {"tritonop.dev/bench": "soak", "tritonop.dev/soak-profile": item.profile},
                },
                "spec": md_spec(item, step),
            }
            for item in items
        ],
    }


def kubectl_apply(cluster: DevCluster, manifest: dict[str, Any]) -> float:
    """Server-side apply of one List: one kubectl process, one request per object."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(manifest, handle)
    started = time.monotonic()
    try:
        cluster.kubectl("apply", "--server-side", "--field-manager=soak", "-f", handle.name)
    finally:
        os.unlink(handle.name)
    return time.monotonic() - started


def create_namespaces(cluster: DevCluster, names: list[str]) -> None:
    items = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"tritonop.dev/bench": "soak"}}}
        for name in names
    ]
    kubectl_apply(cluster, {"apiVersion": "v1", "kind": "List", "items": items})

    # Pods are refused until the controller manager has made each namespace's ServiceAccount.
    def accounts() -> bool:
        found = cluster.kubectl(
            "get", "serviceaccounts", "-A", "--field-selector=metadata.name=default", "-o", "jsonpath={..namespace}"
        ).stdout.split()
        return set(names) <= set(found)

    wait_for("the namespaces' default ServiceAccounts", accounts, timeout=60)


def md_states(cluster: DevCluster) -> list[list[str]]:
    """namespace, name, generation, status.observedGeneration, Ready status, its generation, activeVersion."""
    output = cluster.kubectl(
        "get",
        "md",
        "-A",
        "-l",
        BENCH_LABEL,
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name} {.metadata.generation} "
        '{.status.observedGeneration}/ {.status.conditions[?(@.type=="Ready")].status}/ '
        '{.status.conditions[?(@.type=="Ready")].observedGeneration}/ {.status.activeVersion}/{"\\n"}{end}',
    ).stdout
    return [line.split() for line in output.splitlines() if line.strip()]


def converged(cluster: DevCluster, items: list[Item], step: int) -> Callable[[], bool]:
    """Status written for the current generation of every ModelDeployment; the live ones Ready
    for it, serving the step's version."""
    expected = {(item.namespace, item.name): item for item in items}

    def check() -> bool:
        states = md_states(cluster)
        if len(states) != len(expected):
            return False
        for namespace, name, generation, observed, ready, ready_generation, active in states:
            item = expected[(namespace, name)]
            if observed.rstrip("/") != generation:
                return False
            if item.live:
                version = str((LIVE[item.profile])[step][2])
                if ready != "True/" or ready_generation.rstrip("/") != generation or active.rstrip("/") != version:
                    return False
        return True

    return check


def count_objects(cluster: DevCluster, kinds: str, namespace: str) -> int:
    return len(cluster.kubectl("get", kinds, "-n", namespace, "-o", "name").stdout.split())


def soak_namespaces(cluster: DevCluster) -> list[str]:
    return cluster.kubectl("get", "namespaces", "-l", BENCH_LABEL, "-o", "name").stdout.split()


def soak_objects(cluster: DevCluster) -> int:
    """The soak's own ModelDeployments still in the cluster (by its label)."""
    return len(cluster.kubectl("get", "md", "-A", "-l", BENCH_LABEL, "-o", "name").stdout.split())


def in_scope(cluster: DevCluster, namespace_pattern: str | None) -> int | None:
    """ModelDeployments in the operator's scope: every one, or those in namespaces that match the
    pattern. None for a pattern that is more than one glob (a list, an exclusion)."""
    if namespace_pattern is not None and ("," in namespace_pattern or namespace_pattern.startswith("!")):
        return None
    namespaces = cluster.kubectl("get", "md", "-A", "-o", "jsonpath={.items[*].metadata.namespace}").stdout.split()
    return sum(namespace_pattern is None or fnmatch.fnmatchcase(ns, namespace_pattern) for ns in namespaces)


def baseline(cluster: DevCluster, pid: int, port: int, namespace_pattern: str | None) -> tuple[Sample, int | None]:
    """The operator's figures once it has taken in what the cluster already holds (ModelDeployments
    that are not the soak's, e.g. the demo's): it manages as many as are in its scope, and
    BASELINE_LOOKS samples in a row agree on that count and every map. The settle checks compare
    with these, not with zero. Returns the baseline and the ModelDeployments that were in scope."""
    looks: list[Sample] = []
    expected: list[int | None] = [None]

    def steady() -> bool:
        expected[0] = in_scope(cluster, namespace_pattern)
        now = sample(pid, port)
        if looks and (now.maps != looks[-1].maps or now.managed != looks[-1].managed):
            looks.clear()
        looks.append(now)
        caught_up = expected[0] is None or now.managed is None or now.managed == expected[0]
        return caught_up and len(looks) >= BASELINE_LOOKS

    wait_for("the operator to take in the cluster's other ModelDeployments (baseline)", steady, BASELINE_SECONDS, 2)
    return (looks[-1] if looks else sample(pid, port)), expected[0]


def delete_all(cluster: DevCluster, cycle_namespaces: list[str], timeout: float) -> None:
    """soak-keep's ModelDeployments one by one (the namespace stays); every other namespace whole."""
    if cycle_namespaces:
        cluster.kubectl("delete", "namespace", *cycle_namespaces, "--wait=false")
    cluster.kubectl("delete", "md", "--all", "-n", KEEP_NAMESPACE, "--wait=true", "--timeout=300s", check=False)
    wait_for(
        "the cycle's namespaces to be gone and soak-keep empty (garbage collection)",
        lambda: (
            set(soak_namespaces(cluster)) <= {f"namespace/{KEEP_NAMESPACE}"}
            and count_objects(cluster, "deployments,pods,services,poddisruptionbudgets", KEEP_NAMESPACE) == 0
        ),
        timeout=timeout,
    )


# -- settling and reporting --------------------------------------------------------------------
class Settled:
    """Condition: none of the soak's ModelDeployments left, every map at most its baseline size
    and no more ModelDeployments managed than at the baseline (other ModelDeployments in the
    cluster, e.g. the demo's, stay; and the fds back near the start). Remembers what held it
    back, and until when (seconds since the first look)."""

    def __init__(self, cluster: DevCluster, pid: int, port: int, start: Sample, fds_too: bool) -> None:
        self.cluster, self.pid, self.port, self.start, self.fds_too = cluster, pid, port, start, fds_too
        self.began = time.monotonic()
        self.last_seen: dict[str, float] = {}
        self.last_lagging: list[str] = []

    def __call__(self) -> bool:
        now = sample(self.pid, self.port)
        lagging = []
        left = soak_objects(self.cluster)
        if left:
            lagging.append(f"soak ModelDeployments={left}")
        if now.managed is not None and now.managed > (self.start.managed or 0.0):
            lagging.append(f"managed={now.managed:.0f} (baseline {self.start.managed or 0.0:.0f})")
        if now.maps is not None and self.start.maps is not None:
            for name in sorted(set(now.maps) | set(self.start.maps)):
                if now.maps.get(name, 0.0) > self.start.maps.get(name, 0.0):
                    lagging.append(f"{name}={now.maps[name]:.0f} (baseline {self.start.maps.get(name, 0.0):.0f})")
        if self.fds_too and now.fds > self.start.fds + FD_SLACK:
            lagging.append(f"fds={now.fds}")
        elapsed = time.monotonic() - self.began
        for what in lagging:
            self.last_seen[what.split("=")[0]] = elapsed
        self.last_lagging = lagging
        return not lagging

    def lagged(self) -> str:
        """What was not back at the first look: ' (control_keys back after 61s, autoscalers still 3)'."""
        if not self.last_seen:
            return ""
        still = {what.split("=")[0]: what for what in self.last_lagging}
        parts = [
            f"{still[name]} still" if name in still else f"{name} back after {self.last_seen[name]:.0f}s"
            for name in sorted(self.last_seen, key=lambda name: -self.last_seen[name])
        ]
        return " (" + ", ".join(parts) + ")"


def verdict(start: Sample, first: Sample, end: Sample) -> None:
    print(
        "\nVERDICT (start = baseline: the operator started, with the cluster's other ModelDeployments taken in; "
        "end = after the last cycle, settled)"
    )
    print(f"{'what':<34} {'start':>10} {'end':>10}   result")

    def line(what: str, before: str, after: str, met: bool, note: str = "") -> None:
        print(f"{what:<34} {before:>10} {after:>10}   {'GOAL MET' if met else 'GOAL MISSED'}{note}")

    if start.maps is None or end.maps is None:
        print(f"{'maps (' + STATE_GAUGE + ')':<34} {'-':>10} {'-':>10}   not exported by this operator")
    else:
        for name in sorted(set(start.maps) | set(end.maps)):
            before, after = start.maps.get(name, 0.0), end.maps.get(name, 0.0)
            line(f"map {name}", f"{before:.0f}", f"{after:.0f}", after <= before)
    if start.managed is not None and end.managed is not None:
        line("ModelDeployments managed", f"{start.managed:.0f}", f"{end.managed:.0f}", end.managed <= start.managed)
    growth = (end.rss_mib - first.rss_mib) / first.rss_mib
    line(
        "RSS MiB (vs after cycle 1)",
        f"{first.rss_mib:.1f}",
        f"{end.rss_mib:.1f}",
        abs(growth) <= RSS_GOAL,
        f" ({growth:+.1%}; goal within {RSS_GOAL:.0%}; at start {start.rss_mib:.1f})",
    )
    line(
        "open fds",
        str(start.fds),
        str(end.fds),
        end.fds <= start.fds + FD_SLACK,
        f" (goal at most start + {FD_SLACK}; after cycle 1: {first.fds})",
    )


def clock(started: float) -> str:
    elapsed = int(time.monotonic() - started)
    return f"{elapsed // 60:d}m{elapsed % 60:02d}s"


def run_cycle(
    cluster: DevCluster, args: argparse.Namespace, cycle: int, started: float, pid: int, port: int, start: Sample
) -> None:
    names = [f"soak-c{cycle}-{j}" for j in range(args.namespaces)]
    create_namespaces(cluster, [KEEP_NAMESPACE, *names])
    items = workload(cycle, args.count, args.live, names)
    live = sum(item.live for item in items)
    for step, what in enumerate(("create", "edit 1", "edit 2")):
        t0 = time.monotonic()
        applied = kubectl_apply(cluster, md_list(items, step))
        ok = wait_for(f"cycle {cycle} {what}: status for every ModelDeployment", converged(cluster, items, step), 600)
        peak = sample(pid, port)
        print(
            f"[cycle {cycle} | {clock(started)}] {what}: {len(items)} ModelDeployments ({live} live) "
            f"applied in {applied:.1f}s, {'converged' if ok else 'NOT converged'} after "
            f"{time.monotonic() - t0:.1f}s | tritonservers now {tritonservers()} | {describe(peak)}",
            flush=True,
        )
    by_namespace = sum(item.namespace != KEEP_NAMESPACE for item in items)
    t0 = time.monotonic()
    delete_all(cluster, names, timeout=600)
    gone = time.monotonic() - t0
    settle = Settled(cluster, pid, port, start, fds_too=False)
    ok = wait_for(f"cycle {cycle}: the operator to settle", settle, 180)
    print(
        f"[cycle {cycle} | {clock(started)}] delete: {by_namespace} by namespace deletion, "
        f"{len(items) - by_namespace} one by one; all gone in {gone:.1f}s, operator "
        f"{'settled' if ok else 'NOT settled'} {time.monotonic() - t0 - gone:.1f}s later{settle.lagged()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20, help="start cycles until this much time has passed")
    parser.add_argument("--count", type=int, default=300, help="ModelDeployments per cycle")
    parser.add_argument("--live", type=int, default=3, help="ModelDeployments per cycle that run a real Triton")
    parser.add_argument("--namespaces", type=int, default=0, help="per-cycle namespaces (default: count // 50, >= 2)")
    parser.add_argument("--namespace-pattern", help="run the operator with --namespace=PATTERN (default: all)")
    parser.add_argument("--settle-seconds", type=float, default=300, help="how long the end may take to settle")
    args = parser.parse_args()
    args.namespaces = args.namespaces or max(2, args.count // 50)

    with running_cluster() as cluster:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.tritonop.dev", "--timeout=60s")
        leftovers = soak_namespaces(cluster)
        if leftovers:
            print(f"deleting {len(leftovers)} namespaces left by an earlier run", flush=True)
            cluster.kubectl("delete", *leftovers, "--wait=true", "--timeout=600s")
        operator, port, log_path = start_operator(cluster, args.namespace_pattern)
        WATCH.operator = operator
        state = cluster.state
        WATCH.podrunner = state.pids.get("podrunner", 0) if state else 0
        pid = operator.pid
        try:
            start, others = baseline(cluster, pid, port, args.namespace_pattern)
            print(
                f"soak: {args.count} ModelDeployments per cycle ({args.live} live, {args.namespaces} namespaces + "
                f"{KEEP_NAMESPACE}), cycles until {args.minutes:g} min; operator pid {pid}, log {log_path}",
                flush=True,
            )
            print(
                f"START  (baseline: {'?' if others is None else others} other ModelDeployments) {describe(start)}",
                flush=True,
            )
            started = time.monotonic()
            cycle, first, middle_shown = 0, start, False
            samples: list[tuple[int, Sample]] = []
            while cycle == 0 or time.monotonic() - started < args.minutes * 60:
                cycle += 1
                run_cycle(cluster, args, cycle, started, pid, port, start)
                now = sample(pid, port)
                samples.append((cycle, now))
                if cycle == 1:
                    first = now
                elapsed = time.monotonic() - started
                tag = "      "
                if cycle == 1:
                    tag = "FIRST "
                if not middle_shown and elapsed >= args.minutes * 30:
                    tag, middle_shown = "MIDDLE", True
                if elapsed >= args.minutes * 60:
                    tag = "LAST  "
                print(f"{tag} after cycle {cycle:<3d} {describe(now)} [{clock(started)}]", flush=True)

            cluster.kubectl("delete", "namespace", KEEP_NAMESPACE, "--wait=true", "--timeout=300s", check=False)
            t0 = time.monotonic()
            settle = Settled(cluster, pid, port, start, fds_too=True)
            ok = wait_for("the operator to settle (maps at baseline, fds near start)", settle, args.settle_seconds)
            end = sample(pid, port)
            print(
                f"END    (settled)       {describe(end)} [{'settled' if ok else 'NOT settled'} "
                f"{time.monotonic() - t0:.1f}s after the last deletion{settle.lagged()}]"
            )
            print(
                f"\n{cycle} cycles in {clock(started)} ({(time.monotonic() - started) / cycle:.0f}s per cycle); "
                f"most tritonserver processes seen at once: {WATCH.max_tritonservers}"
            )
            print("RSS MiB per cycle: " + " ".join(f"{s.rss_mib:.0f}" for _, s in samples))
            print("fds per cycle:     " + " ".join(str(s.fds) for _, s in samples))
            verdict(start, first, end)
            for warning in WATCH.warnings:
                print(f"warning during the run: {warning}")
        finally:
            stop_pid(pid)
            cluster.kubectl("delete", "namespaces", "-l", BENCH_LABEL, "--wait=false", check=False)


if __name__ == "__main__":
    main()
