"""The verdict of a verification Job, in status and back (pure parts of verification.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devcluster.podrunner import is_task_container, task_argv
from tests.unit.fakes import FakeApiServer
from tritonop.api.spec import ModelDeployment
from tritonop.api.status import ModelDeploymentStatus
from tritonop.render.objects import render_verify_job
from tritonop.repository import tools
from tritonop.repository.report import RepositoryReport, inspect_tree
from tritonop.verification import integrity_of, pod_state, report_of, verify

MD = ModelDeployment.from_body(
    {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"repository": "pvc://models/vision", "version": 3}},
    }
)


def test_a_mismatch_survives_the_round_trip_through_status() -> None:
    verdict = RepositoryReport(
        True,
        "ChecksumMismatch",
        "/models/m/3/model.pt: sha256 ab… does not match",
        [1, 2, 3],
        verified=False,
        version=3,
    ).to_verdict(3)
    report = RepositoryReport.from_verdict(verdict, "job/m-verify-3-abc")
    assert (report.problem, report.version, report.checked_by) == ("ChecksumMismatch", 3, "job/m-verify-3-abc")
    integrity = integrity_of(MD, report, "2026-12-01T10:00:00Z")
    assert (integrity.result, integrity.repository, integrity.version) == ("ChecksumMismatch", "pvc://models/vision", 3)
    again = report_of(integrity)
    assert again.blocks_load and again.problem == "ChecksumMismatch" and "model.pt" in again.message


def test_verified_unverified_and_pending_results() -> None:
    ok = RepositoryReport(True, None, "matches", [3], verified=True, version=3, checked_by="job/j")
    assert integrity_of(MD, ok, "t").result == "Verified" and not report_of(integrity_of(MD, ok, "t")).blocks_load
    bare = RepositoryReport(True, None, "no manifest", [3], verified=False, version=3, checked_by="job/j")
    assert integrity_of(MD, bare, "t").result == "Unverified"
    restored = report_of(integrity_of(MD, bare, "t"))
    assert restored.verified is False and restored.problem is None and not restored.blocks_load
    pending = RepositoryReport(False, pending=True, checked_by="job/j", version=3)
    assert integrity_of(MD, pending, "t").result == "Verifying" and pending.blocks_load


def test_an_unreadable_verdict_is_a_failure_not_a_pass() -> None:
    report = RepositoryReport.from_verdict("Traceback (most recent call last): ...", "job/j")
    assert report.problem == "VerificationFailed" and report.blocks_load


def test_the_pod_runner_runs_the_verifier_with_mapped_paths(tmp_path: Path) -> None:
    container = {
        "command": ["tritonop"],
        "args": ["repo", "verify-version", "/models", "m", "--verdict-file", "/dev/termination-log"],
    }
    assert is_task_container(container, "Never") and not is_task_container(container, "Always")
    assert not is_task_container({"command": ["tritonserver"]}, "Never")
    argv = task_argv(container, {}, {"/models": Path("/data/repo")}, tmp_path)
    assert argv[1:4] == ["-m", "tritonop", "repo"]
    assert argv[4:] == ["verify-version", "/data/repo", "m", "--verdict-file", str(tmp_path / "termination-log")]


def test_what_a_verification_pod_waits_for_is_said() -> None:
    unschedulable = {
        "metadata": {"name": "v-1"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: volume"}
            ],
        },
    }
    assert pod_state([unschedulable]) == "pod v-1: Unschedulable: 0/3 nodes: volume"
    attaching = {
        "metadata": {"name": "v-2"},
        "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]},
    }
    assert pod_state([attaching]) == "pod v-2: ContainerCreating: "
    assert pod_state([{"metadata": {"name": "v-3"}, "status": {"phase": "Running"}}]) == ""
    assert pod_state([]) == ""


CACHED = ModelDeployment.from_body(
    {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {
            "model": {"repository": "pvc://models/vision", "version": 3, "cache": {"claimName": "c", "budget": "1Gi"}}
        },
    }
)


def test_with_the_cache_the_files_are_hashed_on_the_nodes_not_by_the_verification_job(tmp_path: Path) -> None:
    """One read of a version, not two: the Job checks the repository and that the manifest is
    there (a changed file is not read, so not seen); each node's staging hashes its copy. The
    verdict says so through status and back, and a verdict reached that way is checked again,
    files hashed, once the cache is switched off."""
    version = tmp_path / "m" / "3"
    version.mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    (version / "model.py").write_text("# model\n")
    tools.write_manifest(version)
    (version / "model.py").write_text("# changed after the manifest\n")
    assert inspect_tree(tmp_path, "m", 3).problem == "ChecksumMismatch"
    report = inspect_tree(tmp_path, "m", 3, hash_files=False)
    assert (report.problem, report.verified, report.hashed_on_nodes) == (None, True, True)
    assert "hashed against it as it is staged" in report.message
    from_job = RepositoryReport.from_verdict(report.to_verdict(3), "job/m-verify-3")
    assert from_job.hashed_on_nodes and from_job.verified
    integrity = integrity_of(CACHED, from_job, "2026-12-05T10:00:00Z")
    assert integrity.result == "VerifiedOnNodes"
    again = report_of(integrity)
    assert again.hashed_on_nodes and again.verified and not again.blocks_load
    assert "--no-hash" in render_verify_job(CACHED, 3, "img", "j")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-hash" not in render_verify_job(MD, 3, "img", "j")["spec"]["template"]["spec"]["containers"][0]["args"]

    api = FakeApiServer()
    settled = ModelDeploymentStatus(integrity=integrity)
    kept = asyncio.run(verify(api, CACHED.model_copy(update={"status": settled}), RepositoryReport(False), "img"))
    assert kept.integrity == integrity and "create" not in api.calls  # the cache is on: settled
    body = MD.model_copy(update={"status": settled})
    checked = asyncio.run(verify(api, body, RepositoryReport(False), "img"))
    assert checked.report.pending and api.calls["create"] == 1  # off: a Job hashes the files
    (job,) = [o for (kind, _, _), o in api.objects.items() if kind == "Job"]
    assert "--no-hash" not in job["spec"]["template"]["spec"]["containers"][0]["args"]
