"""The `tritonop` command line."""

from __future__ import annotations

import argparse
import sys

from tritonop import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonop",
        description="Serve NVIDIA Triton model versions on Kubernetes from ModelDeployment resources.",
    )
    parser.add_argument("--version", action="version", version=f"tritonop {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
