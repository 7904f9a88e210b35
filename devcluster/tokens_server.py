"""A tritonserver on loopback serving the token generator (model_repo/tokens) with chosen config
parameters: its unit test (tests/unit/test_tokens_model.py) and its calibration bench
(bench/llm_calibrate.py) start it the same way, from the pytriton wheel like the pod runner."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cluster import stop_pid
from .podrunner import TritonInstall

TOKENS_MODEL = Path(__file__).resolve().parents[1] / "model_repo" / "tokens"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def with_parameters(config: str, values: dict[str, str]) -> str:
    """config.pbtxt with these parameters' string values replaced (each must be there once)."""
    for key, value in values.items():
        config, found = re.subn(
            rf'(key: "{key}"\s*value: {{ string_value: )"[^"]*"', rf'\1"{value}"', config, flags=re.S
        )
        if found != 1:
            raise ValueError(f"parameter {key!r} is not in the config once")
    return config


@contextmanager
def tokens_server(root: Path, parameters: dict[str, str], timeout: float = 60.0) -> Iterator[tuple[str, str]]:
    """Serve model_repo/tokens (with `parameters`) from a repository under `root`; yields its gRPC
    address and metrics URL once the model and the metrics port answer; stops it after."""
    repository = root / "repo"
    shutil.copytree(TOKENS_MODEL, repository / "tokens", ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / "tokens" / "config.pbtxt"
    config.write_text(with_parameters(config.read_text(), parameters))
    install = TritonInstall.prepare(root / "install")
    http, grpc, metrics = free_ports(3)
    log_path = root / "triton.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(install.binary),
                f"--model-repository={repository}",
                "--model-control-mode=explicit",
                "--load-model=tokens",
                "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1",
                "--metrics-address=127.0.0.1",
                f"--http-port={http}",
                f"--grpc-port={grpc}",
                f"--metrics-port={metrics}",
                f"--backend-directory={install.backends}",
                f"--cache-directory={install.caches}",
            ],
            env={**os.environ, **install.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/tokens/ready", timeout=1)
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=1)  # starts last
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"tritonserver did not serve tokens:\n{log_path.read_text()}") from None
                    time.sleep(0.2)
            yield f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics"
        finally:
            stop_pid(process.pid)
