"""Inference load for the demos (`make demo`, `make demo-autoscale`), at Triton's pod IPs.

    python -m examples.demo_load switch --model mlp IP [IP ...]
        A little steady load (10 requests/s per pod, open loop) while a version switch happens in
        place. Every second it prints, per pod, which model_version (from Triton's infer
        response) answered and the slowest answer, and how many requests failed (an error or no
        answer within --timeout). It stops on SIGTERM/SIGINT (or after
        --max-seconds), prints a summary and exits 1 if any request failed.

    python -m examples.demo_load autoscale --namespace demo-autoscale --name sleepy100
        The autoscaling story: open-loop load (loadgen/) at the ready pods' IPs, low, then
        high, then none; every 2 s a line with the load, the client's p95 and the
        ModelDeployment's printer columns (`kubectl get md`); ends by itself once the replicas are
        back at minReplicas, with a summary. Exits 1 on failed requests or if it never scaled.

    python -m examples.demo_load llm --namespace demo-llm --name tokens
        The same story for a streaming model (the token generator, model_repo/tokens): one
        answer streamed token by token, then open-loop gRPC streams at the ready pods, low, high,
        then none; every 2 s the client's p95 time to first token and inter-token latency, and
        `kubectl get md -o wide` (measured TTFT and ITL next to their targets). Exits 1 on failed
        streams or if it never scaled.

Talks to the pods by pod IP because the dev cluster's Services have no endpoints (loopback pod IPs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from loadgen import LoadGenerator

BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()


def infer(ip: str, model: str, timeout: float = 10.0) -> dict[str, Any]:
    """One request to Triton's HTTP/REST infer endpoint; the parsed response."""
    request = urllib.request.Request(
        f"http://{ip}:8000/v2/models/{model}/infer", data=BODY, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


# --- switch: which version answers, pod by pod, while the operator switches in place -------------


@dataclass
class PodTally:
    versions: Counter[str] = field(default_factory=Counter)  # this second
    total: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0  # seconds, of the answers this second
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def switch(args: argparse.Namespace) -> int:
    """Open loop: requests go out on schedule whatever the answers' latency (a slow answer does
    not hold back the next request), each pod its own schedule, every request a timeout."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tallies = {ip: PodTally() for ip in args.ips}
    lock = threading.Lock()
    slowest_overall = 0.0

    def one(ip: str) -> None:
        nonlocal slowest_overall
        sent = time.monotonic()
        try:
            version = str(infer(ip, args.model, timeout=args.timeout)["model_version"])
            latency = time.monotonic() - sent
            with lock:
                tally = tallies[ip]
                tally.versions[version] += 1
                tally.total[version] += 1
                tally.slowest = max(tally.slowest, latency)
                slowest_overall = max(slowest_overall, latency)
        except Exception as error:
            with lock:
                tallies[ip].failed += 1
                tallies[ip].errors[f"{type(error).__name__}: {error}"[:160]] += 1

    pool = ThreadPoolExecutor(max_workers=8 * len(args.ips), thread_name_prefix="load")

    def arrivals() -> None:
        gap = 1.0 / (args.rate * len(args.ips))
        next_at = time.monotonic()
        turn = 0
        while not stop.is_set():
            pool.submit(one, args.ips[turn % len(args.ips)])
            turn += 1
            next_at += gap
            stop.wait(max(0.0, next_at - time.monotonic()))

    sender = threading.Thread(target=arrivals, daemon=True)
    sender.start()
    started = time.monotonic()
    while not stop.wait(1.0):
        elapsed = time.monotonic() - started
        with lock:
            parts = []
            for ip, tally in tallies.items():
                answered = " ".join(f"v{v}:{n}" for v, n in sorted(tally.versions.items())) or "-"
                parts.append(f"{ip} {answered:<9} {tally.slowest * 1000:5.0f}ms")
                tally.versions.clear()
                tally.slowest = 0.0
            failed = sum(t.failed for t in tallies.values())
        print(f"  [load {elapsed:3.0f}s] " + " | ".join(parts) + f" | failed {failed}", flush=True)
        if elapsed > args.max_seconds:
            break
    stop.set()
    sender.join(timeout=5)
    pool.shutdown(wait=True)  # the requests in flight finish (each has a timeout)
    total: Counter[str] = Counter()
    for tally in tallies.values():
        total.update(tally.total)
    failed = sum(t.failed for t in tallies.values())
    answered = ", ".join(f"version {v}: {n}" for v, n in sorted(total.items()))
    print(
        f"load during the switch: {sum(total.values()) + failed} requests, answered by {answered}; "
        f"slowest answer {slowest_overall * 1000:.0f}ms; failed: {failed}"
    )
    for ip, tally in tallies.items():
        for error, count in tally.errors.most_common(3):
            print(f"  {ip}: {count} x {error}")
    return 1 if failed else 0


# --- autoscale: rising load, the autoscaler's answer, load gone, replicas back down -------------


def kubectl(*args: str) -> str:
    return subprocess.run(
        [os.environ.get("KUBECTL", "kubectl"), *args], check=True, capture_output=True, text=True, timeout=20
    ).stdout


class Cluster:
    """The few reads the autoscale demo makes, with the kubernetes client ($KUBECONFIG)."""

    def __init__(self, namespace: str, name: str) -> None:
        from kubernetes import client, config

        config.load_kube_config()  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.namespace, self.name = namespace, name

    def ready_pod_ips(self) -> list[str]:
        """Pod IPs of the ModelDeployment's pods that are Ready and not on their way out."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"app.kubernetes.io/instance={self.name}")
        ips = []
        for pod in pods.items:
            if pod.status is None or pod.metadata is None or pod.metadata.deletion_timestamp:
                continue
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if ready and pod.status.pod_ip:
                ips.append(str(pod.status.pod_ip))
        return ips

    def status(self) -> dict[str, Any]:
        md: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            "tritonop.dev", "v1alpha1", self.namespace, "modeldeployments", self.name
        )
        return dict(md.get("status") or {})


