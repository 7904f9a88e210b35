"""A small work queue in front of the reconciler (controller-runtime style, on asyncio).

kopf delivers watch events; the queue turns them into at most one reconcile per object at a
time, with a few workers in parallel, periodic resyncs, requeue-after and error back-off. A
burst of events for one object while it is being reconciled becomes one more reconcile.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from tritonop.k8s import KubeError

LOG = logging.getLogger("tritonop.controller")
Key = tuple[str, str]  # (namespace, name)
ReconcileFn = Callable[[dict[str, Any]], Awaitable[float | None]]

RECONCILES = Counter("tritonop_reconciles_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram("tritonop_reconcile_duration_seconds", "Time one reconcile took.")
MANAGED = Gauge("tritonop_modeldeployments", "ModelDeployments the operator manages.")
MAX_BACKOFF_SECONDS = 60.0


class Controller:
    def __init__(self, reconcile: ReconcileFn, workers: int = 8, resync_seconds: float = 30.0) -> None:
        self.reconcile = reconcile
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.active: set[Key] = set()
        self.dirty: set[Key] = set()
        self.failures: dict[Key, int] = {}
        self.delayed: dict[Key, asyncio.TimerHandle] = {}
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
            "controller_delayed": len(self.delayed),
            "controller_queued": len(self.queued),
            "controller_dirty": len(self.dirty),
        }

    def start(self, leading: bool = True) -> None:
        if leading:
            self.leading.set()
        self._start_workers()
        self.tasks = [asyncio.create_task(self._resync(), name="resync")]

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
        tasks = self.tasks + self.worker_tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self.delayed.values():
            handle.cancel()

    # -- inputs from kopf's watches ---------------------------------------------------------
    def update(self, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.bodies[key] = copy.deepcopy(dict(body))
        MANAGED.set(len(self.bodies))
        self.enqueue(key)

    def forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self.failures.pop(key, None)
        handle = self.delayed.pop(key, None)
        if handle is not None:
            handle.cancel()
        MANAGED.set(len(self.bodies))

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        if key not in self.bodies:
            return
        if delay > 0:
            existing = self.delayed.get(key)
            due = asyncio.get_running_loop().time() + delay
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
        self.enqueue(key)

    # -- workers ----------------------------------------------------------------------------
    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            for key in list(self.bodies):
                self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            await self.leading.wait()
            key = await self.queue.get()
            self.queued.discard(key)
            if not self.leading.is_set():
                self.enqueue(key)  # leadership went while we waited: keep the key for later
                continue
            if key in self.active:
                self.dirty.add(key)
                continue
            body = self.bodies.get(key)
            if body is None:
                continue
            self.active.add(key)
            started = time.monotonic()
            try:
                requeue = await self.reconcile(body)
                self.failures.pop(key, None)
                RECONCILES.labels("success").inc()
                if requeue is not None:
                    self.enqueue(key, requeue)
            except asyncio.CancelledError:
                raise
            except KubeError as error:
                RECONCILES.labels("conflict" if error.status == 409 else "error").inc()
                self._retry(key, error, conflict=error.status == 409)
            except Exception as error:
                RECONCILES.labels("error").inc()
                self._retry(key, error)
            finally:
                RECONCILE_SECONDS.observe(time.monotonic() - started)
                self.active.discard(key)
                if key in self.dirty:
                    self.dirty.discard(key)
                    self.enqueue(key)

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
