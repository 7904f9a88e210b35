"""`python -m devcluster up|down|status|build`: manage the local dev cluster."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from . import versions
from .cluster import DevCluster


def resident_kib(pid: int) -> int:
    """Resident memory of pid and its descendants (the pod runner's Triton servers), in KiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def write_operator_image(cluster: DevCluster, out_dir: Path) -> int:
    """make image: the operator image (operator/Dockerfile's recipe on a Debian base, built
    without Docker) as an OCI archive under out_dir, with how to load or push it."""
    from .images import operator_image

    archive, reference = operator_image(cluster.cache_dir, Path(__file__).resolve().parents[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "tritonop-image.oci.tar"
    shutil.copyfile(archive, target)
    print(f"{target} ({target.stat().st_size / 1e6:.0f} MB): OCI image layout archive of {reference}")
    print(f"  push it:   skopeo copy oci-archive:{target} docker://REGISTRY/tritonop:0.1.0")
    print(f"  or load:   kind load image-archive {target}   |   podman load -i {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devcluster", description="Local Kubernetes with fake GPU nodes and real Triton pods."
    )
    parser.add_argument(
        "command", choices=("up", "down", "status", "build", "node-up", "node-down", "node-build", "image")
    )
    parser.add_argument("--out", type=Path, default=Path("dist"), help="image: where the archive goes")
    parser.add_argument("--gpu-nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpu-nodes", type=int, default=1)
    args = parser.parse_args(argv)
    cluster = DevCluster(gpu_nodes=args.gpu_nodes, gpus_per_node=args.gpus_per_node, cpu_nodes=args.cpu_nodes)
    if args.command == "image":
        return write_operator_image(cluster, args.out)
    if args.command.startswith("node-"):
        from .realnode import RealNode

        node = RealNode(cluster)
        if args.command == "node-build":
            started = time.monotonic()
            node.build()
            print(f"node binaries ready in {time.monotonic() - started:.1f}s under {cluster.cache_dir / 'bin'}")
        elif args.command == "node-up":
            node.up()
            print(f"real node {node.name} is up: node IP {node.node_ip}, pods {node.pod_cidr}, netns {node.netns}")
        else:
            node.down()
        return 0
    if args.command == "build":
        started = time.monotonic()
        cluster.build()
        print(f"binaries ready in {time.monotonic() - started:.1f}s under {cluster.cache_dir / 'bin'}")
    elif args.command == "up":
        cluster.up()
        print(f"export KUBECONFIG={cluster.kubeconfig}")
    elif args.command == "down":
        cluster.down()
        print("dev cluster stopped")
    else:
        state = cluster.state
        if not cluster.is_up() or state is None:
            print("dev cluster is down")
            return 1
        print(f"dev cluster is up at {cluster.server}, kubeconfig {cluster.kubeconfig}")
        print(f"versions: kubernetes {versions.KUBERNETES}, etcd {versions.ETCD}, kwok {versions.KWOK}")
        total = 0
        for name, pid in state.pids.items():
            rss = resident_kib(pid)
            total += rss
            print(f"  {name:<24} pid {pid:<8} {rss / 1024:7.1f} MiB")
        print(f"  {'total':<24} {'':<12} {total / 1024:7.1f} MiB resident")
        from .realnode import RealNode

        node = RealNode(cluster)
        node_state = node.state
        if node_state is not None:
            print(
                f"real node {node_state.name} ({'up' if node.is_up() else 'NOT all up'}): node IP {node.node_ip}, "
                f"pods {node.pod_cidr}, netns {node.netns}, clients' netns {node.client_netns}"
            )
            for name, pid in node_state.pids.items():
                print(f"  {name:<24} pid {pid:<8} {resident_kib(pid) / 1024:7.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
