"""The ModelDeployment status as pydantic models (read back leniently: fields an older or newer
operator wrote are ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from tritonop.api.validation import ApiModel


# -- status ------------------------------------------------------------------------------
class StatusModel(ApiModel):
    """Status is read back from the API server: fields an older or newer operator wrote are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Condition(StatusModel):
    type: str = Field(..., description="Ready, Synced, RepositoryValid, Scheduled, ModelLoaded, Progressing, ...")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str = Field(..., description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable details.")
    last_transition_time: str = Field(..., alias="lastTransitionTime", description="When status last changed.")
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="metadata.generation this condition was computed for."
    )


class LatencyStatus(StatusModel):
    p95_ms: int | None = Field(None, alias="p95Ms", description="95th percentile request latency (ms).")
    p99_ms: int | None = Field(None, alias="p99Ms", description="99th percentile request latency (ms).")
    average_ms: int | None = Field(None, alias="averageMs", description="Mean request latency (ms).")
    queue_ms: int | None = Field(None, alias="queueMs", description="Mean queue time (ms).")
    window_seconds: int | None = Field(None, alias="windowSeconds", description="Measurement window (s).")


class TokenLatencyStatus(StatusModel):
    """Token-level latency of a streaming model (spec.autoscaling.tokenLatency), at its percentile."""

    percentile: float = Field(..., description="The percentile measured (spec.autoscaling.tokenLatency.percentile).")
    time_to_first_token_ms: int | None = Field(
        None, alias="timeToFirstTokenMs", description="Measured time to first token at the percentile (ms)."
    )
    inter_token_latency_ms: int | None = Field(
        None, alias="interTokenLatencyMs", description="Measured inter-token latency at the percentile (ms)."
    )
    source: str | None = Field(
        None,
        description="The metric families read: vllm:time_to_first_token_seconds and "
        "vllm:time_per_output_token_seconds (Triton's vLLM backend), or nv_inference_first_response_histogram_ms "
        "(Triton core, 24.11 and later, for any decoupled backend; TTFT only).",
    )
    window_seconds: int | None = Field(
        None, alias="windowSeconds", description="Measurement window (s): the histograms' growth over it."
    )


class AutoscalerStatus(StatusModel):
    """What the autoscaler learned about this deployment: shown for admins, and read back by a
    restarted operator (it never writes spec). Bounded: two demand profiles of 288 and 168 numbers."""

    utilisation: float | None = Field(
        None, description="Busy fraction each replica may run at for the target (from the queueing model)."
    )
    capacity_per_replica: float | None = Field(
        None, alias="capacityPerReplica", description="Requests/s one replica serves when always busy (learned)."
    )
    service_ms: float | None = Field(
        None, alias="serviceMs", description="Compute time per request (ms): the latency of one idle replica."
    )
    variability: float | None = Field(
        None,
        description="Learned variability V of each pod's queue (Kingman: mean wait = rho/(1-rho) x V / capacity).",
    )
    lead_seconds: int | None = Field(
        None,
        alias="leadSeconds",
        description="Lead time the policy plans for: the longest recent measured pod start (replica write -> serving).",
    )
    pod_start_seconds: list[int] = Field(
        default_factory=list,
        alias="podStartSeconds",
        description="The last measured pod starts (s), replica write -> the new pod serving the target version.",
    )
    forecast_error: float | None = Field(
        None,
        alias="forecastError",
        description="Headroom kept for the demand forecast's error, in sqrt(req/s): the 90th percentile of what recent "
        "forecasts missed by.",
    )
    daily_profile: list[float | None] = Field(
        default_factory=list,
        alias="dailyProfile",
        description="Learned demand (req/s) per 5 minutes of the UTC day (288 entries; null: not seen yet).",
    )
    weekly_profile: list[float | None] = Field(
        default_factory=list,
        alias="weeklyProfile",
        description="Learned demand (req/s) per hour of the UTC week from Monday 00:00 (168 entries).",
    )


class EndpointStatus(StatusModel):
    http: str | None = Field(None, description="In-cluster HTTP endpoint (host:port).")
    grpc: str | None = Field(None, description="In-cluster gRPC endpoint (host:port).")


class IntegrityStatus(StatusModel):
    """The last integrity check of the target version's files against its SHA256SUMS.json."""

    repository: str = Field(..., description="spec.model.repository when it was checked.")
    version: int | None = Field(None, description="Version checked (omitted: the repository's highest).")
    result: str = Field(
        ...,
        description="Verified (every file matches the manifest), Unverified (no manifest: served unverified), "
        "Verifying (a check is under way; nothing new loads), or the problem found (ChecksumMismatch, "
        "VersionNotFound, ModelNotFound, InvalidConfig, VerificationFailed, ...).",
    )
    checked_by: str = Field(
        ...,
        alias="checkedBy",
        description="Who read the bytes: 'operator' (the repository is visible to it) or 'job/<name>' "
        "(a verification Job mounting the repository as the servers do).",
    )
    message: str = Field("", description="What was found, naming the file on a mismatch.")
    checked_at: str | None = Field(None, alias="checkedAt", description="When this verdict was reached.")


