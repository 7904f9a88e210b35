"""Leader election on a real coordination.k8s.io Lease in the dev cluster's API server.

Electors here run in this test process with short timings; two whole operator processes
electing under load are in test_chaos.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from devcluster import DevCluster
from tritonop.k8s import KubeClient
from tritonop.leader import ElectionConfig, LeaderElector

pytestmark = pytest.mark.integration
TIMING = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.2}


class Candidate:
    """One elector with its own client, recording when it led."""

    def __init__(self, cluster: DevCluster, namespace: str, name: str) -> None:
        self.kube = KubeClient.from_environment(str(cluster.kubeconfig))
        self.transitions: list[tuple[str, float]] = []
        config = ElectionConfig(namespace=namespace, identity=name, **TIMING)
        self.elector = LeaderElector(
            self.kube,
            config,
            lambda: self.transitions.append(("leader", time.monotonic())),
            lambda: self.transitions.append(("standby", time.monotonic())),
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run())

    async def crash(self) -> None:
        """Stop campaigning without releasing: as if the process were SIGKILLed."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def close(self) -> None:
        await self.crash()
        await self.kube.close()


async def until(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)
    return time.monotonic()


def test_one_leader_hand_over_on_release_and_takeover_after_expiry(cluster: DevCluster, namespace: str) -> None:
    async def scenario() -> None:
        a, b = Candidate(cluster, namespace, "a"), Candidate(cluster, namespace, "b")
        try:
            a.start()
            b.start()
            await until("a leader", lambda: a.elector.leading or b.elector.leading)
            await asyncio.sleep(1.0)  # several retry periods: the other must stay standby
            assert a.elector.leading != b.elector.leading, "two leaders at once"
            leader, standby = (a, b) if a.elector.leading else (b, a)
            lease = await leader.kube.get("Lease", namespace, "tritonop-leader")
            assert lease is not None and lease["spec"]["holderIdentity"] == leader.elector.identity
            assert standby.elector.holder == leader.elector.identity and standby.transitions == []

            # Clean shutdown: the leader stops, releases, and the standby takes over promptly.
            await leader.crash()
            released_at = time.monotonic()
            await leader.elector.release()
            taken_at = await until("the standby takes over after a release", lambda: standby.elector.leading)
            assert leader.transitions[-1][0] == "standby"
            print(f"\nleader election: hand-over after release {taken_at - released_at:.2f}s")

            # Crash: the new leader stops renewing. The old one campaigns again and must wait out
            # a whole lease duration after the last renewal it saw, never less.
            leader.start()
            await asyncio.sleep(0.5)
            assert not leader.elector.leading
            await standby.crash()
            crashed_at = time.monotonic()
            taken_at = await until("takeover after the lease expired", lambda: leader.elector.leading)
            waited = taken_at - crashed_at
            print(f"leader election: takeover after a crash {waited:.2f}s (lease {TIMING['lease_duration']}s)")
            assert waited >= TIMING["lease_duration"] - TIMING["retry_period"], "took a lease that was still live"
            lease = await leader.kube.get("Lease", namespace, "tritonop-leader")
            assert lease is not None and lease["spec"]["leaseTransitions"] >= 2
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_leader_whose_lease_is_taken_steps_down(cluster: DevCluster, namespace: str) -> None:
    """Someone else holds the Lease now (a partition healed, a manual takeover): stop leading."""

    async def scenario() -> None:
        a = Candidate(cluster, namespace, "a")
        try:
            a.start()
            await until("a leads", lambda: a.elector.leading)
            lease = await a.kube.get("Lease", namespace, "tritonop-leader")
            assert lease is not None
            await a.crash()  # pause it, so the write below cannot race its renewal
            lease["spec"]["holderIdentity"] = "intruder"
            await a.kube.replace(lease)
            a.start()
            await until("a steps down", lambda: not a.elector.leading)
            assert [kind for kind, _ in a.transitions] == ["leader", "standby"]
        finally:
            await a.close()

    asyncio.run(scenario())
