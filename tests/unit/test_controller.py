"""The work queue: one reconcile per object at a time, and no reconcile at all while standing by."""

from __future__ import annotations

import asyncio
from typing import Any

from tritonop.controller import Controller, Next


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

        async def reconcile(obj: dict[str, Any]) -> Next:
            calls.append(obj["metadata"]["name"])
            return Next()
            if len(calls) == 1:
                await release.wait()
            return Next()

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

        async def reconcile(obj: dict[str, Any]) -> Next:
            calls.append(obj["metadata"]["name"])
            return Next()

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

        async def reconcile(obj: dict[str, Any]) -> Next:
            started.append(obj["metadata"]["name"])
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            finished.append(obj["metadata"]["name"])
            return Next()

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
        async def reconcile(obj: dict[str, Any]) -> Next:
            return Next()

        controller = Controller(reconcile, workers=2, resync_seconds=3600)
        controller.start()
        await controller.stop()
        controller.pause()
        await asyncio.sleep(0)
        return [task for task in controller.worker_tasks if not task.done()]

    assert asyncio.run(scenario()) == []


def test_quiet_objects_are_evaluated_by_the_ticker_until_an_evaluation_or_an_event_asks_for_more() -> None:
    async def scenario() -> tuple[list[str], list[str], dict[str, int]]:
        log: list[str] = []
        evaluations: dict[str, int] = {"a": 0, "b": 0}

        async def reconcile(obj: dict[str, Any]) -> Next:
            name = obj["metadata"]["name"]
            log.append(f"reconcile {name}")
            return Next(0.01, light=True)  # only the autoscaler has work

        async def evaluate(obj: dict[str, Any]) -> Next:
            name = obj["metadata"]["name"]
            evaluations[name] += 1
            log.append(f"evaluate {name}")
            if name == "a" and evaluations["a"] == 3:
                return Next(full_now=True)  # a decision to apply: a full reconcile now
            return Next(0.01)

        controller = Controller(reconcile, workers=2, resync_seconds=3600, evaluate=evaluate, tick_seconds=0.02)
        controller.start()
        controller.update(body("a"))
        controller.update(body("b"))
        await until(lambda: evaluations["a"] >= 5 and evaluations["b"] >= 5)
        controller.update(body("b"))  # a watch event: a full reconcile, not an evaluation
        await until(lambda: log.count("reconcile b") == 2)
        await until(lambda: evaluations["b"] >= 7)
        in_queue = list(controller.light)
        controller.forget(("ns", "a"))
        await controller.stop()
        return log, in_queue, {"a": log.count("reconcile a"), "b": log.count("reconcile b")}

    log, light, full = asyncio.run(scenario())
    a_log = [entry for entry in log if entry.endswith(" a")]
    # a: reconciled, evaluated three times (the third asked for more), reconciled, evaluated again.
    assert a_log[:5] == ["reconcile a", "evaluate a", "evaluate a", "evaluate a", "reconcile a"], a_log
    assert set(a_log[5:]) == {"evaluate a"}
    assert full["b"] == 2  # the event, not the evaluations, brought b's second reconcile
    assert sorted(light) == [("ns", "a"), ("ns", "b")]


def test_without_an_evaluator_a_light_requeue_is_a_plain_one() -> None:
    async def scenario() -> int:
        calls: list[int] = []

        async def reconcile(obj: dict[str, Any]) -> Next:
            calls.append(1)
            return Next(0.01, light=True)

        controller = Controller(reconcile, workers=1, resync_seconds=3600)
        controller.start()
        controller.update(body("a"))
        await until(lambda: len(calls) >= 3)
        await controller.stop()
        return len(controller.light)

    assert asyncio.run(scenario()) == 0


def test_a_slow_light_evaluation_delays_no_other_and_keeps_its_place() -> None:
    async def scenario() -> tuple[int, int, bool]:
        evaluations = {"a": 0, "b": 0}
        slow = asyncio.Event()

        async def reconcile(obj: dict[str, Any]) -> Next:
            return Next(0.01, light=True)

        async def evaluate(obj: dict[str, Any]) -> Next:
            name = obj["metadata"]["name"]
            evaluations[name] += 1
            if name == "a" and evaluations["a"] == 1:
                await slow.wait()  # a scrape waiting for its timeout
            return Next(0.01)

        controller = Controller(reconcile, workers=2, resync_seconds=3600, evaluate=evaluate, tick_seconds=0.02)
        controller.start()
        controller.update(body("a"))
        controller.update(body("b"))
        await until(lambda: evaluations["b"] >= 10)
        a_while_stuck = evaluations["a"]  # ticks skipped a while its evaluation ran
        slow.set()
        await until(lambda: evaluations["a"] >= 3)
        still_light = ("ns", "a") in controller.light
        await controller.stop()
        return a_while_stuck, evaluations["b"], still_light

    a_while_stuck, b_count, still_light = asyncio.run(scenario())
    assert a_while_stuck == 1 and b_count >= 10 and still_light
