"""Replica write -> Ready for large versions served from the real MinIO, without and with the node
cache, side by side in one run on the dev cluster (kwok nodes, real tritonserver per pod):

- no cache: Triton downloads the version from S3 itself at every load (every new pod);
- cache, cold: the first pod on a node; a staging Job copies the version from S3 to the node
  (verified while copying), then Triton loads the node's copy;
- cache, warm: a second pod on that node; nothing is fetched;
- a switch prefetched: a new version of the same size, staged on the node before the servers
  switch (the switch itself is one load).

    .venv/bin/python bench/cold_start.py [--sizes 1,4] [--runs 1]

Bytes fetched from the store come from MinIO's own counter (minio_s3_traffic_sent_bytes, its
Prometheus endpoint). Each version is a python-backend model (sleepy: it does not read its
weights, so its load is the same at every size) plus a weights file of the given size: what
scales with size here is moving the bytes, which is what the cache removes. The store is on
loopback; the figures are scaled to production stores' bandwidths by `projection` (printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from devcluster.cluster import DevCluster, free_port, running_cluster, stop_pid, wait_until  # noqa: E402
from devcluster.minio import minio_binary, start_minio  # noqa: E402
from devcluster.volumes import host_path_claim  # noqa: E402
from loadgen import MODEL_REPO  # noqa: E402
from tritonop.repository.manifests import MANIFEST_NAME  # noqa: E402

NAMESPACE = "bench-cache"
NODE = "gpu-node-0"
ACCESS_KEY, SECRET_KEY = "tritonop-bench", "tritonop-bench-secret"
BLOCK = os.urandom(1 << 20)  # weights: one random MiB repeated (MinIO stores it as is: no compression)


def write_version(folder: Path, version: int, gib: float) -> None:
    """sleepy's model.py plus weights.bin of `gib` GiB, and its manifest (hashed while written)."""
    folder.mkdir(parents=True)
    shutil.copy(MODEL_REPO / "sleepy" / "3" / "model.py", folder / "model.py")
    digest = hashlib.sha256()
    with open(folder / "weights.bin", "wb") as out:
        for index in range(int(gib * 1024)):
            block = index.to_bytes(8, "little") + BLOCK[8:]  # distinct blocks
            digest.update(block)
            out.write(block)
    files = {
        "model.py": hashlib.sha256((folder / "model.py").read_bytes()).hexdigest(),
        "weights.bin": digest.hexdigest(),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files}))


class Store:
    """A MinIO server on loopback, its metrics public (its own count of bytes sent)."""

    def __init__(self, cluster: DevCluster, data: Path) -> None:
        binary = minio_binary(cluster.cache_dir)
        if not binary.exists():
            sys.exit(f"{binary} missing: `make minio` builds it")
        self.server = start_minio(binary, data, ACCESS_KEY, SECRET_KEY, "models", public_metrics=True)
        self.endpoint = self.server.endpoint
        self.client = self.server.client()

    def upload(self, local: Path, prefix: str) -> None:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.client.fput_object("models", f"{prefix}/{path.relative_to(local)}", str(path))

    def sent_bytes(self) -> float:
        with urllib.request.urlopen(f"http://{self.endpoint}/minio/v2/metrics/cluster", timeout=10) as page:
            text = page.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("minio_s3_traffic_sent_bytes")
        )

    def settled_bytes(self) -> float:
        """The counter once it stops moving: MinIO refreshes its cluster metrics every few seconds."""
        last, since = self.sent_bytes(), time.monotonic()
        while time.monotonic() - since < 15:
            time.sleep(1)
            now = self.sent_bytes()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def stop(self) -> None:
        self.server.stop()


