"""compute_status is pure: facts in, status out. Table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from tritonop.api.spec import ModelDeployment
from tritonop.api.status import LoadStatus, ModelDeploymentStatus
from tritonop.facts import Facts, PodFacts, PodStart
from tritonop.repository.report import RepositoryReport
from tritonop.status import compute_status, status_patch

NOW = "2026-11-25T12:00:00Z"
VALID = RepositoryReport(readable=True, message="ok", versions=[1, 2, 3])


def md(generation: int = 5) -> ModelDeployment:
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
            "spec": {"model": {"repository": "file:///r", "version": 3}, "replicas": 2},
        }
    )


def serving(name: str, *versions: int) -> PodFacts:
    return PodFacts(name=name, ready=True, live=True, ready_versions=versions or (3,), config_current=True)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


CASES = [
    (
        "all serving",
        Facts(2, VALID, 3, (serving("a"), serving("b"))),
        {"Ready": ("True", "Serving"), "ModelLoaded": ("True", "Loaded"), "Progressing": ("False", "Complete")},
        {"readyReplicas": 2, "activeVersion": 3, "readySummary": "2/2"},
    ),
    (
        "gpu shortage",
        Facts(
            2,
            VALID,
            3,
            (
                serving("a"),
                PodFacts("b", scheduled=False, unschedulable_message="0/3 nodes: 3 Insufficient nvidia.com/gpu."),
            ),
        ),
        {"Ready": ("False", "InsufficientGPU"), "Scheduled": ("False", "InsufficientGPU")},
        {"readyReplicas": 1, "reason": "InsufficientGPU"},
    ),
    (
        "other scheduling failure",
        Facts(1, VALID, 3, (PodFacts("a", scheduled=False, unschedulable_message="node(s) had untolerated taint"),)),
        {"Scheduled": ("False", "Unschedulable"), "Ready": ("False", "Unschedulable")},
        {"readyReplicas": 0},
    ),
    (
        "not yet seen by the scheduler is not a problem",
        Facts(1, VALID, 3, (PodFacts("a", scheduled=False),)),
        {"Scheduled": ("True", "AllScheduled"), "Ready": ("False", "WaitingForReplicas")},
        {},
    ),
    (
        "switch half done",
        Facts(2, VALID, 3, (serving("a", 3), PodFacts("b", ready=True, live=True, ready_versions=(2,)))),
        {"Ready": ("False", "VersionSwitch"), "Progressing": ("True", "VersionSwitch")},
        {"readyReplicas": 2, "activeVersion": None, "targetVersion": 3},
    ),
    (
        "load failed, old version keeps serving",
        Facts(
            1,
            VALID,
            3,
            (PodFacts("a", ready=True, live=True, ready_versions=(2,), load_error="failed to load 'm' version 3"),),
        ),
        {"Ready": ("False", "LoadFailed"), "ModelLoaded": ("False", "LoadFailed")},
        {"activeVersion": 2, "readyReplicas": 1},
    ),
    (
        "repository broken",
        Facts(1, RepositoryReport(True, "VersionNotFound", "version 9 not in /r/m"), 9, (serving("a", 3),)),
        {"Ready": ("False", "VersionNotFound"), "RepositoryValid": ("False", "VersionNotFound")},
        {"activeVersion": 3, "targetVersion": 9},
    ),
    (
        "storage the operator cannot read",
        Facts(1, RepositoryReport(False, message="s3:// storage is validated by Triton"), None, ()),
        {"RepositoryValid": ("Unknown", "NotReadableByOperator"), "ModelLoaded": ("Unknown", "NoServerRunning")},
        {"replicas": 0},
    ),
    (
        "server cannot start",
        Facts(
            1,
            VALID,
            3,
            (serving("a"), PodFacts("b", waiting_reason="CrashLoopBackOff", waiting_message="exited with 1")),
            rollout_pending=True,
        ),
        {"Ready": ("False", "CrashLoopBackOff"), "Progressing": ("True", "RollingOut")},
        {"readyReplicas": 1},
    ),
    (
        "a checksum mismatch blocks the load: not 'Loading'",
        Facts(
            1,
            RepositoryReport(True, "ChecksumMismatch", "/r/m/3/model.py: sha256 ... does not match"),
            3,
            (PodFacts("a", ready=True, live=True, ready_versions=(2,), config_current=True),),
        ),
        {
            "Ready": ("False", "ChecksumMismatch"),
            "ModelLoaded": ("False", "BlockedByRepository"),
            "RepositoryValid": ("False", "ChecksumMismatch"),
        },
        {"activeVersion": 2},
    ),
    (
        "Rolling: an old pod keeps its version until replaced",
        Facts(
            1,
            VALID,
            3,
            (
                PodFacts(
                    "a", ready=True, live=True, ready_versions=(2,), config_current=True, awaiting_replacement=True
                ),
            ),
            rollout_pending=True,
        ),
        {"ModelLoaded": ("False", "AwaitingReplacement"), "Ready": ("False", "RollingOut")},
        {"activeVersion": 2},
    ),
    (
        "pods not started yet: no server, not 'Loading'",
        Facts(2, VALID, 3, (PodFacts("a"), PodFacts("b"))),
        {"ModelLoaded": ("Unknown", "NoServerRunning"), "Ready": ("False", "WaitingForReplicas")},
        {"replicas": 2},
    ),
    (
        "a load in flight elsewhere is the only 'Loading'",
        Facts(2, VALID, 3, (serving("a"), PodFacts("b", ready=False, live=True, ready_versions=(2,)))),
        {"ModelLoaded": ("False", "Loading"), "Ready": ("False", "WaitingForReplicas")},
        {},
    ),
    (
        "the API server refused an owned object: reported, what runs keeps serving",
        Facts(1, VALID, 3, (serving("a"),), apply_refused="Deployment m refused by the API server: invalid"),
        {"Synced": ("False", "ApplyRefused"), "Ready": ("False", "ApplyRefused"), "ModelLoaded": ("True", "Loaded")},
        {"readyReplicas": 1, "activeVersion": 3, "reason": "ApplyRefused"},
    ),
    (
        "overrides the repository's config cannot take: nothing loads, the old version serves",
        Facts(
            1,
            VALID,
            3,
            (PodFacts("a", ready=True, live=True, ready_versions=(2,), config_current=True),),
            config_problem="spec.model.config.dynamicBatching.preferredBatchSizes: 16 larger than max_batch_size 8",
        ),
        {"ModelLoaded": ("False", "InvalidConfig"), "Ready": ("False", "InvalidConfig")},
        {"activeVersion": 2},
    ),
    (
        "verified by a Job where the bytes are",
        Facts(
            1,
            RepositoryReport(True, None, "m version 3 matches", [3], verified=True, checked_by="job/m-verify-3-x"),
            3,
            (serving("a"),),
        ),
        {"RepositoryValid": ("True", "Verified"), "Ready": ("True", "Serving")},
        {"activeVersion": 3},
    ),
    (
        "no manifest: it serves, but it is not called verified",
        Facts(1, RepositoryReport(True, None, "no SHA256SUMS.json", [3], verified=False), 3, (serving("a"),)),
        {"RepositoryValid": ("True", "Unverified"), "Ready": ("True", "Serving")},
        {},
    ),
    (
        "a new version waits for its verification: the old one serves",
        Facts(
            1,
            RepositoryReport(False, message="verifying version 3", pending=True, checked_by="job/m-verify-3-x"),
            3,
            (PodFacts("a", ready=True, live=True, ready_versions=(2,), config_current=True),),
        ),
        {
            "RepositoryValid": ("Unknown", "Verifying"),
            "ModelLoaded": ("False", "AwaitingVerification"),
            "Ready": ("False", "WaitingForReplicas"),
        },
        {"activeVersion": 2, "readyReplicas": 1},
    ),
    (
        "a version that does not fit twice: swapped pod by pod, the others serve",
        Facts(
            2,
            VALID,
            3,
            (serving("a", 3), PodFacts("b", ready=True, live=True, ready_versions=(2,), config_current=True)),
            swap="version 3 does not fit beside the loaded version in device memory; switching pod by pod",
        ),
        {"Progressing": ("True", "SwappingVersion"), "ModelLoaded": ("False", "SwappingVersion")},
        {"readyReplicas": 2},
    ),
    (
        "one replica, the new version does not fit beside the old: it waits for allowSwapDowntime",
        Facts(
            1,
            VALID,
            3,
            (PodFacts("a", ready=True, live=True, ready_versions=(2,), config_current=True),),
            swap="switching pod by pod",
            swap_blocked="set spec.rollout.allowSwapDowntime: true to allow it",
        ),
        {
            "ModelLoaded": ("False", "InsufficientMemoryForSwitch"),
            "Ready": ("False", "InsufficientMemoryForSwitch"),
            "Progressing": ("False", "Complete"),
        },
        {"activeVersion": 2},
    ),
    (
        "scaled to zero",
        Facts(0, VALID, 3, ()),
        {"Ready": ("True", "Serving")},
        {"replicas": 0, "readySummary": "0/0"},
    ),
]


@pytest.mark.parametrize(("case", "facts", "want_conditions", "want_fields"), CASES, ids=[c[0] for c in CASES])
def test_compute_status(case: str, facts: Facts, want_conditions: dict[str, Any], want_fields: dict[str, Any]) -> None:
    status = compute_status(md(), facts, ModelDeploymentStatus(), NOW).to_body()
    got = conditions(status)
    for kind, expected in want_conditions.items():
        assert got[kind] == expected, f"{kind}: {got[kind]} != {expected}"
    for key, value in want_fields.items():
        assert status.get(key) == value, key
    assert all(c["observedGeneration"] == 5 and c["lastTransitionTime"] == NOW for c in status["conditions"])
    assert status["observedGeneration"] == 5
    assert [c["type"] for c in status["conditions"]][:2] == ["Ready", "RepositoryValid"]


def test_transition_time_moves_only_when_status_flips() -> None:
    facts = Facts(2, VALID, 3, (serving("a"), serving("b")))
    first = compute_status(md(), facts, ModelDeploymentStatus(), "T1")
    again = compute_status(md(), facts, first, "T2")
    assert again == first
    assert status_patch(first.to_body(), again) is None
    broken = Facts(2, VALID, 3, (serving("a"), PodFacts("b", scheduled=False, unschedulable_message="x")))
    later = compute_status(md(), broken, first, "T3")
    times = {c.type: c.last_transition_time for c in later.conditions}
    assert times["Ready"] == "T3" and times["RepositoryValid"] == "T1"


def test_previous_version_follows_the_active_one() -> None:
    on_2 = compute_status(md(), Facts(1, VALID, 2, (serving("a", 2),)), ModelDeploymentStatus(), NOW)
    on_3 = compute_status(md(), Facts(1, VALID, 3, (serving("a", 3),)), on_2, NOW)
    assert (on_3.active_version, on_3.previous_version) == (3, 2)
    back = compute_status(md(), Facts(1, VALID, 2, (serving("a", 2),)), on_3, NOW)
    assert (back.active_version, back.previous_version) == (2, 3)


def test_last_load_is_the_latest_timed_one_and_survives_a_restart() -> None:
    load = LoadStatus.model_validate(
        {"version": 3, "seconds": 41.5, "mode": "SideBySide", "pod": "a", "completedAt": NOW}
    )
    timed = compute_status(md(), Facts(1, VALID, 3, (serving("a"),), last_load=load), ModelDeploymentStatus(), NOW)
    assert timed.to_body()["lastLoad"] == {
        "version": 3,
        "seconds": 41.5,
        "mode": "SideBySide",
        "pod": "a",
        "completedAt": NOW,
    }
    # A restarted operator has timed nothing yet: status keeps what an earlier process measured.
    restarted = compute_status(md(), Facts(1, VALID, 3, (serving("a"),)), timed, NOW)
    assert restarted.last_load == load
    newer = load.model_copy(update={"seconds": 2.0, "mode": "Swap"})
    assert compute_status(md(), Facts(1, VALID, 3, (serving("a"),), last_load=newer), timed, NOW).last_load == newer


def test_startup_shows_the_latest_measured_pod_start_by_phase() -> None:
    start = PodStart("a", "2026-11-25T11:59:58Z", 41.04, 3.0, 7.0, 16.79, 12.254, 2.0)
    facts = Facts(1, VALID, 3, (serving("a"),), pod_starts=(start,))
    measured = compute_status(md(), facts, ModelDeploymentStatus(), NOW)
    assert measured.to_body()["startup"] == {
        "pod": "a",
        "readyAt": "2026-11-25T11:59:58Z",
        "totalSeconds": 41.0,
        "schedulingSeconds": 3.0,
        "containerSeconds": 7.0,
        "serverSeconds": 16.8,
        "loadSeconds": 12.3,
        "readySeconds": 2.0,
        "recentTotalSeconds": [41.0],
    }  # no stagingSeconds: no node cache, not measured
    # Reconciles that measure nothing (and a restarted operator) keep it.
    assert compute_status(md(), Facts(1, VALID, 3, (serving("a"),)), measured, NOW).startup == measured.startup


def test_startup_keeps_the_last_five_totals() -> None:
    status = ModelDeploymentStatus()
    for total in range(10, 70, 10):
        start = PodStart(f"p{total}", NOW, float(total), None, None, None, 5.0, 1.0)
        status = compute_status(md(), Facts(1, VALID, 3, (serving("a"),), pod_starts=(start,)), status, NOW)
    assert status.startup is not None and status.startup.pod == "p60"
    assert status.startup.recent_total_seconds == [20.0, 30.0, 40.0, 50.0, 60.0]
    assert {"schedulingSeconds", "containerSeconds", "serverSeconds"}.isdisjoint(status.to_body()["startup"])
    two = (
        PodStart("x", "2026-11-25T11:59:00Z", 7.0, 1.0, 1.0, 1.0, 3.0, 1.0),
        PodStart("y", "2026-11-25T11:59:30Z", 8.0, 1.0, 1.0, 1.0, 4.0, 1.0),
    )  # measured in one reconcile, oldest Ready first: the newest shows
    both = compute_status(md(), Facts(1, VALID, 3, (serving("a"),), pod_starts=two), status, NOW)
    assert both.startup is not None and both.startup.pod == "y"
    assert both.startup.recent_total_seconds == [40.0, 50.0, 60.0, 7.0, 8.0]


def test_status_patch_removes_fields_that_went_away() -> None:
    old = {"reason": "X", "replicas": 1, "conditions": []}
    assert status_patch(old, ModelDeploymentStatus(replicas=2)) == {"replicas": 2, "conditions": [], "reason": None}
