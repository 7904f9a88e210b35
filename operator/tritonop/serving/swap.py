"""Pure: the pod-by-pod swap's next step (steps a-c take one pod per reconcile), and what status
says about the swap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tritonop.serving.memory import FailedLoad, SwapNeed


class SwapKind(StrEnum):
    DONE = "Done"  # every running pod serves the target: the swap is over
    BLOCKED = "Blocked"  # one replica without spec.rollout.allowSwapDowntime: the old version keeps serving
    ANNOUNCE = "Announce"  # status (and an Event) say so first, before anything is taken out of service
    BACK_OFF = "BackOff"  # the pod next in turn failed to swap within FAILED_LOAD_RETRY_SECONDS: wait for it
    SWAP = "Swap"  # take the pod out of service and swap it
    WAIT = "Wait"  # another pod is not Ready: at most one pod is out of service


@dataclass(frozen=True)
class SwapPod:
    uid: str
    ready: bool  # Kubernetes' Ready condition (false while a swap's closed gate holds it out of service)
    serves: bool  # serves the target with the wanted config


@dataclass(frozen=True)
class SwapStep:
    kind: SwapKind
    pod: str | None = None  # the uid of the pod next in turn
    error: str | None = None  # BACK_OFF: its failed load


def next_swap_step(
    pods: Sequence[SwapPod], need: SwapNeed, allow_downtime: bool, failures: Mapping[str, FailedLoad], now: float
) -> SwapStep:
    """The running pods in order -> what the swap does in this reconcile.

    The pod next in turn is the first one not serving the target that is not Ready (a pod a swap
    already took out of service, by this process or one before a restart), else the first one not
    serving the target; failures play no part in the choice. While that pod failed a load within
    FAILED_LOAD_RETRY_SECONDS (any config), the swap waits and takes no other pod in its place; it
    is retried after the back-off."""
    behind = [pod for pod in pods if not pod.serves]
    candidate = next((pod for pod in behind if not pod.ready), behind[0] if behind else None)
    if candidate is None:
        return SwapStep(SwapKind.DONE)
    if len(pods) <= 1 and not allow_downtime:
        return SwapStep(SwapKind.BLOCKED, candidate.uid)
    if not need.announced:
        return SwapStep(SwapKind.ANNOUNCE, candidate.uid)
    failed = failures.get(candidate.uid)
    if failed is not None and failed.recent(now):
        return SwapStep(SwapKind.BACK_OFF, candidate.uid, failed.message)
    if all(pod.ready for pod in pods if pod.uid != candidate.uid):
        return SwapStep(SwapKind.SWAP, candidate.uid)
    return SwapStep(SwapKind.WAIT, candidate.uid)


def swap_notice(need: SwapNeed, replicas: int) -> str:
    """Status's word on a swap pending or under way (Progressing, and the SwapPending Event)."""
    downtime = " (one replica: it does not serve during the swap)" if replicas <= 1 else ""
    return (
        f"version {need.version} does not fit beside the loaded version in device memory; switching pod by "
        f"pod, one at a time, while the others serve{downtime}: {need.message[:300]}"
    )


def swap_blocked(need: SwapNeed, version: int | None) -> str:
    """Why a one-replica switch waits (ModelLoaded=False InsufficientMemoryForSwitch)."""
    return (
        f"version {version} does not fit beside the loaded version in device memory "
        f"({need.message[:300]}); with one replica a pod-by-pod swap means downtime: set "
        "spec.rollout.allowSwapDowntime: true to allow it, or run 2 or more replicas"
    )
