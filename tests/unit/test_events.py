"""transition_events is pure: old status, new status -> the events the change deserves. Table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from tritonop.api.status import ModelDeploymentStatus
from tritonop.events import Event, transition_events


def status(*conditions: tuple[str, str, str], **fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(
        {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{t} {r}", "lastTransitionTime": "T"}
                for t, s, r in conditions
            ],
            **fields,
        }
    )


READY = ("Ready", "True", "Serving")
NONE = ModelDeploymentStatus()

CASES = [
    (
        "a canary starts: progress, not a warning",
        status(READY),
        status(("Ready", "False", "CanaryInProgress"), ("CanaryHealthy", "Unknown", "Waiting")),
        [Event("Normal", "CanaryInProgress", "Ready CanaryInProgress")],
    ),
    (
        "a rollback: the canary posts it with the figures, not the conditions again",
        status(("Ready", "False", "CanaryInProgress"), ("CanaryHealthy", "True", "Healthy")),
        status(("Ready", "False", "RolledBack"), ("CanaryHealthy", "False", "LatencyRegression")),
        [],
    ),
    ("first status, ready: news", NONE, status(READY), [Event("Normal", "Serving", "Ready Serving")]),
    ("first status, not ready: not news", NONE, status(("Ready", "False", "WaitingForReplicas")), []),
    ("nothing changed", status(READY), status(READY), []),
    (
        "ready lost to a GPU shortage",
        status(READY, ("Scheduled", "True", "AllScheduled")),
        status(("Ready", "False", "InsufficientGPU"), ("Scheduled", "False", "InsufficientGPU")),
        [
            Event("Warning", "InsufficientGPU", "Ready InsufficientGPU"),
            Event("Warning", "InsufficientGPU", "Scheduled InsufficientGPU"),
        ],
    ),
    (
        "a version switch under way is progress",
        status(READY),
        status(("Ready", "False", "VersionSwitch"), ("Progressing", "True", "VersionSwitch")),
        [Event("Normal", "VersionSwitch", "Ready VersionSwitch")],
    ),
    (
        "loading, awaiting replacement, a restarting server: no warning",
        status(("ModelLoaded", "True", "Loaded")),
        status(("ModelLoaded", "False", "AwaitingReplacement")),
        [],
    ),
    (
        "blocked by the repository: the RepositoryValid warning says it once",
        status(("RepositoryValid", "True", "Valid"), ("ModelLoaded", "True", "Loaded")),
        status(("RepositoryValid", "False", "ChecksumMismatch"), ("ModelLoaded", "False", "BlockedByRepository")),
        [Event("Warning", "ChecksumMismatch", "RepositoryValid ChecksumMismatch")],
    ),
    (
        "the API server refused an owned object",
        status(("Synced", "True", "Applied")),
        status(("Synced", "False", "ApplyRefused")),
        [Event("Warning", "ApplyRefused", "Synced ApplyRefused")],
    ),
    (
        "a finished switch",
        status(READY, activeVersion=2),
        status(READY, activeVersion=3),
        [Event("Normal", "VersionSwitched", "version 2 -> 3 on all replicas")],
    ),
    ("the first active version is not a switch", status(READY), status(READY, activeVersion=3), []),
]


@pytest.mark.parametrize(("case", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
def test_transition_events(
    case: str, old: ModelDeploymentStatus, new: ModelDeploymentStatus, expected: list[Event]
) -> None:
    assert transition_events(old, new) == expected
