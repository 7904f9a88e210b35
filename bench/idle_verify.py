"""The operator's CPU and memory while idle, with large model versions: before and after the
manifest cache (issue 13), side by side in one run.

    .venv/bin/python bench/idle_verify.py [--count 20] [--gb 2] [--seconds 60] [--before 783f63b]
    .venv/bin/python bench/idle_verify.py --profile /tmp/idle.prof   # this tree only, under cProfile

Setup: `count` autoscaled ModelDeployments (minReplicas 1, p95 target 1000 ms, no traffic), each
with its own version folder holding a `gb` GiB weights file (sparse: no disk needed; reading it
still costs sha256 its full CPU) plus sleepy's model.py, and a SHA256SUMS.json listing both.
With --parked (the default) their pods ask for 9 GPUs and stay Pending, so no tritonserver runs
and the figure is the operator's own; --running serves each on CPU (gpus: 0) instead.

For each side, the operator runs as a real process against the dev cluster (before: the tree at
--before, checked out as a git worktree; after: this tree); once every ModelDeployment has
status, the operator's CPU time (utime + stime, all threads, from /proc) is measured over
--seconds, with its RSS sampled every second. Printed: CPU as % of one core, RSS at the start and
the maximum, and the bytes it hashed meanwhile (tritonop_repository_hashed_bytes_total, after
only: the first verification of each version happens before the window). Not a
test; the goal (issue 13) is under 2% of one core and no RSS growth with model size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from devcluster import running_cluster  # noqa: E402
from devcluster.cluster import DevCluster, free_port, stop_pid, wait_until  # noqa: E402
from loadgen import MODEL_REPO, scrape_metrics  # noqa: E402
from tritonop.repository.tools import write_manifest  # noqa: E402

NAMESPACE = "bench-idle-verify"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HASHED = "tritonop_repository_hashed_bytes_total"
RECONCILES_COUNT = "tritonop_reconcile_duration_seconds_count"
RECONCILES_SUM = "tritonop_reconcile_duration_seconds_sum"
QUIET = "tritonop_quiet_evaluations_total"  # the after side exports it; the before side does not


def build_repositories(root: Path, count: int, gib: float) -> list[Path]:
    """One repository per ModelDeployment: sleepy's config and code, a big sparse weights file."""
    repositories = []
    for index in range(count):
        repository = root / f"r{index}"
        version = repository / "sleepy" / "1"
        version.mkdir(parents=True)
        shutil.copy(MODEL_REPO / "sleepy" / "config.pbtxt", repository / "sleepy" / "config.pbtxt")
        shutil.copy(MODEL_REPO / "sleepy" / "1" / "model.py", version / "model.py")
        with open(version / "weights.bin", "wb") as weights:
            weights.truncate(int(gib * (1 << 30)))
        repositories.append(repository)
    # Hash once here (it is the same bytes in every folder): the manifests are written, not timed.
    first = write_manifest(repositories[0] / "sleepy" / "1")
    for repository in repositories[1:]:
        (repository / "sleepy" / "1" / "SHA256SUMS.json").write_text(
            json.dumps({"algorithm": "sha256", "files": first}, indent=2) + "\n"
        )
    return repositories


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def manifest(index: int, repository: Path, parked: bool, fixed: bool) -> dict[str, Any]:
    scaling: dict[str, Any] = (
        {"replicas": 1}
        if fixed
        else {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "p95", "targetLatencyMs": 1000}}
    )
    return {
        "apiVersion": "tritonop.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"big-{index}", "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "sleepy", "repository": f"file://{repository}", "version": 1},
            "server": {"gpus": 9 if parked else 0},
            **scaling,
        },
    }


