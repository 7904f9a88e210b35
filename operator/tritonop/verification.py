"""Integrity where the bytes are: a version's files are checked against its manifest before
Triton loads it, by whoever can read them.

- The operator itself, when it can see the repository (file:// on its own machine): inspect()
  hashes the version once per change of its files (repository.manifests.ManifestCache).
- Otherwise, for pvc://, file:// (a hostPath on the nodes) and s3://, a short verification Job
  that reads the repository exactly as the servers do (same volume and node placement; for S3
  the same credentials Secret and endpoint) and runs `tritonop repo verify-version`, leaving its
  verdict as the container's termination message.
  One Job per (repository, version); the verdict is kept in status.integrity, so it survives an
  operator restart and an idle reconcile makes no request. A failed verdict is checked again
  every RECHECK_FAILED_SECONDS (someone may fix the file without changing the spec).
- gs://, and s3:// without a credentials Secret (the pods' own identity: IRSA, an instance role),
  are not verified by tritonop (Triton downloads them itself at load time); the status says so
  (no status.integrity; RepositoryValid stays Unknown until Triton loads).

While a check is under way nothing new loads: what serves keeps serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from tritonop import clock
from tritonop.api.spec import ModelDeployment
from tritonop.api.status import IntegrityStatus
from tritonop.clock import rfc3339
from tritonop.k8s import KubeApi, KubeError
from tritonop.render.objects import render_verify_job, verifies_where_the_bytes_are, verify_job_name
from tritonop.repository.report import VERIFIED_ON_NODES, RepositoryReport
from tritonop.serving import pod_facts

LOG = logging.getLogger("tritonop.verification")
POLL_SECONDS = 2.0  # while a Job runs, look again this soon (no watch on Jobs: they are rare)
RECHECK_FAILED_SECONDS = 300.0
VERIFYING = "Verifying"
# spec.model.cache: the manifest is there; each node's copy is hashed against it as it is staged.
SETTLED = ("Verified", VERIFIED_ON_NODES, "Unverified")  # results that are not problems


@dataclass(frozen=True)
class Verification:
    report: RepositoryReport
    integrity: IntegrityStatus | None  # what status.integrity should say (None: nothing verified)
    requeue_after: float | None = None


def integrity_of(md: ModelDeployment, report: RepositoryReport, checked_at: str) -> IntegrityStatus:
    """status.integrity for a report that read the bytes (or is waiting for a Job to)."""
    if report.pending:
        result = VERIFYING
    elif report.problem:
        result = report.problem
    else:
        result = report.verification or "Unverified"
    return IntegrityStatus(
        repository=md.spec.model.repository,
        version=report.version,
        result=result,
        checked_by=report.checked_by,
        message=report.message,
        checked_at=checked_at,
    )


def report_of(integrity: IntegrityStatus) -> RepositoryReport:
    """The report a stored verdict stands for (the Job that made it may be gone)."""
    problem = None if integrity.result in SETTLED else integrity.result
    return RepositoryReport(
        readable=True,
        problem=problem,
        message=integrity.message,
        versions=[integrity.version] if integrity.version is not None else [],
        verified=integrity.result in ("Verified", VERIFIED_ON_NODES),
        hashed_on_nodes=integrity.result == VERIFIED_ON_NODES,
        checked_by=integrity.checked_by,
        version=integrity.version,
    )


def age_seconds(stamp: str | None, now: str) -> float:
    return (clock.parse(now) - clock.parse(stamp)).total_seconds() if stamp else float("inf")


def job_finished(job: dict[str, Any]) -> str | None:
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def pod_state(pods: list[dict[str, Any]]) -> str:
    """Why a verification pod is not running yet, in a few words ('' when it runs or is gone)."""
    for pod in pods:
        facts = pod_facts(pod)
        if facts.unschedulable_message:
            return f"pod {facts.name}: Unschedulable: {facts.unschedulable_message}"
        if facts.waiting_reason:
            return f"pod {facts.name}: {facts.waiting_reason}: {facts.waiting_message}"
        if pod.get("status", {}).get("phase") == "Pending":
            return f"pod {facts.name}: Pending"
    return ""


def termination_message(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []):
            message = status.get("state", {}).get("terminated", {}).get("message")
            if message:
                return str(message)
    return None


async def verify(kube: KubeApi, md: ModelDeployment, local: RepositoryReport, image: str) -> Verification:
    """The report loads are gated on, and what status.integrity should say."""
    now = rfc3339()
    previous = md.status.integrity
    if local.readable:
        integrity = integrity_of(md, local, now)
        if previous is not None and previous.model_copy(update={"checked_at": None}) == integrity.model_copy(
            update={"checked_at": None}
        ):
            integrity = previous  # the same verdict: keep its time, so status does not change every reconcile
        return Verification(local, integrity)
    if not verifies_where_the_bytes_are(md):
        scheme = md.spec.model.repository.partition("://")[0]
        message = f"{scheme}:// repositories are not verified by tritonop: Triton downloads them itself at load time"
        if scheme == "s3":
            message = (
                "s3:// without model.credentialsSecret is not verified by tritonop (a verification Job would have "
                "no credentials; Triton reads with the pods' own identity)"
            )
        return Verification(replace(local, message=message), None)

    version = md.spec.model.version
    stored = previous if previous and previous.repository == md.spec.model.repository else None
    if stored and version is not None and stored.version != version:
        stored = None
    if stored and stored.result == VERIFIED_ON_NODES and md.spec.model.cache is None:
        stored = None  # the cache is off: the servers read the store, whose files were never hashed
    if stored and stored.result == VERIFYING:
        name = stored.checked_by.removeprefix("job/")  # follow the Job in flight
    elif stored and stored.result not in SETTLED:
        if age_seconds(stored.checked_at, now) < RECHECK_FAILED_SECONDS:
            return Verification(report_of(stored), stored, RECHECK_FAILED_SECONDS)
        # A new Job name: check the (maybe fixed) files again.
        name = verify_job_name(md, version, stored.checked_at or now)
        LOG.info("%s/%s: checking version %s again after %s", md.namespace, md.name, version, stored.result)
    elif stored:
        return Verification(report_of(stored), stored)
    else:
        name = verify_job_name(md, version)
    return await _run_job(kube, md, version, name, image, stored, now)


async def _run_job(
    kube: KubeApi,
    md: ModelDeployment,
    version: int | None,
    name: str,
    image: str,
    stored: IntegrityStatus | None,
    now: str,
) -> Verification:
    checked_by = f"job/{name}"
    pending = RepositoryReport(
        readable=False,
        message=f"verifying version {version if version is not None else 'latest'} where the bytes are: {checked_by}",
        pending=True,
        checked_by=checked_by,
        version=version,
    )
    since = (stored.checked_at if stored and stored.checked_by == checked_by else None) or now
    job = await kube.get("Job", md.namespace, name)
    if job is None:
        try:
            await kube.create(render_verify_job(md, version, image, name))
        except KubeError as error:
            if error.status != 409:
                failed = RepositoryReport(
                    True, "VerificationFailed", f"cannot create {checked_by}: {error}", checked_by=checked_by
                )
                return Verification(failed, integrity_of(md, failed, now), POLL_SECONDS * 5)
        return Verification(pending, integrity_of(md, pending, since), POLL_SECONDS)
    finished = job_finished(job)
    pods = await kube.list("Pod", md.namespace, f"job-name={name}")
    if finished is None:
        # Say what the Job's pod waits for (unschedulable, a volume that will not attach, ...).
        waiting = pod_state(pods)
        if waiting:
            pending = replace(pending, message=f"{pending.message} ({waiting})")
        return Verification(pending, integrity_of(md, pending, since), POLL_SECONDS)
    message = termination_message(pods)
    if message:
        report = RepositoryReport.from_verdict(message, checked_by)
    else:
        # Gone before writing a verdict: deadline, eviction, image pull, out of memory.
        why = next(
            (
                f"{c.get('reason', '')}: {c.get('message', '')}"
                for c in job.get("status", {}).get("conditions", [])
                if c.get("type") == "Failed"
            ),
            "no verdict",
        )
        report = RepositoryReport(
            True,
            "VerificationFailed",
            f"{checked_by} {finished.lower()} without a verdict ({why})",
            checked_by=checked_by,
        )
    return Verification(report, integrity_of(md, report, now), RECHECK_FAILED_SECONDS if report.problem else None)
