"""A small work queue in front of the reconciler (controller-runtime style, on asyncio).

kopf delivers watch events; the queue turns them into at most one reconcile per object at a
time, with a few workers in parallel, periodic resyncs, requeue-after and error back-off. A
burst of events for one object while it is being reconciled becomes one more reconcile.

Light evaluations: a reconcile that answers Next(after, light=True) has nothing to do but the
autoscaler's next evaluation. Those keys skip the queue: one ticker, once per tick, starts
`evaluate` for every such key that is due (no timer, queue hop or worker per object: at
hundreds of idle autoscaled objects, that overhead was most of the operator's idle CPU). An
evaluation that finds more to do answers Next(full_now=True), and the key goes to the queue for a
full reconcile.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from tritonop.k8s import KubeError

LOG = logging.getLogger("tritonop.controller")
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Next:
    """What a reconcile or a light evaluation answers: when to look again, and how."""

    after: float | None = None  # seconds; None: only on watch events and the resync
    light: bool = False  # only the autoscaler's evaluation is due then (the ticker runs it)
    full_now: bool = False  # a light evaluation found more to do: a full reconcile now


# A reconcile (full, or a light evaluation) of one object's latest body.
ReconcileFn = Callable[[dict[str, Any]], Awaitable[Next]]
EvaluateFn = ReconcileFn

RECONCILES = Counter("tritonop_reconciles_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram("tritonop_reconcile_duration_seconds", "Time one reconcile (or light evaluation) took.")
MANAGED = Gauge("tritonop_modeldeployments", "ModelDeployments the operator manages.")
RECONCILES_BY_RESULT = {result: RECONCILES.labels(result) for result in ("success", "conflict", "error")}
MAX_BACKOFF_SECONDS = 60.0


def loop_time() -> float:
    return asyncio.get_running_loop().time()


class WorkQueue:
    """client-go's workqueue, reduced: a key waits in the queue at most once, one worker at a time
    processes it (a key added while being processed is marked dirty and queued again when done),
    and a key can be added after a delay (the earliest due time wins)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.active: set[Key] = set()
        self.dirty: set[Key] = set()
        self.delayed: dict[Key, asyncio.TimerHandle] = {}

    def entries(self) -> dict[str, int]:
        return {
            "controller_delayed": len(self.delayed),
            "controller_queued": len(self.queued),
            "controller_dirty": len(self.dirty),
        }

    def add(self, key: Key, delay: float = 0.0) -> None:
        if delay > 0:
            existing = self.delayed.get(key)
            due = loop_time() + delay
            if existing is not None and existing.when() <= due:
                return
            if existing is not None:
                existing.cancel()
            self.delayed[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)
            return
        if key in self.active:
            self.dirty.add(key)
        elif key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def _fire(self, key: Key) -> None:
        self.delayed.pop(key, None)
        self.add(key)

    async def get(self) -> Key:
        key = await self.queue.get()
        self.queued.discard(key)
        return key

    def begin(self, key: Key) -> bool:
        """Take the key for processing; False (and dirty) when a worker has it already."""
        if key in self.active:
            self.dirty.add(key)
            return False
        self.active.add(key)
        return True

    def done(self, key: Key, again: bool = False) -> bool:
        """Processing ended; True when the key must be processed again (it went dirty meanwhile,
        or `again`)."""
        self.active.discard(key)
        redo = key in self.dirty or again
        self.dirty.discard(key)
        return redo

    def busy(self, key: Key) -> bool:
        """Queued, being processed or waiting for its delay."""
        return key in self.active or key in self.queued or key in self.delayed

    def forget(self, key: Key) -> None:
        handle = self.delayed.pop(key, None)
        if handle is not None:
            handle.cancel()

    def stop(self) -> None:
        for handle in self.delayed.values():
            handle.cancel()


