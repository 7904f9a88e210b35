"""loadgen.streams.OpenStreams: a stream that ends fails only the requests still open on it."""

from __future__ import annotations

from typing import Any

from loadgen.streams import OpenStreams


class Ended(Exception):
    def __str__(self) -> str:
        return "[StatusCode.UNAVAILABLE] Stream removed (Socket closed)"


def test_an_idle_stream_closed_by_a_leaving_server_is_noted_not_failed() -> None:
    streams = OpenStreams(lambda: [], "tokens", rate=0)
    gone: Any = object()
    streams.clients["127.0.0.5"] = gone
    streams._received("127.0.0.5", gone, None, Ended())
    assert streams.failed == [] and streams.closed == [
        "127.0.0.5: [StatusCode.UNAVAILABLE] Stream removed (Socket closed)"
    ]
    assert "127.0.0.5" not in streams.clients and streams.ended == [gone]  # the next request reconnects


def test_requests_open_on_a_stream_that_ends_fail() -> None:
    streams = OpenStreams(lambda: [], "tokens", rate=0)
    gone: Any = object()
    streams.clients["127.0.0.5"] = gone
    streams.sent = {"1": 0.0, "2": 0.0, "3": 0.0}
    streams.sent_to = {"1": "127.0.0.5", "2": "127.0.0.6", "3": "127.0.0.5"}
    streams._received("127.0.0.5", gone, None, Ended())
    assert streams.failed == ["127.0.0.5: [StatusCode.UNAVAILABLE] Stream removed (Socket closed) (2 request(s) open)"]
    assert streams.closed == [] and streams.sent == {"2": 0.0}  # the other pod's request is still open