def printer_columns(*args: str) -> tuple[list[str], list[str]]:
    """`kubectl get` of one object: its printer columns' names and cells. kubectl aligns each cell
    under its column's name, so the header's word offsets cut the row (empty cells included)."""
    header, row = kubectl("get", *args).splitlines()[:2]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    cuts = [*starts[1:], None]
    return header.split(), [row[a:b].strip() for a, b in zip(starts, cuts, strict=True)]


WIDTHS = {"NAME": 12, "REASON": 20, "ROLLOUT": 14}


def table_line(names: list[str], cells: list[str]) -> str:
    return " ".join(f"{cell:<{WIDTHS.get(name, 10)}}" for name, cell in zip(names, cells, strict=True)).rstrip()


def autoscale(args: argparse.Namespace) -> int:
    # (seconds, requests/s): what the clients do. One replica serves 1000 / batch_ms requests/s.
    phases = [(args.low_seconds, args.low_rate), (args.high_seconds, args.high_rate)]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(args.namespace, args.name)
    md = ["md", args.name, "-n", args.namespace]
    names, _ = printer_columns(*md)
    print(f"{'TIME':>5} {'LOAD':>6} {'CLIENT-P95':>10} | {table_line(names, names)}", flush=True)
    max_replicas = 0
    load = LoadGenerator(cluster.ready_pod_ips, args.name, 0.0, max_seconds=600)
    load.start()
    started = time.monotonic()
    phase_end = started
    try:
        schedule = []
        for seconds, rate in phases:
            phase_end += seconds
            schedule.append((phase_end, rate))
        rate = 0.0
        settled_since: float | None = None
        unsettled = False
        while not stop.is_set():
            now = time.monotonic()
            rate = next((r for end, r in schedule if now < end), 0.0)
            load.set_rate(rate)
            status = cluster.status()
            replicas = int(status.get("replicas") or 0)
            max_replicas = max(max_replicas, int(status.get("readyReplicas") or 0))
            names, cells = printer_columns(*md)
            p95 = load.stats.percentile(0.95, since=now - 2)
            client = f"{p95:.0f}ms" if p95 is not None else "-"
            print(f"{now - started:4.0f}s {rate:4.0f}/s {client:>10} | {table_line(names, cells)}", flush=True)
            if rate == 0 and now >= phase_end:
                # Load gone: wait until the autoscaler is back at minReplicas and the pods have gone.
                pods = len(cluster.ready_pod_ips())
                if replicas <= args.min_replicas and pods <= args.min_replicas:
                    settled_since = settled_since or now
                    if now - settled_since >= 2:
                        break
                if now - phase_end > args.settle_seconds:
                    print(f"replicas did not come back to {args.min_replicas} within {args.settle_seconds:g}s")
                    unsettled = True
                    break
            stop.wait(max(0.0, args.interval - (time.monotonic() - now)))
    finally:
        stats = load.stop()
    final = cluster.status()
    print(
        f"\nsummary{' (interrupted)' if stop.is_set() else ''}: {time.monotonic() - started:.0f}s; "
        f"load {args.low_rate:g} -> {args.high_rate:g} -> 0 requests/s; "
        f"max ready replicas {max_replicas}, final replicas {final.get('replicas')} "
        f"(ready {final.get('readyReplicas')}); requests sent {stats.sent}, failed {stats.failed}"
    )
    for error, count in stats.errors.most_common(3):
        print(f"  {count} x {error}")
    return 1 if stats.failed or max_replicas <= args.min_replicas or unsettled or stop.is_set() else 0


