"""canary_repository on one real tritonserver (no cluster): each version serves with its own
batch time, and v4's failures are counted by Triton per version, as the canary judgement reads them."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import free_port, stop_pid, wait_until
from devcluster.podrunner import TritonInstall

from .helpers import canary_repository, scrape_metrics

pytestmark = pytest.mark.integration
BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


@pytest.fixture
def triton(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """tritonserver on 127.0.0.1 serving all four versions of the default canary model:
    (http port, metrics port)."""
    root = canary_repository(tmp_path / "repo")
    config = root / "canary" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { all {} }\n")
    install = TritonInstall.prepare(tmp_path / "triton")
    http, metrics = free_port(), free_port()
    argv = [
        str(install.binary),
        f"--model-repository={root}",
        f"--backend-directory={install.backends}",
        f"--cache-directory={install.caches}",
        *("--http-address=127.0.0.1", f"--http-port={http}", "--allow-grpc=false"),
        *("--metrics-address=127.0.0.1", f"--metrics-port={metrics}"),
    ]
    with open(tmp_path / "triton.log", "w") as log:
        server = subprocess.Popen(
            argv, env={**os.environ, **install.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        ready = f"http://127.0.0.1:{http}/v2/models/canary/versions/4/ready"
        wait_until("canary v4 ready", lambda: urllib.request.urlopen(ready, timeout=1).status == 200, timeout=60)
        yield http, metrics
    finally:
        stop_pid(server.pid)
        server.wait(timeout=10)


def infer(port: int, version: int) -> int | str:
    """The VERSION that answered, or Triton's error message."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/canary/versions/{version}/infer", data=BODY.encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(next(o["data"][0] for o in json.load(response)["outputs"] if o["name"] == "VERSION"))
    except urllib.error.HTTPError as error:
        return str(json.load(error)["error"])


def per_version(metrics: dict[str, float], name: str, version: int) -> float:
    """Sum of a counter's series for the canary model's version (over `reason` for failures)."""
    return sum(
        value
        for key, value in metrics.items()
        if key.startswith(name + "{") and 'model="canary"' in key and f'version="{version}"' in key
    )


def test_versions_differ_in_latency_and_failures_as_triton_counts_them(triton: tuple[int, int]) -> None:
    http, metrics_port = triton
    answers = {version: [infer(http, version) for _ in range(10)] for version in (1, 2, 3, 4)}
    for version in (1, 2, 3):
        assert answers[version] == [version] * 10
    # Sequential requests are batches of one: exactly the 5th and the 10th fail.
    assert [answer == 4 for answer in answers[4]] == [True] * 4 + [False] + [True] * 4 + [False]
    assert "version 4 fails batch #5 (1 requests" in str(answers[4][4])

    metrics = scrape_metrics(metrics_port)
    average_ms = {
        version: per_version(metrics, "nv_inference_request_duration_us", version)
        / per_version(metrics, "nv_inference_request_success", version)
        / 1000
        for version in (1, 2, 3, 4)
    }
    assert all(20 <= average_ms[version] < 80 for version in (1, 2, 4)), average_ms
    assert average_ms[3] >= 120 and average_ms[3] > average_ms[1] + 80, average_ms
    assert [per_version(metrics, "nv_inference_request_failure", version) for version in (1, 2, 3, 4)] == [0, 0, 0, 2]
    assert per_version(metrics, "nv_inference_request_success", 4) == 8