class NodeCacheStatus(StatusModel):
    """One version in one node's cache (spec.model.cache), as its staging Job left it."""

    node: str = Field(..., description="The node.")
    version: int = Field(..., description="The version staged there.")
    state: str = Field(
        ...,
        description="Staging (a Job is copying it), Staged (copied and verified), Cached (already there: the "
        "next pod on this node starts warm), NoRoom (staged outside the budget for its pods; not kept), or "
        "Failed (see reason).",
    )
    reason: str | None = Field(None, description="Why it failed or did not fit (IntegrityMismatch, DiskFull, ...).")
    message: str = Field("", description="What the staging Job found.")
    bytes: int | None = Field(None, description="The version's size.")
    seconds: float | None = Field(None, description="Time spent copying (0 when already there).")
    job: str | None = Field(None, description="The staging Job.")
    at: str | None = Field(None, description="When this verdict was reached (or the Job started).")


class LoadStatus(StatusModel):
    """The most recent successful model load on one server, as the operator timed it."""

    version: int | None = Field(None, description="Version loaded (omitted: the repository's highest).")
    seconds: float = Field(
        ...,
        description="How long Triton took to load it: size readiness, the autoscaler's spareReplicas and "
        "probes with it (the servers start with no model loaded, so probes never wait on a load).",
    )
    mode: Literal["Initial", "SideBySide", "Swap", "Reload"] = Field(
        ...,
        description="Initial (a server with nothing loaded), SideBySide (beside the old version: no downtime), "
        "Swap (the old version unloaded first: it did not fit twice), Reload (same version, new config).",
    )
    pod: str = Field(..., description="The pod whose server loaded it.")
    completed_at: str = Field(..., alias="completedAt", description="When the load finished.")


class StartupStatus(StatusModel):
    """The latest measured start of a new pod, creation to Ready, by phase, and the totals of the
    last few. Seconds, to 0.1. Phases other than the load come from Kubernetes timestamps, which
    are whole seconds (metav1.Time): each is known to about a second; the phases add up to the total."""

    pod: str = Field(..., description="The pod whose start this is.")
    ready_at: str = Field(..., alias="readyAt", description="When it became Ready (its Ready condition's transition).")
    total_seconds: float = Field(
        ..., alias="totalSeconds", description="Creation (metadata.creationTimestamp) to Ready: the sum of the phases."
    )
    scheduling_seconds: float | None = Field(
        None, alias="schedulingSeconds", description="Creation to scheduled (the PodScheduled condition's transition)."
    )
    container_seconds: float | None = Field(
        None,
        alias="containerSeconds",
        description="Scheduled to the server container running (state.running.startedAt): image pull, volumes, "
        "container creation.",
    )
    server_seconds: float | None = Field(
        None,
        alias="serverSeconds",
        description="Container started to the load beginning: Triton starting until it answers the operator "
        "(probed every second while pods start); any wait before the load (a repository check, a failed load "
        "retried) too.",
    )
    staging_seconds: float | None = Field(
        None,
        alias="stagingSeconds",
        description="Weights staged on the node before the load: not measured yet (there is no node cache); absent.",
    )
    load_seconds: float = Field(
        ..., alias="loadSeconds", description="The model load, as the operator timed it (to the millisecond)."
    )
    ready_seconds: float = Field(
        ...,
        alias="readySeconds",
        description="Load done to Ready: the readiness gate (tritonop.dev/model-ready) opened, then the kubelet's "
        "readiness probe passed.",
    )
    recent_total_seconds: list[float] = Field(
        default_factory=list,
        alias="recentTotalSeconds",
        description="Total seconds of the last 5 measured starts, oldest first (this one last).",
    )


class SideFigures(StatusModel):
    """One side of a canary analysis over its window: the canary pods' new version, or the other
    pods' stable version."""

    requests: int = Field(0, description="Requests served (successes and failures).")
    errors: int = Field(0, description="Failed requests (Triton's nv_inference_request_failure).")
    compute_ms: float | None = Field(None, alias="computeMs", description="Compute time per request (ms).")
    time_to_first_token_ms: float | None = Field(
        None,
        alias="timeToFirstTokenMs",
        description="A streaming model's time to first token at the token percentile (ms), over the window.",
    )
    inter_token_latency_ms: float | None = Field(
        None,
        alias="interTokenLatencyMs",
        description="A streaming model's inter-token latency at the token percentile (ms), over the window.",
    )


class AnalysisStatus(StatusModel):
    result: Literal["Passed", "Failed", "Inconclusive", "FastFailed"] = Field(..., description="The verdict.")
    reason: str = Field(
        ...,
        description=(
            "Healthy, LatencyRegression, TimeToFirstTokenRegression, InterTokenLatencyRegression, "
            "ErrorRegression, InsufficientTraffic or ErrorBurst."
        ),
    )
    message: str = Field("", description="The figures behind the verdict.")
    canary: SideFigures = Field(default_factory=lambda: SideFigures(), description="The canary side.")
    stable: SideFigures = Field(default_factory=lambda: SideFigures(), description="The stable side.")
    at: str | None = Field(None, description="When it was reached.")
    step: int | None = Field(None, description="The step whose window was judged.")
    weight: int | None = Field(None, description="That step's weight, in percent.")
    measured_share: float | None = Field(
        None,
        alias="measuredShare",
        description="The canary pods' share of the window's requests, in percent (clients that keep connections "
        "open can make it differ from the weight; the message then says so).",
    )


