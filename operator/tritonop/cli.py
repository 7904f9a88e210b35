"""The `tritonop` command line: `tritonop run` starts the operator; `tritonop crd` prints the CRD."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tritonop import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonop",
        description="Serve NVIDIA Triton model versions on Kubernetes from ModelDeployment resources.",
    )
    parser.add_argument("--version", action="version", version=f"tritonop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the operator (kopf underneath)")
    run.add_argument("--kubeconfig", help="kubeconfig to use (default: in-cluster, then $KUBECONFIG)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument(
        "--liveness-port", type=int, default=8081, help="port of /healthz for the liveness probe (0 disables)"
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0 disables)")
    run.add_argument("--resync-seconds", type=float, default=30.0, help="periodic reconcile of every object")
    run.add_argument("--workers", type=int, default=16, help="ModelDeployments reconciled in parallel")
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate with other operator processes through this kopf peering object (default: standalone)",
    )
    run.add_argument("-v", "--verbose", action="store_true")

    commands.add_parser("crd", help="print the ModelDeployment CRD (generated from the API models)")
    return parser


def run_operator(args: argparse.Namespace) -> None:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    os.environ["TRITONOP_METRICS_PORT"] = str(args.metrics_port)
    os.environ["TRITONOP_RESYNC_SECONDS"] = str(args.resync_seconds)
    os.environ["TRITONOP_WORKERS"] = str(args.workers)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    import kopf

    import tritonop.handlers  # noqa: F401 - registers the handlers

    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        run_operator(args)
    elif args.command == "crd":
        from tritonop.api.crd import render_yaml

        sys.stdout.write(render_yaml())
    else:
        parser.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
