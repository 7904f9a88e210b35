"""Monitoring manifests: every PromQL expression (alerts and dashboard panels) parses, checked by
Prometheus's own promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"


def promtool_check(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)


def test_prometheus_rule_alerts_parse(tmp_path: Path) -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    result = promtool_check({"groups": rule["spec"]["groups"]}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert "ModelLatencyAboveTarget" in alerts


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 8
    # Grafana variables become plain regexes for the parser.
    rules = [
        {"record": f"dashboard:check{i}", "expr": expr.replace("$namespace", ".*")}
        for i, expr in enumerate(expressions)
    ]
    result = promtool_check({"groups": [{"name": "dashboard", "rules": rules}]}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("latency", "target", "replicas", "queue", "errors"):
        assert topic in titles


def test_pod_monitor_selects_the_operators_triton_pods() -> None:
    monitor = next(yaml.safe_load_all((MONITORING / "podmonitor.yaml").read_text()))
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels == {"app.kubernetes.io/managed-by": "tritonop", "app.kubernetes.io/name": "tritonserver"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