def measure(
    cluster: DevCluster,
    side: str,
    source: Path,
    repositories: list[Path],
    seconds: float,
    parked: bool,
    fixed: bool,
    profile: Path | None = None,
) -> dict[str, Any]:
    # Each side with its own CRD: an older operator refuses fields a newer schema defaults.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(source / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.tritonop.dev", "--timeout=60s")
    metrics_port, liveness_port = free_port(), free_port()
    log_path = cluster.state_dir / "logs" / f"bench-idle-verify-{side}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                *(["-m", "cProfile", "-o", str(profile)] if profile else []),
                "-m",
                "tritonop",
                "run",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--metrics-port={metrics_port}",
                f"--liveness-port={liveness_port}",
                *(["--verbose"] if os.environ.get("IDLE_VERIFY_VERBOSE") else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The tree under test comes first on the path (the venv's editable install is this tree).
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(source / "operator")},
        )
    try:

        def live() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)

        wait_until(f"{side}: the operator's liveness endpoint", live, timeout=60)
        documents = [manifest(i, r, parked, fixed) for i, r in enumerate(repositories)]
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

        def settled(item: dict[str, Any]) -> bool:
            """Parked: status written. Running: Ready (servers started and loaded: not idle before)."""
            conditions = item.get("status", {}).get("conditions") or []
            return bool(conditions) and (
                parked or any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            )

        def all_settled() -> bool:
            items = json.loads(cluster.kubectl("get", "md", "-n", NAMESPACE, "-o", "json").stdout)["items"]
            return len(items) == len(documents) and all(settled(item) for item in items)

        wait_until(f"{side}: every ModelDeployment {'with status' if parked else 'Ready'}", all_settled, timeout=900)
        time.sleep(5)  # the last converging requeues (1 s) run out before the window
        start_metrics = scrape_metrics(metrics_port)
        hashed_start = start_metrics.get(HASHED)
        rss_start = rss_mib(process.pid)
        cpu_start, started = cpu_seconds(process.pid), time.monotonic()
        rss = [rss_start]
        while time.monotonic() - started < seconds:
            time.sleep(1)
            rss.append(rss_mib(process.pid))
        user_end, system_end = cpu_seconds(process.pid)
        elapsed = time.monotonic() - started
        user, system = (user_end - cpu_start[0]) / elapsed, (system_end - cpu_start[1]) / elapsed
        cpu = user + system
        end_metrics = scrape_metrics(metrics_port)
        hashed_end = end_metrics.get(HASHED)
        hashed = None if hashed_end is None or hashed_start is None else hashed_end - hashed_start
        # Reconciles (quiet evaluations included) in the window, and their mean wall time in process.
        count = end_metrics.get(RECONCILES_COUNT, 0.0) - start_metrics.get(RECONCILES_COUNT, 0.0)
        spent = end_metrics.get(RECONCILES_SUM, 0.0) - start_metrics.get(RECONCILES_SUM, 0.0)
        # Older trees do not export it: no figure then.
        quiet = end_metrics[QUIET] - start_metrics.get(QUIET, 0.0) if QUIET in end_metrics else None
        return {
            "side": side,
            "cpu_pct_of_one_core": round(100 * cpu, 2),
            "user_pct": round(100 * user, 2),
            "system_pct": round(100 * system, 2),
            "rss_start_mib": round(rss_start, 1),
            "rss_max_mib": round(max(rss), 1),
            "hashed_bytes_while_idle": hashed,
            "reconciles_per_second": round(count / seconds, 1),
            "full_reconciles_per_second": None if quiet is None else round((count - quiet) / seconds, 2),
            "reconcile_mean_ms": round(1000 * spent / count, 3) if count else None,
        }
    finally:
        cluster.kubectl("delete", "md", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=120s", check=False)
        stop_pid(process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--gb", type=float, default=2.0, help="GiB of weights per version (sparse file)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--before", default="783f63b", help="git revision before the manifest cache")
    parser.add_argument(
        "--profile",
        type=Path,
        help="run only this tree, under cProfile, writing the profile here (figures are then inflated)",
    )
    parser.add_argument("--sides", default="before,after", help="which sides to run (e.g. after)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--parked", dest="parked", action="store_true", default=True, help="pods Pending (default)")
    mode.add_argument("--running", dest="parked", action="store_false", help="serve each on CPU")
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="replicas: 1 instead of autoscaling: the floor (watches, resyncs, relists) without the 1 s evaluations",
    )
    args = parser.parse_args()
    with running_cluster() as cluster, tempfile.TemporaryDirectory(dir=ROOT / ".devcluster") as tmp:
        work = Path(tmp)
        print(f"writing {args.count} versions of {args.gb:g} GiB (sparse)...", flush=True)
        repositories = build_repositories(work / "repos", args.count, args.gb)
        before = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s")
        cluster.kubectl("create", "namespace", NAMESPACE)
        results = []
        try:
            wanted = ["after"] if args.profile else args.sides.split(",")
            sides = [(side, source) for side, source in (("before", before), ("after", ROOT)) if side in wanted]
            for side, source in sides:
                print(f"measuring {side} ({args.seconds:.0f} s idle)...", flush=True)
                figures = measure(
                    cluster, side, source, repositories, args.seconds, args.parked, args.fixed, args.profile
                )
                results.append(figures)
                print(json.dumps(results[-1]), flush=True)
        finally:
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    kind = "fixed-replica" if args.fixed else "autoscaled"
    print(f"\n{args.count} {kind} ModelDeployments, {args.gb:g} GiB per version, idle for {args.seconds:.0f} s")
    print(
        f"{'':8} {'CPU % of one core':>18} {'RSS start MiB':>14} {'RSS max MiB':>12} {'hashed while idle':>18}"
        f" {'reconciles/s':>13} {'mean ms':>8}"
    )
    for r in results:
        hashed = "-" if r["hashed_bytes_while_idle"] is None else f"{r['hashed_bytes_while_idle']:.3g}"
        print(
            f"{r['side']:8} {r['cpu_pct_of_one_core']:>18.2f} {r['rss_start_mib']:>14.1f} "
            f"{r['rss_max_mib']:>12.1f} {hashed:>18} {r['reconciles_per_second']:>13} "
            f"{r['reconcile_mean_ms'] or '-':>8}"
        )
    if len(results) == 2 and results[1]["cpu_pct_of_one_core"] > 0:
        print(f"CPU ratio before/after: {results[0]['cpu_pct_of_one_core'] / results[1]['cpu_pct_of_one_core']:.0f}x")


if __name__ == "__main__":
    main()
