"""Switch time and loads per switch, for a version that takes N seconds to load: the one-request
switch tritonop uses against the earlier side-by-side + retire protocol, side by side in one run
on one real tritonserver (the nvidia-pytriton wheel's 2.51, CPU), under load.

    .venv/bin/python bench/switch_loads.py [--load-seconds 10] [--runs 3]

Each run switches to a version folder that was never loaded (as a new version is), alternating
the protocols on one server:
- one request (tritonop): load the model with `version_policy: specific [new]`; Triton loads the
  new version beside the serving one and unloads the old one once the new one is READY;
- side by side + retire (before): load with `specific [old, new]`, then with `specific [new]`.

Loads are counted from the server's own log: python-backend model instances created
(`TRITONBACKEND_ModelInstanceInitialize`), one per version copy loaded. Meanwhile a client sends
requests back to back on a kept-alive connection; every failure is counted. Printed per
protocol: switch seconds (mean and 95% interval over runs), its ratio to one load of the same
version size, loads per switch and failed requests. The issue's goal (22): one load per switch,
switch time <= 1.2 x one load, 0 failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from devcluster.cluster import free_port, wait_until
from devcluster.podrunner import TritonInstall
from loadgen import BODY, SLEEPY_CODE, SLEEPY_CONFIG, write_model
from tritonop.triton import TritonServer

MODEL = "slowswitch"
T_95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}


def mean_ci(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    half = T_95.get(len(values), 2.0) * statistics.stdev(values) / len(values) ** 0.5
    return f"{statistics.mean(values):.2f} ± {half:.2f}"


class Server:
    def __init__(self, repository: Path, work: Path) -> None:
        install = TritonInstall.prepare(work)
        self.http, self.grpc, metrics = free_port(), free_port(), free_port()
        self.log_path = work / "tritonserver.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (the server outlives this call)
        argv = [
            str(install.binary),
            f"--model-repository={repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={install.backends}",
            f"--cache-directory={install.caches}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
        ]
        self.process = subprocess.Popen(argv, env=install.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("tritonserver live", self._live, timeout=60)

    # Plain HTTP (tritonclient.http's gevent loop holds the GIL while it waits: the traffic
    # thread then sends nothing during a load).
    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            text = response.read()
        return json.loads(text) if text else None

    def _live(self) -> bool:
        assert self.process.poll() is None, f"tritonserver exited; see {self.log_path}"
        try:
            self.call("/v2/health/live")
        except OSError:
            return False
        return True

    def load(self, versions: list[int], config: dict[str, Any] | None, over: str = "http") -> None:
        if config is None:
            self.call(f"/v2/repository/models/{MODEL}/load", {})
            return
        wanted = json.dumps({**config, "version_policy": {"specific": {"versions": versions}}})
        if over == "grpc":  # as the operator does it (tritonop.triton.TritonServer, gRPC)
            asyncio.run(TritonServer("127.0.0.1", "", port=self.http, grpc_port=self.grpc).load(MODEL, wanted))
        else:
            self.call(f"/v2/repository/models/{MODEL}/load", {"parameters": {"config": wanted}})

    def config(self) -> dict[str, Any]:
        return dict(self.call(f"/v2/models/{MODEL}/config"))

    def instances(self) -> int:
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(rf'"TRITONBACKEND_ModelInstanceInitialize: {MODEL}_\d+_\d+ \(', text))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


class Traffic:
    """Requests back to back on one kept-alive connection; failures counted, never retried."""

    def __init__(self, port: int) -> None:
        import urllib3

        self.pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, retries=False, timeout=30)
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self.answered_at: list[float] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                response = self.pool.urlopen(
                    "POST", f"/v2/models/{MODEL}/infer", body=BODY, headers={"Content-Type": "application/json"}
                )
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status} {response.data[:100]!r}")
                self.sent += 1
                self.answered_at.append(time.monotonic())
            except Exception as error:
                self.sent += 1
                self.failed += 1
                self.errors.append(f"{type(error).__name__}: {error}"[:160])
            time.sleep(0.02)

    def longest_wait(self, since: float, until: float) -> float:
        """The longest time without an answer between `since` and `until`."""
        times = [since, *(at for at in self.answered_at if since < at < until), until]
        return max(later - earlier for earlier, later in itertools.pairwise(times))

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-seconds", type=float, default=10.0, help="how long one version takes to load")
    parser.add_argument("--runs", type=int, default=3, help="switches per protocol")
    args = parser.parse_args()

    versions = 1 + 3 * args.runs
    config = SLEEPY_CONFIG.read_text() + (
        f'parameters {{\n  key: "load_delay_s"\n  value: {{ string_value: "{args.load_seconds:g}" }}\n}}\n'
    )
    protocols = ("one request, gRPC (tritonop)", "one request, HTTP", "side by side + retire, HTTP")
    results: dict[str, dict[str, list[float]]] = {
        protocol: {"seconds": [], "loads": [], "failed": [], "wait": []} for protocol in protocols
    }
    with tempfile.TemporaryDirectory(prefix="switch-loads-") as folder:
        work = Path(folder)
        repository = write_model(
            work / "repo", MODEL, config, dict.fromkeys(range(1, versions + 1), SLEEPY_CODE.read_text())
        )
        server = Server(repository, work)
        try:
            started = time.monotonic()
            server.load([1], None)
            one_load = time.monotonic() - started
            model_config = server.config()
            print(f"one load of version 1: {one_load:.2f}s ({args.load_seconds:g}s in the model's initialize)")
            traffic = Traffic(server.http)
            serving = 1
            for run in range(args.runs):
                for protocol in protocols:
                    new = serving + 1
                    before, failed_before = server.instances(), traffic.failed
                    started = time.monotonic()
                    if protocol.startswith("one request, gRPC"):
                        server.load([new], model_config, over="grpc")
                    elif protocol.startswith("one request"):
                        server.load([new], model_config)
                    else:
                        server.load([serving, new], model_config)
                        server.load([new], model_config)
                    took = time.monotonic() - started
                    wait = traffic.longest_wait(started, time.monotonic())
                    results[protocol]["wait"].append(wait)
                    loads = server.instances() - before
                    failed = traffic.failed - failed_before
                    results[protocol]["seconds"].append(took)
                    results[protocol]["loads"].append(loads)
                    results[protocol]["failed"].append(failed)
                    print(
                        f"run {run + 1}, {protocol}: v{serving} -> v{new} {took:.2f}s, {loads} load(s), "
                        f"{failed} failed, longest wait for an answer {wait:.2f}s"
                    )
                    serving = new
            traffic.stop()
        finally:
            server.stop()
    print(
        f"\nversion load time {one_load:.2f}s; {traffic.sent} requests sent during the switches, "
        f"{traffic.failed} failed"
    )
    print("| protocol | switch seconds | ratio to one load | loads per switch | failed requests | longest wait (s) |")
    print("|---|---|---|---|---|---|")
    for protocol, figures in results.items():
        ratios = [seconds / one_load for seconds in figures["seconds"]]
        loads = sorted({int(count) for count in figures["loads"]})
        print(
            f"| {protocol} | {mean_ci(figures['seconds'])} | {mean_ci(ratios)} | "
            f"{'/'.join(map(str, loads))} | {int(sum(figures['failed']))} | {mean_ci(figures['wait'])} |"
        )
    if traffic.errors:
        print("errors:", traffic.errors[:3])


if __name__ == "__main__":
    main()