def stream_one(ip: str, model: str, prompt: int, tokens: int) -> None:
    """One request, its tokens printed as they arrive (with the time since it was sent)."""
    from loadgen.streams import OpenStreams

    done = threading.Event()
    streams = OpenStreams(lambda: [ip], model, rate=0, prompt=prompt, tokens=tokens)
    started = time.monotonic()
    arrived: list[float] = []

    def on_token(at: float) -> None:
        arrived.append(at)
        print(f"  token {len(arrived):>2} at {1000 * (at - started):6.0f} ms", flush=True)

    streams.on_token, streams.on_final = on_token, done.set
    streams.send_one()
    done.wait(timeout=30)
    streams.close()
    if len(arrived) > 1:
        gap_ms = 1000 * (arrived[-1] - arrived[0]) / (len(arrived) - 1)
        print(f"  first token after {1000 * (arrived[0] - started):.0f} ms, then one every {gap_ms:.0f} ms")


def llm(args: argparse.Namespace) -> int:
    from loadgen.streams import OpenStreams

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(args.namespace, args.name)
    print("one answer, streamed:", flush=True)
    stream_one(cluster.ready_pod_ips()[0], args.name, args.prompt, args.tokens)
    md = ["md", args.name, "-n", args.namespace, "-o", "wide"]
    names, _ = printer_columns(*md)
    keep = [n for n in names if n not in ("MODEL", "VERSION", "TARGET-LAT", "P95", "ROLLOUT", "AGE")]
    print(f"\n{'TIME':>5} {'LOAD':>6} {'CLIENT-TTFT':>11} {'CLIENT-ITL':>10} | {table_line(keep, keep)}", flush=True)
    schedule, end = [], time.monotonic()
    for seconds, rate in ((args.low_seconds, args.low_rate), (args.high_seconds, args.high_rate)):
        end += seconds
        schedule.append((end, rate))
    max_ready, unsettled = 0, False
    streams = OpenStreams(cluster.ready_pod_ips, args.name, rate=args.low_rate, prompt=args.prompt, tokens=args.tokens)
    started = time.monotonic()
    with streams:
        while not stop.is_set():
            now = time.monotonic()
            rate = next((r for e, r in schedule if now < e), 0.0)
            streams.rate = rate
            status = cluster.status()
            max_ready = max(max_ready, int(status.get("readyReplicas") or 0))
            names, cells = printer_columns(*md)
            shown = [c for n, c in zip(names, cells, strict=True) if n in keep]
            ttft, itl = streams.p95(since=now - 4)
            ttft_text = "-" if ttft != ttft else f"{ttft:.0f}ms"
            itl_text = "-" if itl != itl else f"{itl:.0f}ms"
            print(
                f"{now - started:4.0f}s {rate:4.0f}/s {ttft_text:>11} {itl_text:>10} | {table_line(keep, shown)}",
                flush=True,
            )
            if rate == 0 and now >= end:
                if int(status.get("replicas") or 0) <= args.min_replicas:
                    break
                if now - end > args.settle_seconds:
                    print(f"replicas did not come back to {args.min_replicas} within {args.settle_seconds:g}s")
                    unsettled = True
                    break
            stop.wait(max(0.0, args.interval - (time.monotonic() - now)))
    final = cluster.status()
    print(
        f"\nsummary{' (interrupted)' if stop.is_set() else ''}: {time.monotonic() - started:.0f}s; load "
        f"{args.low_rate:g} -> {args.high_rate:g} -> 0 streams/s of {args.tokens} tokens; max ready replicas "
        f"{max_ready}, final replicas {final.get('replicas')}; streams {streams.streams}, failed {len(streams.failed)}"
    )
    for error in streams.failed[:3]:
        print(f"  {error}")
    return 1 if streams.failed or max_ready <= args.min_replicas or unsettled or stop.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo_load", description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    sw = actions.add_parser("switch", help="steady load at fixed pod IPs; which version answered, failures")
    sw.add_argument("ips", nargs="+")
    sw.add_argument("--model", required=True)
    sw.add_argument("--rate", type=float, default=10.0, help="requests/s per pod")
    sw.add_argument("--timeout", type=float, default=30.0, help="seconds per request before it counts as failed")
    sw.add_argument("--max-seconds", type=float, default=120.0)
    au = actions.add_parser("autoscale", help="low, high, then no load; the ModelDeployment's columns")
    au.add_argument("--namespace", required=True)
    au.add_argument("--name", required=True, help="ModelDeployment (and model) name")
    au.add_argument("--low-rate", type=float, default=4.0)
    au.add_argument("--low-seconds", type=float, default=10.0)
    au.add_argument("--high-rate", type=float, default=25.0)
    au.add_argument("--high-seconds", type=float, default=45.0)
    au.add_argument("--min-replicas", type=int, default=1)
    au.add_argument("--settle-seconds", type=float, default=120.0, help="most time allowed for the scale-down")
    au.add_argument("--interval", type=float, default=2.0)
    lm = actions.add_parser("llm", help="a streamed answer, then low, high and no streams; md -o wide")
    lm.add_argument("--namespace", required=True)
    lm.add_argument("--name", required=True, help="ModelDeployment (and model) name")
    lm.add_argument("--low-rate", type=float, default=2.0, help="streams started per second")
    lm.add_argument("--low-seconds", type=float, default=15.0)
    lm.add_argument("--high-rate", type=float, default=16.0)
    lm.add_argument("--high-seconds", type=float, default=60.0)
    lm.add_argument("--prompt", type=int, default=32, help="prompt tokens per request")
    lm.add_argument("--tokens", type=int, default=24, help="tokens generated per request")
    lm.add_argument("--min-replicas", type=int, default=1)
    lm.add_argument("--settle-seconds", type=float, default=120.0)
    lm.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    actions_by_name = {"switch": switch, "autoscale": autoscale, "llm": llm}
    return actions_by_name[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