class Controller:
    def __init__(
        self,
        reconcile: ReconcileFn,
        workers: int = 8,
        resync_seconds: float = 30.0,
        evaluate: EvaluateFn | None = None,
        tick_seconds: float = 1.0,
    ) -> None:
        self.reconcile = reconcile
        self.evaluate = evaluate
        self.tick_seconds = tick_seconds
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.light: dict[Key, float] = {}  # key -> loop time its light evaluation is due
        self.evaluating: set[Key] = set()  # light evaluations under way
        self.evaluations: set[asyncio.Task[None]] = set()
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.work = WorkQueue()
        self.failures: dict[Key, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.worker_tasks: list[asyncio.Task[None]] = []
        # Workers reconcile only while this is set: always without leader election, only while
        # holding the Lease with it (a standby keeps its watches and queue warm, and writes nothing).
        self.leading = asyncio.Event()
        self.stopped = False

    def entries(self) -> dict[str, int]:
        """Sizes of the queue's per-object maps (the soak benchmark watches them)."""
        return {
            "controller_bodies": len(self.bodies),
            "controller_failures": len(self.failures),
            **self.work.entries(),
            "controller_light": len(self.light),
        }

    def start(self, leading: bool = True) -> None:
        if leading:
            self.leading.set()
        self._start_workers()
        self.tasks = [asyncio.create_task(self._resync(), name="resync")]
        if self.evaluate is not None:
            self.tasks.append(asyncio.create_task(self._tick(), name="light-evaluations"))

    def _start_workers(self) -> None:
        self.worker_tasks = [asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.workers)]

    def resume(self) -> None:
        """Start reconciling (this process became the leader): everything known, right away."""
        self.leading.set()
        for key in list(self.bodies):
            self.enqueue(key)

    def pause(self) -> None:
        """Stop reconciling now (leadership lost): reconciles in flight are cancelled, not finished.
        Reconciles are idempotent, so the next leader redoes whatever was cut short."""
        self.leading.clear()
        for task in self.worker_tasks:
            task.cancel()
        if not self.stopped:  # shutting down (the Lease is released after stop): no new workers
            self._start_workers()

    async def stop(self) -> None:
        self.stopped = True
        tasks = self.tasks + self.worker_tasks + list(self.evaluations)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.work.stop()

    # -- inputs from kopf's watches ---------------------------------------------------------
    def update(self, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.bodies[key] = copy.deepcopy(dict(body))
        MANAGED.set(len(self.bodies))
        self.enqueue(key)

    def forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self.failures.pop(key, None)
        self.light.pop(key, None)
        self.work.forget(key)
        MANAGED.set(len(self.bodies))

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        if key not in self.bodies:
            return
        self.light.pop(key, None)  # a full reconcile decides what comes next
        self.work.add(key, delay)

    # -- workers ----------------------------------------------------------------------------
    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            for key in list(self.bodies):
                self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            await self.leading.wait()
            key = await self.work.get()
            if not self.leading.is_set():
                self.enqueue(key)  # leadership went while we waited: keep the key for later
                continue
            body = self.bodies.get(key)
            if body is None or not self.work.begin(key):
                continue
            started = time.monotonic()
            try:
                after = await self.reconcile(body)
                self.failures.pop(key, None)
                RECONCILES_BY_RESULT["success"].inc()
                if after.light and after.after is not None and self.evaluate is not None:
                    self.light[key] = loop_time() + after.after
                elif after.after is not None:
                    self.enqueue(key, after.after)
            except asyncio.CancelledError:
                raise
            except KubeError as error:
                RECONCILES_BY_RESULT["conflict" if error.status == 409 else "error"].inc()
                self._retry(key, error, conflict=error.status == 409)
            except Exception as error:
                RECONCILES_BY_RESULT["error"].inc()
                self._retry(key, error)
            finally:
                RECONCILE_SECONDS.observe(time.monotonic() - started)
                if self.work.done(key):
                    self.enqueue(key)

    async def _tick(self) -> None:
        """Every tick, a task for each light evaluation that is due. One that is slow (a scrape
        waiting for its timeout) delays no other; later ticks skip its key until it ends."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_seconds)
            if not self.leading.is_set():
                continue
            # Due within half a tick counts as due: the ticks are the cadence.
            horizon = loop.time() + self.tick_seconds / 2
            for key in [k for k, due in self.light.items() if due <= horizon and k not in self.evaluating]:
                self.evaluating.add(key)
                task = asyncio.create_task(self._evaluate(key), name="light-evaluation")
                self.evaluations.add(task)
                task.add_done_callback(self.evaluations.discard)

    async def _evaluate(self, key: Key) -> None:
        try:
            body = self.bodies.get(key)
            # Queued, being reconciled or waiting for a retry: the full reconcile decides what's next.
            if body is None or self.work.busy(key):
                self.light.pop(key, None)
                return
            assert self.evaluate is not None
            self.work.begin(key)
            started = time.monotonic()
            again = Next(full_now=True)
            redo = True
            try:
                again = await self.evaluate(body)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the full reconcile reports it, with its back-off
                LOG.debug("%s/%s: light evaluation failed, reconciling: %s", *key, error)
            finally:
                RECONCILE_SECONDS.observe(time.monotonic() - started)
                redo = self.work.done(key, again=again.full_now or again.after is None)
            if redo:
                self.enqueue(key)
            elif key in self.light and again.after is not None:
                self.light[key] = loop_time() + again.after
        finally:
            self.evaluating.discard(key)

    def _retry(self, key: Key, error: Exception, conflict: bool = False) -> None:
        if conflict:  # someone wrote first: read again and redo, soon
            LOG.info("%s/%s: conflict, retrying: %s", *key, error)
            self.enqueue(key, 0.2)
            return
        if isinstance(error, KubeError) and error.going_away:
            # The namespace is being deleted: its DELETED events will end this object's story.
            LOG.info("%s/%s: namespace going away, not retrying soon: %s", *key, error)
            self.enqueue(key, MAX_BACKOFF_SECONDS)
            return
        count = self.failures[key] = self.failures.get(key, 0) + 1
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**count)
        LOG.error("%s/%s: reconcile failed (retry in %.1fs): %s", *key, delay, error, exc_info=error)
        self.enqueue(key, delay)