class RolloutStatus(StatusModel):
    """A canary rollout's state: all of it lives here (the operator never writes spec), so a
    restarted operator resumes at the same step."""

    phase: Literal["Waiting", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack", "Aborted"] = Field(
        ...,
        description="Waiting (cannot start: fewer than 2 ready replicas), Progressing, Paused (analysis "
        "inconclusive: too little traffic), Promoting (every pod switching), Succeeded, RolledBack (the canary "
        "regressed: every pod serves the stable version; not retried until the spec changes), Aborted (the spec "
        "went back to the stable version).",
    )
    stable_version: int = Field(..., alias="stableVersion", description="The version that served before.")
    canary_version: int = Field(..., alias="canaryVersion", description="The version under test.")
    generation: int = Field(..., description="metadata.generation this rollout is for.")
    step: int = Field(0, description="Current step, from 1 (0: not started).")
    steps: int = Field(0, description="Steps in all.")
    weight: int = Field(0, description="The current step's weight (percent).")
    canary_pods: list[str] = Field(
        default_factory=list, alias="canaryPods", description="Pods switched to the canary version."
    )
    measured_share: float | None = Field(
        None,
        alias="measuredShare",
        description="Percent of the last window's requests the canary version served (about weight: pods share "
        "a Service's traffic evenly).",
    )
    step_started_at: str | None = Field(
        None, alias="stepStartedAt", description="When this step's canary pods all served the canary version."
    )
    failed_checks: int = Field(0, alias="failedChecks", description="Failed analyses so far.")
    last_analysis: AnalysisStatus | None = Field(None, alias="lastAnalysis", description="The latest verdict.")
    message: str = Field("", description="What happens now, or why it stopped.")
    summary: str = Field("", description="For kubectl get (ROLLOUT), e.g. 'v4 25% 1/2' or 'RolledBack v4'.")

    @property
    def active(self) -> bool:
        return self.phase in ("Waiting", "Progressing", "Paused", "Promoting")


class ModelDeploymentStatus(StatusModel):
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="metadata.generation the status reflects."
    )
    model_name: str | None = Field(None, alias="modelName", description="Triton model name being served.")
    replicas: int | None = Field(None, description="Current replicas (the scale subresource reads this).")
    ready_replicas: int | None = Field(
        None, alias="readyReplicas", description="Replicas that are Ready (serving; VERSION shows which version)."
    )
    desired_replicas: int | None = Field(None, alias="desiredReplicas", description="Replicas the operator wants.")
    selector: str | None = Field(None, description="Label selector of the replicas (for the scale subresource).")
    active_version: int | None = Field(
        None, alias="activeVersion", description="Version every ready replica serves, as Triton reports it."
    )
    target_version: int | None = Field(None, alias="targetVersion", description="Version being rolled out.")
    previous_version: int | None = Field(None, alias="previousVersion", description="Version served before.")
    latency: LatencyStatus | None = Field(None, description="Latest latency measurement.")
    token_latency: TokenLatencyStatus | None = Field(
        None,
        alias="tokenLatency",
        description="Latest time to first token and inter-token latency (with spec.autoscaling.tokenLatency).",
    )
    autoscaler: AutoscalerStatus | None = Field(
        None, description="What the autoscaler learned: utilisation for the target, pod start, demand profile."
    )
    integrity: IntegrityStatus | None = Field(
        None, description="Integrity check of the target version's files (absent: storage tritonop cannot verify)."
    )
    last_load: LoadStatus | None = Field(None, alias="lastLoad", description="The most recent model load.")
    cache: list[NodeCacheStatus] | None = Field(
        None, description="spec.model.cache: the versions this model's pods need, per node, in that node's cache."
    )
    startup: StartupStatus | None = Field(
        None, description="The latest new pod's start, creation to Ready, by phase (measured once per pod)."
    )
    rollout: RolloutStatus | None = Field(None, description="The latest canary rollout (strategy: Canary).")
    endpoint: EndpointStatus | None = Field(None, description="Where clients reach the model.")
    last_scale_time: str | None = Field(None, alias="lastScaleTime", description="When replicas last changed.")
    ready_summary: str | None = Field(None, alias="readySummary", description="readyReplicas/replicas, for kubectl.")
    reason: str | None = Field(None, description="Reason of a non-True Ready condition, for kubectl get.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Synced, RepositoryValid, Scheduled, ModelLoaded, Progressing, LatencyWithinTarget.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )

    @classmethod
    def parse_lenient(cls, body: dict[str, Any] | None) -> ModelDeploymentStatus:
        """The stored status; one that does not parse (hand-edited) counts as none: it is rewritten."""
        try:
            return cls.model_validate(body or {})
        except ValueError:
            return cls()

    def to_body(self) -> dict[str, Any]:
        """As written to the API: camelCase, absent fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)
