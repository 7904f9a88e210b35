"""The ModelDeployment API (tritonop.dev/v1alpha1) as pydantic models: the one source of truth.

The CRD's OpenAPI schema (crds/) is generated from these models (see crd.py), so every field's
description, default, bound and CEL rule lives here, next to the type the operator parses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, model_validator

from tritonop.api.status import ModelDeploymentStatus
from tritonop.api.validation import (
    DEFAULT_IMAGE,
    GCS_CREDENTIALS_ENV,
    LABEL_KEY_MESSAGE,
    MAX_GPUS_PER_REPLICA,
    MAX_IMAGE_PULL_SECRETS,
    MAX_REPLICAS,
    MAX_SPARE_REPLICAS,
    OPERATOR_ENV,
    OWNED_FLAGS,
    TRITON_MODEL_NAME_PATTERN,
    ApiModel,
    CpuQuantity,
    DnsSubdomain,
    EnvName,
    ExtraArg,
    GpuResourceName,
    ImageReference,
    LabelValue,
    MemoryQuantity,
    Percentile,
    PrometheusUrl,
    RepositoryUri,
    TolerationKey,
    cel,
    cel_label_key,
)


class DynamicBatching(ApiModel):
    max_queue_delay_microseconds: int = Field(
        0,
        alias="maxQueueDelayMicroseconds",
        ge=0,
        le=10_000_000,
        description="How long (microseconds) Triton may hold a request to build a larger batch.",
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=list,
        alias="preferredBatchSizes",
        max_length=16,
        description="Batch sizes Triton prefers to form; each must be <= maxBatchSize.",
    )


class ModelConfigOverrides(ApiModel):
    """Overrides applied on top of the repository's config.pbtxt when the operator loads the model."""

    # Triton refuses to load a config whose preferred batch size exceeds max_batch_size (and says
    # only "failed to poll from model repository"). Without maxBatchSize here the repository's
    # max_batch_size applies, which admission cannot see: the operator checks that at load time.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.maxBatchSize) || !has(self.dynamicBatching) "
                    "|| !has(self.dynamicBatching.preferredBatchSizes) "
                    "|| self.dynamicBatching.preferredBatchSizes.all(size, size <= self.maxBatchSize)",
                    # Static texts: the API server estimates a message built from string(int)
                    # as unbounded and refuses the CRD.
                    message_expression=(
                        "self.maxBatchSize == 0 ? 'must be empty when maxBatchSize is 0 (batching off)' "
                        ": 'each preferred batch size must be at most maxBatchSize'"
                    ),
                    field_path=".dynamicBatching.preferredBatchSizes",
                )
            ]
        }
    )

    max_batch_size: int | None = Field(
        None,
        alias="maxBatchSize",
        ge=0,
        le=65536,
        description=(
            "Largest batch Triton forms (0 disables batching). Omitted: the repository's value. Every "
            "dynamicBatching.preferredBatchSizes entry must be at most this."
        ),
    )
    dynamic_batching: DynamicBatching | None = Field(
        None,
        alias="dynamicBatching",
        description="Enable Triton's dynamic batcher with these settings. Omitted: the repository's value.",
    )
    instance_count: int | None = Field(
        None,
        alias="instanceCount",
        ge=1,
        le=64,
        description="Model instances per replica (per GPU when gpus > 0). Omitted: the repository's value.",
    )


class ModelCacheSpec(ApiModel):
    claim_name: DnsSubdomain = Field(
        ...,
        alias="claimName",
        description=(
            "PersistentVolumeClaim in this namespace bound to a hostPath or local PersistentVolume: the same folder "
            "on each GPU node's own disk. Each node gets a subfolder named after it; versions are staged there by a "
            "short Job on that node and the servers load them from it (read-only)."
        ),
    )
    budget: MemoryQuantity = Field(
        ...,
        description=(
            'Most bytes of staged versions kept per node, such as "200Gi" (give every ModelDeployment sharing the '
            "volume the same value). Versions no pod on the node serves are evicted least recently used first; a "
            "version that does not fit is still staged for its pods, outside the budget, and status says so."
        ),
    )
    nodes: Literal["PodNodes", "EligibleNodes"] = Field(
        "PodNodes",
        description=(
            "Where versions are staged. PodNodes: the nodes this deployment's pods run on. EligibleNodes: also every "
            "Ready, schedulable node its servers could run on (nodeSelector, required node affinity, tolerated "
            "taints, GPUs), so a pod the autoscaler adds on another node starts warm; the operator lists Nodes for it."
        ),
    )


