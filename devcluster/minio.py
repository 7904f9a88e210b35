"""A real MinIO server on loopback (built by `make minio`), for the S3 tests and benches: started
in its own process group, ready when its health endpoint answers, stopped by pid."""

from __future__ import annotations

import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from devcluster import versions
from devcluster.cluster import free_port, stop_pid, wait_until


def minio_binary(cache_dir: Path) -> Path:
    return cache_dir / "bin" / f"minio-{versions.MINIO}" / "minio"


@dataclass
class MinioServer:
    endpoint: str  # host:port
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    access_key: str
    secret_key: str

    def client(self, secret_key: str | None = None) -> Any:
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=secret_key or self.secret_key, secure=False)

    def stop(self) -> None:
        stop_pid(self.process.pid)
        self.log.close()


def start_minio(
    binary: Path, data: Path, access_key: str, secret_key: str, bucket: str, public_metrics: bool = False
) -> MinioServer:
    """MinIO serving `data` (its log beside it), with `bucket` created; public_metrics: its
    Prometheus endpoint readable without a token (a bench reads its byte counters)."""
    port, console = free_port(), free_port()
    log = open(data.parent / f"{data.name}.log", "wb")  # noqa: SIM115 (the server outlives this call)
    env = {"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key, "HOME": str(data.parent)}
    if public_metrics:
        env["MINIO_PROMETHEUS_AUTH_TYPE"] = "public"
    process = subprocess.Popen(
        [str(binary), "server", str(data), "--address", f"127.0.0.1:{port}", "--console-address",
         f"127.0.0.1:{console}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stop_pid stops it and anything it starts
    )  # fmt: skip
    server = MinioServer(f"127.0.0.1:{port}", process, log, access_key, secret_key)

    def ready() -> bool:
        assert process.poll() is None, f"MinIO exited with {process.returncode}; see {log.name}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/minio/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until("MinIO ready", ready, timeout=60)
        server.client().make_bucket(bucket)
    except BaseException:  # the server must not outlive a failed start
        server.stop()
        raise
    return server