def cache_claim(path: Path) -> dict[str, Any]:
    """The node cache's hostPath PersistentVolume and its claim (the same folder on every node)."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": host_path_claim(NAMESPACE, "model-cache", f"{NAMESPACE}-cache", path),
    }


def kubectl_json(cluster: DevCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def ready_pods(cluster: DevCluster) -> list[dict[str, Any]]:
    pods = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=tritonserver")["items"]
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def serving(cluster: DevCluster, count: int, version: int) -> Callable[[], bool]:
    def check() -> bool:
        md = kubectl_json(cluster, "get", "md", "m", "-n", NAMESPACE)
        status = md.get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return (
            len(ready_pods(cluster)) == count
            and status.get("activeVersion") == version
            and ready.get("status") == "True"
            and ready.get("observedGeneration") == md["metadata"]["generation"]
        )

    return check


def apply(cluster: DevCluster, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "tritonop.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"}, "spec": spec}
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(body))


def timed(cluster: DevCluster, store: Store, change: Callable[[], None], done: Callable[[], bool]) -> dict[str, float]:
    before = store.settled_bytes()
    began = time.monotonic()
    change()
    wait_until("the change served", done, timeout=1800, interval=0.25)
    seconds = time.monotonic() - began
    return {"seconds": seconds, "fetched_gib": (store.settled_bytes() - before) / 2**30}


def run_size(cluster: DevCluster, store: Store, gib: float, cached: bool, switch: bool = True) -> dict[str, Any]:
    model = {"name": "sleepy", "repository": f"s3://http://{store.endpoint}/models/{gib}g", "version": 1,
             "credentialsSecret": "store"}  # fmt: skip
    if cached:
        model["cache"] = {"claimName": "model-cache", "budget": "64Gi"}
    spec: dict[str, Any] = {"model": model, "replicas": 1, "server": {"gpus": 0, "nodeSelector": {
        "kubernetes.io/hostname": NODE}}}  # fmt: skip
    figures: dict[str, Any] = {"gib": gib, "cache": cached}
    figures["first"] = timed(cluster, store, lambda: apply(cluster, spec), serving(cluster, 1, 1))
    figures["second"] = timed(cluster, store, lambda: apply(cluster, {**spec, "replicas": 2}), serving(cluster, 2, 1))
    if switch:
        switched = {**spec, "replicas": 2, "model": {**model, "version": 2}}
        figures["switch"] = timed(cluster, store, lambda: apply(cluster, switched), serving(cluster, 2, 2))
    md = kubectl_json(cluster, "get", "md", "m", "-n", NAMESPACE)["status"]
    figures["load_seconds"] = (md.get("lastLoad") or {}).get("seconds")
    figures["staging"] = [{k: e.get(k) for k in ("version", "state", "seconds")} for e in md.get("cache") or []]
    figures["startup"] = md.get("startup")
    cluster.kubectl("delete", "md", "m", "-n", NAMESPACE, "--wait=true", "--timeout=300s")
    wait_until("the pods gone", lambda: not kubectl_json(cluster, "get", "pods", "-n", NAMESPACE)["items"], 300)
    return figures


def projection(rows: list[dict[str, Any]], versions_in_folder: int = 2) -> None:
    """Production stores move 100 MB/s-1 GB/s to a pod, not loopback's GB/s. From the measured warm
    start (no bytes moved): without the cache every pod adds the model folder's download (Triton's
    S3 client takes every version in it: 2 here, as measured); with it, the first pod on a node adds
    one version's copy and the next pods nothing."""
    warm = statistics.mean(r["second"]["seconds"] for r in rows if r["cache"])
    print(f"\nProjected replica write -> Ready (s) at a store bandwidth, from the measured warm start ({warm:.1f} s):")
    print("| version | store | no cache, every pod | cache: first pod on a node | cache: next pods on it |")
    print("|---|---|---|---|---|")
    for gib in sorted({r["gib"] for r in rows} | {16.0}):
        for mb_s in (1000, 200, 100):
            fetch = gib * 2**30 / (mb_s * 1e6)
            cold, first = warm + versions_in_folder * fetch, warm + fetch
            print(f"| {gib:g} GiB | {mb_s} MB/s | {cold:.0f} | {first:.0f} | {warm:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4", help="GiB, comma-separated")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--paths", default="none,cache", help="none (Triton reads S3) and/or cache, comma-separated")
    parser.add_argument(
        "--no-switch",
        action="store_true",
        help="first and second pod only: one version uploaded (16 GiB fits this machine's disk only so)",
    )
    parser.add_argument("--out", type=Path, help="append each run as a JSON line here")
    parser.add_argument("--report", type=Path, help="print the tables of recorded runs (JSON lines) and exit")
    args = parser.parse_args()
    if args.report:
        report([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()])
        return
    sizes = [float(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    with running_cluster() as cluster, tempfile.TemporaryDirectory(dir=ROOT / ".devcluster") as tmp:
        work = Path(tmp)
        store = Store(cluster, work / "minio-data")
        log = open(cluster.state_dir / "logs" / "bench-cold-start-operator.log", "wb")  # noqa: SIM115
        operator = None
        try:
            for gib in sizes:
                for version in (1,) if args.no_switch else (1, 2):
                    local = work / "upload" / "sleepy" / str(version)
                    print(f"writing and uploading {gib:g} GiB version {version}...", flush=True)
                    write_version(local, version, gib)
                    store.upload(work / "upload", f"{gib}g")
                    shutil.rmtree(work / "upload")
                store.client.fput_object(
                    "models", f"{gib}g/sleepy/config.pbtxt", str(MODEL_REPO / "sleepy" / "config.pbtxt")
                )
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s")
            cluster.kubectl("create", "namespace", NAMESPACE)
            cluster.kubectl("create", "secret", "generic", "store", "-n", NAMESPACE,
                            f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
                            f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}")  # fmt: skip
            operator = subprocess.Popen(
                [sys.executable, "-m", "tritonop", "run", f"--kubeconfig={cluster.kubeconfig}",
                 f"--namespace={NAMESPACE}", f"--metrics-port={free_port()}", "--liveness-port=0"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            for run in range(args.runs):
                for gib in sizes:
                    for cached in [path == "cache" for path in args.paths.split(",")]:
                        cache = work / f"cache-{run}-{gib}"
                        if cached:
                            cache.mkdir()
                            cluster.kubectl("apply", "-f", "-", input=json.dumps(cache_claim(cache)))
                        print(f"run {run}: {gib:g} GiB, {'cache' if cached else 'no cache'}...", flush=True)
                        figures = run_size(cluster, store, gib, cached, switch=not args.no_switch)
                        print(json.dumps(figures), flush=True)
                        if args.out:
                            with args.out.open("a") as out:
                                out.write(json.dumps(figures) + "\n")
                        rows.append(figures)
                        if cached:
                            cluster.kubectl("delete", "pvc", "model-cache", "-n", NAMESPACE, "--wait=true")
                            cluster.kubectl("delete", "pv", f"{NAMESPACE}-cache", "--wait=true")
                            shutil.rmtree(cache, ignore_errors=True)
        finally:
            if operator is not None:
                stop_pid(operator.pid)
            store.stop()
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    report(rows)


def report(rows: list[dict[str, Any]]) -> None:
    print("\n| version | path | first pod: s (GiB from store) | second pod on the node | switch to a new version |")
    print("|---|---|---|---|---|")
    for row in rows:
        path = "node cache" if row["cache"] else "no cache (Triton reads S3)"
        cells = [
            f"{row[k]['seconds']:.1f} ({row[k]['fetched_gib']:.2f})" if k in row else "not run"
            for k in ("first", "second", "switch")
        ]
        print(f"| {row['gib']:g} GiB | {path} | " + " | ".join(cells) + " |")
    if any(r["cache"] for r in rows):
        projection(rows)


if __name__ == "__main__":
    main()
