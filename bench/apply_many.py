"""Apply N ModelDeployments at once on the dev cluster and time the operator against a floor.

    .venv/bin/python bench/apply_many.py [--count 200] [--ready-count 20] [--idle-seconds 300]

Figures, measured side by side in one run on the same cluster:
- floor: `kubectl apply --server-side` of the same N pre-rendered Deployments + Services,
  alternating with the operator run over --rounds rounds (median ratio: this machine is noisy);
- operator: `kubectl apply --server-side` of N ModelDeployments until every one has its Deployment and
  Service, and until every one is Ready (replicas 0: no Triton process; 200 real tritonservers
  do not fit in this machine's memory), and the ratio operator/floor;
- ready-count ModelDeployments with one real Triton replica each (gpus: 0), until all Ready;
- write calls the operator makes while idle after convergence (goal 0);
- operator RSS at N and at 5 x N ModelDeployments.
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devcluster import running_cluster  # noqa: E402
from devcluster.cluster import DevCluster, free_port, stop_pid, wait_until  # noqa: E402
from tritonop.api.spec import ModelDeployment  # noqa: E402
from tritonop.render.objects import RenderInputs, render_deployment, render_service  # noqa: E402

MODEL_REPO = ROOT / "model_repo"


def spec(replicas: int) -> dict[str, Any]:
    return {
        "model": {"name": "sleepy", "repository": f"file://{MODEL_REPO}", "version": 2},
        "server": {"gpus": 0},
        "replicas": replicas,
    }


def md_list(namespace: str, prefix: str, count: int, replicas: int) -> dict[str, Any]:
    items = [
        {
            "apiVersion": "tritonop.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": f"{prefix}{i}", "namespace": namespace},
            "spec": spec(replicas),
        }
        for i in range(count)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def floor_objects(namespace: str, count: int) -> dict[str, Any]:
    """The same Deployments and Services the operator renders, without an owner to point to."""
    items = []
    for i in range(count):
        md = ModelDeployment.from_body(
            {"metadata": {"name": f"m{i}", "namespace": namespace, "uid": "0"}, "spec": spec(0)}
        )
        for obj in (render_deployment(md, RenderInputs(replicas=0, target_version=2)), render_service(md)):
            del obj["metadata"]["ownerReferences"]
            items.append(obj)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def kubectl_apply(cluster: DevCluster, manifest: dict[str, Any], server_side: bool) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(manifest, handle)
    started = time.monotonic()
    args = ["apply", "-f", handle.name] + (["--server-side", "--field-manager=bench"] if server_side else [])
    cluster.kubectl(*args)
    elapsed = time.monotonic() - started
    os.unlink(handle.name)
    return elapsed


def count(cluster: DevCluster, kind: str, namespace: str) -> int:
    return len(cluster.kubectl("get", kind, "-n", namespace, "-o", "name").stdout.split())


def ready_count(cluster: DevCluster, namespace: str) -> int:
    output = cluster.kubectl(
        "get",
        "md",
        "-n",
        namespace,
        "-o",
        'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
    ).stdout
    return output.split().count("True")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def operator_requests(metrics_port: int) -> dict[str, float]:
    """Requests the operator made to the Kubernetes API so far, by verb."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    by_verb: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tritonop_kubernetes_requests_total{"):
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            by_verb[verb] = by_verb.get(verb, 0.0) + float(line.rsplit(" ", 1)[1])
    return by_verb


def operator_writes(metrics_port: int) -> float:
    requests = operator_requests(metrics_port)
    return sum(requests.get(verb, 0.0) for verb in ("apply", "patch", "create", "delete", "update"))


