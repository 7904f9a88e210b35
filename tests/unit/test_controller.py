"""The work queue: one reconcile per object at a time, and no reconcile at all while standing by."""

from __future__ import annotations

import asyncio
from typing import Any

from tritonop.controller import Controller


def body(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name}}


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_a_burst_of_events_while_reconciling_becomes_one_more_reconcile() -> None:
    async def scenario() -> list[str]:
        calls: list[str] = []
        release = asyncio.Event()

        async def reconcile(obj: dict[str, Any]) -> None:
            calls.append(obj["metadata"]["name"])
            if len(calls) == 1:
                await release.wait()

        controller = Controller(reconcile, workers=4, resync_seconds=3600)
        controller.start()
        controller.update(body("a"))
        await until(lambda: len(calls) == 1)
        for _ in range(10):
            controller.update(body("a"))
        release.set()
        await until(lambda: len(calls) == 2)
        await asyncio.sleep(0.05)  # room for a wrong third reconcile to show up
        await controller.stop()
        return calls

    assert asyncio.run(scenario()) == ["a", "a"]


def test_a_standby_reconciles_nothing_until_it_leads_then_everything() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        calls: list[str] = []

        async def reconcile(obj: dict[str, Any]) -> None:
            calls.append(obj["metadata"]["name"])

        controller = Controller(reconcile, workers=2, resync_seconds=0.01)
        controller.start(leading=False)
        for name in ("a", "b", "c"):
            controller.update(body(name))
        await asyncio.sleep(0.1)  # several resync periods: still nothing may run
        standby_calls = list(calls)
        controller.resume()
        await until(lambda: {"a", "b", "c"} <= set(calls))
        await controller.stop()
        return standby_calls, calls

    standby_calls, calls = asyncio.run(scenario())
    assert standby_calls == []
    assert {"a", "b", "c"} <= set(calls)


def test_losing_leadership_cancels_reconciles_in_flight_and_runs_no_new_ones() -> None:
    async def scenario() -> tuple[bool, int, int]:
        started: list[str] = []
        finished: list[str] = []
        cancelled = asyncio.Event()

        async def reconcile(obj: dict[str, Any]) -> None:
            started.append(obj["metadata"]["name"])
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            finished.append(obj["metadata"]["name"])

        controller = Controller(reconcile, workers=2, resync_seconds=0.01)
        controller.start()
        controller.update(body("a"))
        await until(lambda: len(started) == 1)
        controller.pause()
        await until(cancelled.is_set)
        started_when_paused = len(started)
        await asyncio.sleep(0.1)  # resyncs keep queueing; a standby must not act on them
        after = len(started)
        controller.resume()
        await until(lambda: len(started) == after + 1)
        await controller.stop()
        return cancelled.is_set() and not finished, started_when_paused, after

    cancelled_cleanly, started_when_paused, after = asyncio.run(scenario())
    assert cancelled_cleanly
    assert started_when_paused == after == 1


def test_pausing_after_stop_starts_no_workers() -> None:
    """On shutdown the Lease is released after the controller stopped; that must not revive it."""

    async def scenario() -> list[asyncio.Task[None]]:
        async def reconcile(obj: dict[str, Any]) -> None:
            return None

        controller = Controller(reconcile, workers=2, resync_seconds=3600)
        controller.start()
        await controller.stop()
        controller.pause()
        await asyncio.sleep(0)
        return [task for task in controller.worker_tasks if not task.done()]

    assert asyncio.run(scenario()) == []
