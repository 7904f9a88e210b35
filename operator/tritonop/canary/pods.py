"""Pure: which pods serve which version during a canary rollout.

A step switches k of the n ready pods in place (k = ceil(weight x n / 100), 1 <= k <= n - 1),
so the Service's load balancing sends about k/n of the traffic to the new version with no mesh
and no spare GPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tritonop.api.status import RolloutStatus


@dataclass(frozen=True)
class PodView:
    """A pod as the rollout sees it."""

    name: str
    ready: bool
    versions: tuple[int, ...]  # ready versions on its server
    current: bool = True  # its loaded config is the wanted one


def canary_pod_count(weight: int, ready: int) -> int:
    """k = ceil(weight x ready / 100), kept between 1 and ready - 1."""
    return max(1, min(ready - 1, math.ceil(weight * ready / 100)))


def choose_canary_pods(previous: Iterable[str], ready: list[str], k: int) -> list[str]:
    """Keep the pods already switched (no needless loads), add or drop by name to make k."""
    kept = [name for name in previous if name in ready][:k]
    extra = [name for name in sorted(ready) if name not in kept][: k - len(kept)]
    return sorted(kept + extra)


def serving(pods: Iterable[PodView], version: int) -> set[str]:
    """The pods that serve `version` now: ready, loaded, with the wanted config."""
    return {pod.name for pod in pods if pod.ready and version in pod.versions and pod.current}


def assignment(rollout: RolloutStatus | None, pods: Iterable[str], target: int | None) -> dict[str, int | None]:
    """What each pod should serve now: the canary version on canary pods while a step runs; the
    stable version everywhere while waiting, after a rollback or an abort; else the target."""
    names = list(pods)
    if rollout is None or rollout.phase in ("Succeeded", "Promoting"):
        version = rollout.canary_version if rollout is not None and rollout.phase == "Promoting" else target
        return dict.fromkeys(names, version)
    if rollout.phase in ("Waiting", "RolledBack", "Aborted"):
        return dict.fromkeys(names, rollout.stable_version)
    canary = set(rollout.canary_pods)
    return {name: rollout.canary_version if name in canary else rollout.stable_version for name in names}
