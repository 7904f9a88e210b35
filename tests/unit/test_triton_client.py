"""How the Triton client reports a server that is not there (a pod going away, a restart)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tritonop.triton import ServerUnreachable, TritonError, TritonServer


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens


def test_an_absent_server_is_not_live_and_its_calls_raise_unreachable() -> None:
    server = TritonServer("127.0.0.1", "key", port=closed_port())

    async def calls() -> None:
        assert await server.is_live() is False
        for call in (server.ready_versions("m"), server.model_config("m"), server.load("m", None)):
            with pytest.raises(ServerUnreachable) as raised:
                await call
            assert isinstance(raised.value, TritonError)  # callers that only know TritonError still cope

    asyncio.run(calls())
