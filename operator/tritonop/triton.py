"""The only module that calls Triton: the model control API and health, per pod, through
`tritonclient.http.aio` (asyncio; the plain http client is gevent-based and must not be shared
across threads)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import tritonclient.grpc as triton_grpc
import tritonclient.http.aio as triton_http
from prometheus_client import Histogram
from tritonclient.utils import InferenceServerException

from tritonop.names import CONTROL_KEY_HEADER, GRPC_PORT, HTTP_PORT, METRICS_PORT
from tritonop.promtext import samples

STATUS_TIMEOUT_SECONDS = 5.0
# A large model can take many minutes to load; the caller decides how long to wait overall.
LOAD_TIMEOUT_SECONDS = 900.0
# Threads for loads and unloads in flight at once (the operator's default executor).
CONTROL_THREADS = 64


TRITON_CALLS = Histogram(
    "tritonop_triton_request_duration_seconds",
    "Calls the operator made to Triton's HTTP and gRPC APIs, by operation and outcome.",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


# gRPC statuses that mean no server answered (tritonclient.grpc puts the code in status()).
GRPC_UNREACHABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"})


class TritonError(Exception):
    """Triton refused or failed a request; the message is Triton's own."""


class ServerUnreachable(TritonError):
    """No answer at all (the pod is going away, or its server restarting): not the model's fault."""


@contextlib.asynccontextmanager
async def calling(operation: str) -> AsyncIterator[None]:
    """Time one call, and turn every way it can fail into a TritonError."""
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except InferenceServerException as error:
        # Triton also answers a missing restricted-protocol key with UNAVAILABLE: a refusal.
        if error.status() in GRPC_UNREACHABLE and "restricted" not in (error.message() or ""):
            outcome = "unreachable"
            raise ServerUnreachable(f"{operation}: {error.status()}: {error.message()}") from error
        raise TritonError(error.message()) from error
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        outcome = "unreachable"
        raise ServerUnreachable(f"{operation}: {type(error).__name__}: {error}") from error
    finally:
        TRITON_CALLS.labels(operation, outcome).observe(time.monotonic() - started)


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str


@dataclass(frozen=True)
class RequestActivity:
    """A model's requests on one server: queued now, and finished (succeeded or failed) so far."""

    pending: float
    finished: float


class TritonApi(Protocol):
    """The calls serving makes on one server: what TritonServer offers (tests give a fake)."""

    async def is_live(self) -> bool: ...

    async def model_versions(self, model: str) -> list[VersionState]: ...

    async def ready_versions(self, model: str) -> list[int]: ...

    async def model_config(self, model: str) -> dict[str, Any]: ...

    async def load(self, model: str, config_json: str | None) -> None: ...

    async def unload(self, model: str) -> None: ...

    async def request_activity(self, model: str) -> RequestActivity: ...


class TritonServer:
    """One tritonserver, at a pod IP, with the deployment's model-control key."""

    def __init__(self, host: str, control_key: str, port: int = HTTP_PORT, grpc_port: int = GRPC_PORT) -> None:
        self.url = f"{host}:{port}"
        self.grpc_url = f"{host}:{grpc_port}"
        self.headers = {CONTROL_KEY_HEADER: control_key}
        # Triton reads a restricted gRPC protocol's key from this metadata name.
        self.grpc_headers = {f"triton-grpc-protocol-{CONTROL_KEY_HEADER}": control_key}

    async def _control(self, operation: str, model: str, config_json: str | None = None) -> None:
        """Loads and unloads go over gRPC: while Triton 2.51 serves a load requested over HTTP,
        the inference requests of HTTP connections already open wait until the load ends (a
        model that loads for minutes would hold them that long; bench/switch_loads.py). The
        blocking client runs in a thread (the loop's default executor, CONTROL_THREADS):
        tritonclient.grpc.aio passes its headers as a dict view, which grpc.aio (not a
        Sequence) drops, so Triton's restricted-protocol check never sees the key."""

        def call() -> None:
            client = triton_grpc.InferenceServerClient(self.grpc_url)
            try:
                if operation == "load":
                    client.load_model(
                        model, headers=self.grpc_headers, config=config_json, client_timeout=LOAD_TIMEOUT_SECONDS
                    )
                else:
                    client.unload_model(model, headers=self.grpc_headers, client_timeout=LOAD_TIMEOUT_SECONDS)
            finally:
                client.close()

        await asyncio.to_thread(call)

    def _client(self, timeout: float = STATUS_TIMEOUT_SECONDS) -> triton_http.InferenceServerClient:
        return triton_http.InferenceServerClient(self.url, conn_timeout=timeout)

    async def is_live(self) -> bool:
        try:
            async with calling("live"), self._client() as client:
                return bool(await client.is_server_live())
        except TritonError:  # unreachable or not yet listening: not live
            return False

    async def model_versions(self, model: str) -> list[VersionState]:
        """Versions of `model` Triton knows about, with their states (repository index)."""
        async with calling("index"), self._client() as client:
            index = await client.get_model_repository_index(headers=self.headers)
        states = []
        for entry in index:
            if entry.get("name") == model and entry.get("version"):
                states.append(VersionState(int(entry["version"]), entry.get("state", ""), entry.get("reason", "")))
        return sorted(states, key=lambda s: s.version)

    async def ready_versions(self, model: str) -> list[int]:
        return [s.version for s in await self.model_versions(model) if s.state == "READY"]

    async def model_config(self, model: str) -> dict[str, Any]:
        async with calling("config"), self._client() as client:
            return dict(await client.get_model_config(model))

    async def load(self, model: str, config_json: str | None) -> None:
        """Load (or reload with a new config) and wait until Triton answers; raises Triton's error."""
        async with calling("load"):
            await self._control("load", model, config_json)

    async def metrics_text(self) -> str:
        """The server's Prometheus metrics page (per-version counters for a canary's analysis)."""
        host = self.url.rsplit(":", 1)[0]
        async with (
            calling("metrics"),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_SECONDS)) as session,
            session.get(f"http://{host}:{METRICS_PORT}/metrics") as response,
        ):
            response.raise_for_status()
            return await response.text()

    async def request_activity(self, model: str) -> RequestActivity:
        """`model`'s requests queued now and finished so far, all versions (one metrics page)."""
        text = await self.metrics_text()
        found = samples(
            text, ["nv_inference_pending_request_count", "nv_inference_request_success", "nv_inference_request_failure"]
        )
        pending = finished = 0.0
        for name, labels, value in found:
            if labels.get("model") == model:
                if name == "nv_inference_pending_request_count":
                    pending += value
                else:
                    finished += value
        return RequestActivity(pending=pending, finished=finished)

    async def unload(self, model: str) -> None:
        async with calling("unload"):
            await self._control("unload", model)