def timed_wait(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    wait_until(what, check, timeout=timeout, interval=0.5)
    return time.monotonic() - started


def start_operator(cluster: DevCluster, metrics_port: int) -> subprocess.Popen[bytes]:
    log_path = cluster.state_dir / "logs" / "bench-operator.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tritonop",
                "run",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--metrics-port={metrics_port}",
                "--liveness-port=0",
                "--resync-seconds=30",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def fresh_namespace(cluster: DevCluster, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=600s")
    cluster.kubectl("create", "namespace", name)


def one_round(cluster: DevCluster, n: int, metrics_port: int, index: int) -> tuple[float, float, float]:
    """Floor, then operator, on fresh namespaces; returns (floor, objects, ready) seconds."""
    floor_ns, op_ns = f"bench-floor-{index}", f"bench-op-{index}"
    fresh_namespace(cluster, floor_ns)
    fresh_namespace(cluster, op_ns)
    floor = kubectl_apply(cluster, floor_objects(floor_ns, n), server_side=True)
    assert count(cluster, "deployments", floor_ns) == n
    before = operator_requests(metrics_port)
    # Server-side, like the floor (and like Argo CD): one request per object on both sides.
    apply_seconds = kubectl_apply(cluster, md_list(op_ns, "m", n, replicas=0), server_side=True)
    objects = apply_seconds + timed_wait(
        "every Deployment and Service",
        lambda: count(cluster, "deployments", op_ns) == n and count(cluster, "services", op_ns) == n,
        timeout=900,
    )
    ready = objects + timed_wait("every ModelDeployment Ready", lambda: ready_count(cluster, op_ns) == n, 900)
    after = operator_requests(metrics_port)
    per_md = ", ".join(f"{verb} {(after[verb] - before.get(verb, 0.0)) / n:.1f}" for verb in sorted(after))
    print(
        f"round {index}: floor {floor:.1f}s | operator: apply {apply_seconds:.1f}s, Deployments+Services "
        f"{objects:.1f}s ({objects / floor:.2f}x), Ready {ready:.1f}s ({ready / floor:.2f}x) | "
        f"API requests per ModelDeployment: {per_md}"
    )
    # Clean up before the next round, so that garbage collection does not run during it.
    for ns in (floor_ns, op_ns):
        cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=600s")
    return floor, objects, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="floor/operator pairs; the median ratio is reported")
    parser.add_argument("--ready-count", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=300)
    parser.add_argument("--scale-factor", type=int, default=5, help="RSS is also measured at count x this")
    args = parser.parse_args()
    n = args.count

    with running_cluster() as cluster:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.tritonop.dev")
        metrics_port = free_port()
        operator = start_operator(cluster, metrics_port)
        try:
            wait_until("operator metrics", lambda: operator_writes(metrics_port) >= 0, timeout=60)
            rss_empty = rss_mib(operator.pid)
            results = [one_round(cluster, n, metrics_port, index) for index in range(args.rounds)]
            objects_ratios = sorted(objects / floor for floor, objects, _ in results)
            ready_ratios = sorted(ready / floor for floor, _, ready in results)
            print(
                f"median ratio operator/floor over {args.rounds} rounds: Deployments+Services "
                f"{statistics.median(objects_ratios):.2f}x (range {objects_ratios[0]:.2f}-{objects_ratios[-1]:.2f}), "
                f"Ready {statistics.median(ready_ratios):.2f}x (range {ready_ratios[0]:.2f}-{ready_ratios[-1]:.2f})"
            )

            # Memory at n, then at scale-factor x n, plus some real Triton replicas and idle writes.
            for ns in ("bench-op", "bench-ready", "bench-scale"):
                fresh_namespace(cluster, ns)
            kubectl_apply(cluster, md_list("bench-op", "m", n, replicas=0), server_side=True)
            timed_wait(f"{n} ModelDeployments Ready", lambda: ready_count(cluster, "bench-op") == n, 900)
            rss_n = rss_mib(operator.pid)

            started = time.monotonic()
            kubectl_apply(cluster, md_list("bench-ready", "r", args.ready_count, replicas=1), server_side=False)
            timed_wait(
                f"{args.ready_count} ModelDeployments served by real Triton",
                lambda: ready_count(cluster, "bench-ready") == args.ready_count,
                900,
            )
            print(
                f"{args.ready_count} ModelDeployments x 1 real Triton replica: all Ready after "
                f"{time.monotonic() - started:.1f}s"
            )

            writes_before = operator_writes(metrics_port)
            time.sleep(args.idle_seconds)  # the measurement window itself, not synchronisation
            idle_writes = operator_writes(metrics_port) - writes_before
            print(
                f"write calls during {args.idle_seconds:.0f}s idle after convergence "
                f"({n + args.ready_count} ModelDeployments, resync every 30s): {idle_writes:.0f}"
            )

            big = n * args.scale_factor
            kubectl_apply(cluster, md_list("bench-scale", "s", big - n, replicas=0), server_side=True)
            timed_wait(f"{big} ModelDeployments Ready", lambda: ready_count(cluster, "bench-scale") == big - n, 1800)
            print(
                f"operator RSS: {rss_empty:.0f} MiB empty, {rss_n:.0f} MiB at {n}, "
                f"{rss_mib(operator.pid):.0f} MiB at {big + args.ready_count} ModelDeployments"
            )
        finally:
            stop_pid(operator.pid)
            for ns in ("bench-op", "bench-ready", "bench-scale"):
                cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


if __name__ == "__main__":
    main()
