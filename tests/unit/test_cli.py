"""The command line: JSON logs carry the ModelDeployment on every line about one."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from tritonop.cli import JsonFormatter, build_parser, kopf_identity
from tritonop.leader import ElectionConfig


def test_json_logs_name_the_model_deployment() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tritonop.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logging.LoggerAdapter(logger, {"namespace": "vision", "model_deployment": "resnet50"}).info("Scaled %d -> %d", 2, 4)
    logger.info("no object here")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "Scaled 2 -> 4"
    assert (first["namespace"], first["modelDeployment"], first["level"]) == ("vision", "resnet50", "INFO")
    assert "namespace" not in second


def test_run_options() -> None:
    args = build_parser().parse_args(["run", "-n", "a", "-n", "b", "--log-format", "json", "--resync-seconds", "10"])
    assert (args.namespace, args.log_format, args.resync_seconds) == (["a", "b"], "json", 10.0)


def test_leader_election_timings_must_nest() -> None:
    """retry period < renew deadline < lease duration, refused before anything starts."""
    result = subprocess.run(
        [sys.executable, "-m", "tritonop", "run", "--leader-elect", "--lease-duration=5", "--renew-deadline=8"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "retry period < renew deadline < lease duration" in result.stderr
    with pytest.raises(ValueError, match="got 2 / 10 / 10"):
        ElectionConfig("ns", lease_duration=10, renew_deadline=10, retry_period=2)


def test_kopf_identity_needs_no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    # The image runs as uid 1000 with no /etc/passwd entry: kopf's default identity
    # (getpass.getuser) raised KeyError there and every operator pod crashed at start.
    import pwd

    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "tritonop-system")
    monkeypatch.setenv("POD_NAME", "tritonop-5d9c-abcde")
    assert kopf_identity() == "tritonop-5d9c-abcde"
    monkeypatch.delenv("POD_NAME")
    assert kopf_identity().startswith("tritonop@")
