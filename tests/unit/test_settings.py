"""`tritonop run` flags become one Settings object; the operator reads nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tritonop.cli import build_parser, settings_from
from tritonop.leader import ElectionConfig
from tritonop.settings import Settings

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "tritonop"


def test_flags_become_settings() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--kubeconfig=/k",
            "--metrics-port=0",
            "--workers=3",
            "--resync-seconds=7",
            "--relist-seconds=9",
            "--autoscale-period-seconds=0.5",
            "--autoscale-report-seconds=2",
            "--leader-elect",
            "--leader-election-namespace=ops",
            "--lease-duration=6",
            "--renew-deadline=4",
            "--retry-period=1",
        ]
    )
    assert settings_from(args) == Settings(
        kubeconfig="/k",
        metrics_port=0,
        workers=3,
        resync_seconds=7,
        relist_seconds=9,
        autoscale_period_seconds=0.5,
        autoscale_report_seconds=2,
        in_cluster=False,
        election=ElectionConfig("ops", "tritonop-leader", "", 6, 4, 1),
    )


def test_defaults_match_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert settings_from(build_parser().parse_args(["run"])) == Settings()
    monkeypatch.setenv("KUBECONFIG", "/from/env")
    assert settings_from(build_parser().parse_args(["run"])).kubeconfig == "/from/env"


def test_only_the_cli_reads_the_environment() -> None:
    """No operator module reads os.environ (or getenv): settings come through kopf's memo."""
    readers = []
    for path in OPERATOR.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                readers.append(f"{path.relative_to(OPERATOR)}:{node.lineno}")
    assert readers == []
