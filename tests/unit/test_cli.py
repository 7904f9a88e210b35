"""The command line: JSON logs carry the ModelDeployment on every line about one."""

from __future__ import annotations

import io
import json
import logging

from tritonop.cli import JsonFormatter, build_parser


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
