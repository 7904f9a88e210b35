"""devcluster.cluster.wait_until: retries through errors, but a timeout says what the check raised."""

from __future__ import annotations

import pytest

from devcluster.cluster import wait_until


def test_returns_as_soon_as_the_check_passes_even_after_errors() -> None:
    calls: list[int] = []

    def check() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("not yet")
        return True

    wait_until("the third call", check, timeout=5, interval=0.001)
    assert len(calls) == 3


def test_a_check_that_keeps_raising_times_out_naming_the_error() -> None:
    def broken() -> bool:
        return bool({}["x"])

    with pytest.raises(TimeoutError) as caught:
        wait_until("the broken thing", broken, timeout=0.05, interval=0.001)
    message = str(caught.value)
    assert "waiting for the broken thing" in message
    assert "KeyError('x')" in message
    assert isinstance(caught.value.__cause__, KeyError) and caught.value.__cause__.args == ("x",)


def test_an_earlier_error_is_reported_when_the_last_check_returned_false() -> None:
    calls: list[int] = []

    def check() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first call")
        return False

    with pytest.raises(TimeoutError, match=r"an earlier check .* raised ValueError\('first call'\)"):
        wait_until("something", check, timeout=0.05, interval=0.001)


def test_a_plain_timeout_names_only_what_was_waited_for() -> None:
    with pytest.raises(TimeoutError) as caught:
        wait_until("never", lambda: False, timeout=0.02, interval=0.001)
    assert str(caught.value) == "timed out after 0s waiting for never"
    assert caught.value.__cause__ is None