class ModelSpec(ApiModel):
    name: str | None = Field(
        None,
        pattern=TRITON_MODEL_NAME_PATTERN,
        max_length=128,
        description="Triton model name: a folder at the repository root. Omitted: metadata.name.",
    )
    repository: RepositoryUri = Field(
        ...,
        description=(
            "Root of a Triton model repository: pvc://<claim>[/<subpath>], s3://<bucket>[/<path>] (AWS) or "
            "s3://[http(s)://]<host>:<port>/<bucket>[/<path>] (an S3-compatible endpoint such as MinIO or Ceph RGW), "
            "gs://<bucket>[/<path>] or file:///<absolute path> (hostPath, for dev clusters)."
        ),
    )
    version: int | None = Field(
        None,
        ge=1,
        le=2_147_483_647,
        description="Version folder to serve. Omitted: the highest version present in the repository.",
    )
    config: ModelConfigOverrides | None = Field(
        None, description="Overrides applied on top of the repository's config.pbtxt."
    )
    credentials_secret: DnsSubdomain | None = Field(
        None,
        alias="credentialsSecret",
        description=(
            "Secret in this namespace with storage credentials for s3:// (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, optional AWS_DEFAULT_REGION) or gs:// (key file under 'credentials.json')."
        ),
    )
    cache: ModelCacheSpec | None = Field(
        None,
        description=(
            "Keep versions on the nodes' local disks (pvc://, file://, and s3:// with credentialsSecret): a pod "
            "whose node holds its version starts without fetching it, and a switch stages the new version on "
            "every node first. Omitted: the servers read the repository at load time."
        ),
    )


class ResourceSettings(ApiModel):
    cpu: CpuQuantity | None = Field(
        None, description='CPU per replica (request and limit), at least 1m, e.g. "4" or "500m".'
    )
    memory: MemoryQuantity | None = Field(
        None, description='Memory per replica (request and limit) in whole bytes, e.g. "16Gi".'
    )


class Toleration(ApiModel):
    # What Kubernetes checks in a Pod's tolerations (ValidateTolerations), with messages of our own.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                    "must be Exists when key is empty (a toleration without a key tolerates every taint)",
                    field_path=".operator",
                ),
                cel(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "must be empty when operator is Exists (Exists matches every value of the key)",
                    field_path=".value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "may be set only with effect NoExecute (how long the pod stays after a NoExecute taint appears)",
                    field_path=".tolerationSeconds",
                ),
            ]
        }
    )

    key: TolerationKey | None = Field(
        None, description="Taint key the toleration applies to (a label key); empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (default Equal); Exists when key is empty."
    )
    value: LabelValue | None = Field(
        None, description="Taint value to match when operator is Equal (a label value); empty with Exists."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None,
        alias="tolerationSeconds",
        description="Only with effect NoExecute: how long the pod stays bound after the taint.",
    )


class EnvVar(ApiModel):
    name: EnvName = Field(..., description=f"Environment variable name (not {OPERATOR_ENV}, which the operator sets).")
    value: str = Field("", description="Value of the environment variable.")


class SecretName(ApiModel):
    """A Secret in the ModelDeployment's namespace, named as in a Pod's imagePullSecrets."""

    name: DnsSubdomain = Field(
        ...,
        description=(
            "Name of a Secret of type kubernetes.io/dockerconfigjson in this namespace (a DNS-1123 subdomain), "
            "e.g. made by `kubectl create secret docker-registry`."
        ),
    )


class ServerSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.gpus) || self.gpus <= 1 || !has(self.gpuResourceName) "
                    "|| !self.gpuResourceName.startsWith('nvidia.com/mig-')",
                    "must be 0 or 1 with a MIG profile as gpuResourceName: a CUDA process sees only one MIG device, "
                    "so Triton would leave the others idle (use more replicas instead)",
                    field_path=".gpus",
                )
            ]
        }
    )

    image: ImageReference = Field(DEFAULT_IMAGE, description="tritonserver container image.")
    gpus: int = Field(
        1,
        ge=0,
        le=MAX_GPUS_PER_REPLICA,
        description=f"GPUs per replica (0 = CPU-only serving), at most {MAX_GPUS_PER_REPLICA}.",
    )
    gpu_resource_name: GpuResourceName = Field(
        "nvidia.com/gpu",
        alias="gpuResourceName",
        description="Extended resource to request: nvidia.com/gpu, or a MIG profile such as nvidia.com/mig-1g.10gb.",
    )
    resources: ResourceSettings | None = Field(None, description="CPU and memory per replica.")
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        alias="nodeSelector",
        description="Node labels the replicas must run on (label keys and values).",
        json_schema_extra={
            "maxProperties": 64,
            "x-kubernetes-validations": [
                cel(
                    f"self.all(key, {cel_label_key('key')})",
                    # Names the first bad key (the API server cannot afford to list them all).
                    message_expression=f"'key \"' + self.filter(key, !{cel_label_key('key')})[0] + '\" "
                    + LABEL_KEY_MESSAGE.replace("'", "\\'")
                    + "'",
                )
            ],
        },
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the replicas tolerate.", json_schema_extra={"maxItems": 64}
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="Pod affinity/anti-affinity/node affinity, as in a Pod spec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: DnsSubdomain | None = Field(
        None, alias="priorityClassName", description="PriorityClass of the replicas."
    )
    runtime_class_name: DnsSubdomain | None = Field(
        None, alias="runtimeClassName", description="RuntimeClass of the replicas (e.g. nvidia)."
    )
    service_account_name: DnsSubdomain | None = Field(
        None,
        alias="serviceAccountName",
        description=(
            "ServiceAccount in this namespace that the replicas (and the verification Jobs) run as, a DNS-1123 "
            "subdomain. Omitted: the namespace's default. Give it a cloud identity for s3:// or gs:// without "
            "model.credentialsSecret: EKS IAM roles for service accounts (annotation eks.amazonaws.com/role-arn) "
            "or Pod Identity, GKE Workload Identity (iam.gke.io/gcp-service-account). The pods still mount no "
            "Kubernetes API token (automountServiceAccountToken: false); the operator never reads the "
            "ServiceAccount."
        ),
    )
    image_pull_secrets: list[SecretName] = Field(
        default_factory=list,
        alias="imagePullSecrets",
        max_length=MAX_IMAGE_PULL_SECRETS,
        description=(
            "Secrets in this namespace to pull server.image with (and the operator's image, which the "
            "verification Jobs run), as in a Pod: [{name: <secret>}], at most "
            f"{MAX_IMAGE_PULL_SECRETS}, each name once. For a mirrored or private Triton image."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")
    extra_args: list[ExtraArg] = Field(
        default_factory=list,
        alias="extraArgs",
        max_length=32,
        description=(
            "Extra tritonserver flags. Flags the operator owns are refused: "
            + ", ".join(f"--{flag}" for flag in OWNED_FLAGS)
            + "."
        ),
    )


class PrometheusSource(ApiModel):
    url: PrometheusUrl = Field(..., description="Prometheus base URL, e.g. http://prometheus.monitoring:9090.")


TOKEN_TARGET_REQUIRED = (
    "must set timeToFirstTokenMs, interTokenLatencyMs or both (milliseconds, at least 1): "
    "a tokenLatency without either states no target"
)


class TokenLatencyTargets(ApiModel):
    """Token-level targets of a generative model that streams its output, one response per token."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.timeToFirstTokenMs) || has(self.interTokenLatencyMs)", TOKEN_TARGET_REQUIRED)
            ]
        }
    )

    percentile: Percentile = Field(
        95,
        description=(
            "The percentile both targets hold at, between 50 and 99.9 (default 95): e.g. 95 means 95% of first "
            "tokens come within timeToFirstTokenMs and 95% of the gaps between tokens last at most "
            "interTokenLatencyMs."
        ),
    )
    time_to_first_token_ms: int | None = Field(
        None,
        alias="timeToFirstTokenMs",
        ge=1,
        le=3_600_000,
        description=(
            "Time to first token (TTFT) target in milliseconds: from the request's arrival to its first "
            "response. Includes the wait for a batch slot or KV-cache room and the prompt's prefill."
        ),
    )
    inter_token_latency_ms: int | None = Field(
        None,
        alias="interTokenLatencyMs",
        ge=1,
        le=3_600_000,
        description=(
            "Inter-token latency (ITL) target in milliseconds: the time between two tokens of one response "
            "stream, which grows with the number of requests generated together."
        ),
    )

    @model_validator(mode="after")
    def _one_target_at_least(self) -> TokenLatencyTargets:
        if self.time_to_first_token_ms is None and self.inter_token_latency_ms is None:
            raise ValueError(TOKEN_TARGET_REQUIRED)
        return self


LatencyMetric = Literal["p95", "p99", "average", "queue"]  # spec.autoscaling.metric
LATENCY_METRICS: tuple[str, ...] = get_args(LatencyMetric)


class AutoscalingSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be less than or equal to maxReplicas",
                    field_path=".minReplicas",
                ),
                cel(
                    # At most, not below: maxReplicas 1 with the default spareReplicas 1 must stay valid.
                    "!has(self.spareReplicas) || self.spareReplicas <= self.maxReplicas",
                    "spareReplicas must be at most maxReplicas (the spare capacity has to fit in the replicas allowed)",
                    field_path=".spareReplicas",
                ),
            ]
        }
    )

    min_replicas: int = Field(1, alias="minReplicas", ge=1, le=MAX_REPLICAS, description="Fewest replicas.")
    max_replicas: int = Field(..., alias="maxReplicas", ge=1, le=MAX_REPLICAS, description="Most replicas.")
    metric: LatencyMetric = Field(
        "p95",
        description=(
            "Latency the autoscaler keeps at or under target, from Triton's own metrics: p95 or p99 (request "
            "latency 95th or 99th percentile), average (mean request latency) or queue (mean time queued). With "
            "the target it decides how busy each replica may run (a queueing model of each pod, learned from its "
            "own metrics)."
        ),
    )
    target_latency_ms: int = Field(
        ...,
        alias="targetLatencyMs",
        ge=1,
        le=3_600_000,
        description=(
            "Target latency in milliseconds (integer). It drives sizing: a looser target lets each replica run "
            "busier (fewer replicas), a tighter one buys more; a target at or below the model's own service time "
            "is reported (LatencyWithinTarget=False, TargetBelowServiceTime), not chased to maxReplicas."
        ),
    )
    spare_replicas: int | None = Field(
        None,
        alias="spareReplicas",
        ge=0,
        le=MAX_SPARE_REPLICAS,
        description=(
            "Optional floor of idle capacity, in replicas' worth: replicas >= load + spareReplicas / (1 + load), "
            "load being demand / one replica's capacity (all of it when idle, shrinking as load grows). Unset (the "
            "default): the autoscaler derives the headroom from the target, the measured pod start time and the "
            "error of its own demand forecast; for its first 10 minutes of traffic, while the bursts are unknown, it "
            "keeps a reserve of 3 (less for a loose target). 0: no reserve at all. Never above maxReplicas."
        ),
    )
    scale_up_stabilization_seconds: int = Field(
        0,
        alias="scaleUpStabilizationSeconds",
        ge=0,
        le=3600,
        description="Scale up only to the lowest recommendation of this many past seconds.",
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        alias="scaleDownStabilizationSeconds",
        ge=0,
        le=3600,
        description=(
            "Scale down only to the highest recommendation of this many past seconds. With tokenLatency sizing a "
            "generative model, at most this many: down to a fifth of it while the demand forecast has been right "
            "within two Poisson sigmas (smooth traffic), all of it for bursty traffic."
        ),
    )
    prometheus: PrometheusSource | None = Field(
        None, description="Query this Prometheus instead of scraping the pods' metrics directly."
    )
    token_latency: TokenLatencyTargets | None = Field(
        None,
        alias="tokenLatency",
        description=(
            "Token-level targets for a generative model that streams its output (a decoupled model, e.g. on "
            "Triton's vLLM or TensorRT-LLM backend): time to first token and inter-token latency at a percentile, "
            "e.g. {percentile: 95, timeToFirstTokenMs: 500, interTokenLatencyMs: 50}. Measured from the backend's "
            "metrics when the pods are scraped directly (status.tokenLatency) and judged with targetLatencyMs in "
            "LatencyWithinTarget; where measured, they size the replicas. On tritonserver images tagged 24.11 or "
            "later the operator adds --metrics-config=histogram_latencies=true (Triton's first-response "
            "histogram, the TTFT of backends without their own)."
        ),
    )


MAX_CANARY_STEPS = 10


class CanaryStep(ApiModel):
    weight: int = Field(
        ...,
        ge=1,
        le=99,
        description=(
            "Percent of ready replicas switched to the new version in this step: k = ceil(weight x ready / 100) "
            "pods, at least 1 and at most ready - 1 (the traffic share is about k / ready: Services balance by pod)."
        ),
    )
    pause_seconds: int = Field(
        60,
        alias="pauseSeconds",
        ge=0,
        le=86400,
        description="Seconds the step lasts once its canary pods serve; it passes when this elapsed and the last "
        "analysis passed.",
    )


class CanaryAnalysis(ApiModel):
    interval_seconds: int = Field(
        30, alias="intervalSeconds", ge=1, le=3600, description="Seconds between analyses (the window compared)."
    )
    min_requests: int = Field(
        100,
        alias="minRequests",
        ge=1,
        le=1_000_000_000,
        description="Requests each side (canary pods' new version, the other pods' stable version) must have "
        "served in a window for a verdict; fewer: inconclusive, the rollout pauses (it never fails for this).",
    )
    max_latency_increase_percent: int = Field(
        20,
        alias="maxLatencyIncreasePercent",
        ge=0,
        le=10000,
        description="Fail when the canary's compute time per request exceeds the stable version's by more than "
        "this (compute time: a pod's queue does not count).",
    )
    max_error_rate_percent: float = Field(
        1.0,
        alias="maxErrorRatePercent",
        ge=0,
        le=100,
        description="Fail when more than this percent of the canary's requests fail (Triton's failure counter).",
    )
    failure_limit: int = Field(
        1,
        alias="failureLimit",
        ge=0,
        le=100,
        description="Failed analyses tolerated; one more rolls back.",
    )
    fast_fail_errors: int = Field(
        20,
        alias="fastFailErrors",
        ge=1,
        le=1_000_000,
        description="This many failed canary requests within one window roll back at once, without waiting "
        "for minRequests or the interval.",
    )


class CanarySpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.all(s, self.steps.filter(t, t.weight == s.weight).size() == 1) "
                    "&& self.steps.map(s, s.weight).isSorted()",
                    "canary.steps weights must increase from step to step (e.g. 10, 25, 50), each between 1 and 99",
                    field_path=".steps",
                ),
            ]
        }
    )

    steps: list[CanaryStep] = Field(
        default_factory=lambda: [CanaryStep(weight=25, pause_seconds=60), CanaryStep(weight=50, pause_seconds=60)],
        min_length=1,
        max_length=MAX_CANARY_STEPS,
        description="Increasing weights; after the last step passes, every pod switches (default: 25% then 50%, "
        "60 s each).",
    )
    analysis: CanaryAnalysis = Field(default_factory=lambda: CanaryAnalysis(), description="How each step is judged.")


class RolloutSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.canary) || self.strategy == 'Canary'",
                    "rollout.canary is only used with rollout.strategy: Canary (allowed strategies: InPlace, "
                    "Recreate, Rolling, Canary)",
                    field_path=".canary",
                ),
            ]
        }
    )

    strategy: Literal["InPlace", "Recreate", "Rolling", "Canary"] = Field(
        "InPlace",
        description=(
            "How a version or config change reaches the servers. InPlace: load the new version in every running "
            "Triton through the model control API, then retire the old one (no pod restarts). Canary: in place on "
            "a few pods first, judged on Triton's per-version metrics against the other pods, then every pod, or "
            "back in place on regression. Recreate: stop all pods, then start new ones. Rolling: replace pods one "
            "at a time."
        ),
    )
    canary: CanarySpec | None = Field(
        None, description="Steps and analysis of strategy: Canary (defaults apply when omitted)."
    )
    allow_swap_downtime: bool = Field(
        False,
        alias="allowSwapDowntime",
        description=(
            "InPlace, when the new version does not fit beside the old one in device memory: with several "
            "replicas the operator swaps pod by pod (one out of service at a time, the others serve). With one "
            "replica that means downtime, which happens only when this is true (status says so first); "
            "otherwise the old version keeps serving and ModelLoaded=False InsufficientMemoryForSwitch."
        ),
    )

    @property
    def in_place(self) -> bool:
        """Versions switch inside the running servers (InPlace, and Canary's steps)."""
        return self.strategy in ("InPlace", "Canary")

    @property
    def canary_settings(self) -> CanarySpec | None:
        """The canary's settings when the strategy is Canary (defaults when omitted), else None."""
        return (self.canary or CanarySpec()) if self.strategy == "Canary" else None


class ModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.replicas) && has(self.autoscaling))",
                    "replicas and autoscaling are mutually exclusive: remove spec.replicas to autoscale, "
                    "or spec.autoscaling to set replicas by hand",
                    field_path=".replicas",
                ),
                cel(
                    "!has(self.model.cache) || self.model.repository.startsWith('pvc://') "
                    "|| self.model.repository.startsWith('file://') "
                    "|| (self.model.repository.startsWith('s3://') && has(self.model.credentialsSecret))",
                    "model.cache needs a repository a staging Job can read: pvc://, file://, or s3:// with "
                    "model.credentialsSecret (gs:// and s3:// through the pods' own identity are not staged)",
                    field_path=".model.cache",
                ),
                cel(
                    "!has(self.model.credentialsSecret) || !self.model.repository.startsWith('gs://') "
                    f"|| !has(self.server.env) || !self.server.env.exists(env, env.name == '{GCS_CREDENTIALS_ENV}')",
                    f"must not set {GCS_CREDENTIALS_ENV} with a gs:// repository and model.credentialsSecret: "
                    "the operator points it at the mounted credentials.json",
                    field_path=".server.env",
                ),
            ]
        }
    )

    model: ModelSpec = Field(..., description="The model to serve and where its repository lives.")
    server: ServerSpec = Field(default_factory=ServerSpec, description="How each tritonserver replica runs.")
    replicas: int | None = Field(
        None,
        ge=0,
        le=MAX_REPLICAS,
        description="Replicas when autoscaling is absent (default 1). `kubectl scale` sets this field.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        None, description="Scale replicas from measured latency (mutually exclusive with replicas)."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="How version and config changes are rolled out."
    )

    def model_name(self, resource_name: str) -> str:
        return self.model.name or resource_name


class ModelDeployment(ApiModel):
    """What the operator reads from a ModelDeployment body."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=lambda: ModelDeploymentStatus())

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ModelDeployment:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation", 1),
            spec=ModelDeploymentSpec.model_validate(body.get("spec") or {}),
            status=ModelDeploymentStatus.parse_lenient(body.get("status")),
        )

    @property
    def model_name(self) -> str:
        return self.spec.model_name(self.name)
