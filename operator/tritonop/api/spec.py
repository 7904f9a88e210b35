"""The ModelDeployment API (tritonop.dev/v1alpha1) as pydantic models: the one source of truth.

The CRD's OpenAPI schema (crds/) is generated from these models (see crd.py), so every field's
description, default, bound and CEL rule lives here, next to the type the operator parses.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict

API_GROUP = "tritonop.dev"
API_VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
MAX_GPUS_PER_REPLICA = 16
MAX_REPLICAS = 1000
REPOSITORY_SCHEMES = ("pvc", "s3", "gs", "file")
# tritonserver flags the operator sets itself; extraArgs may not touch them.
OWNED_FLAGS = (
    "model-control-mode",
    "model-repository",
    "model-store",
    "load-model",
    "http-port",
    "grpc-port",
    "metrics-port",
    "http-address",
    "grpc-address",
    "metrics-address",
    "http-restricted-api",
    "grpc-restricted-protocol",
    "allow-http",
    "allow-grpc",
    "allow-metrics",
)
_OWNED_FLAG_REGEX = "^--(" + "|".join(OWNED_FLAGS) + ")(=.*)?$"
# pvc://claim[/subpath] | s3://bucket[/path] | gs://bucket[/path] | file:///absolute/path
REPOSITORY_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/]+)*/?"
    r"|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[^/]+)*/?"
    r"|gs://[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9](/[^/]+)*/?"
    r"|file:///([^/]+/?)*)$"
)
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
TRITON_MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


def cel(
    rule: str, message: str | None = None, message_expression: str | None = None, field_path: str | None = None
) -> JsonDict:
    validation: JsonDict = {"rule": rule}
    if field_path:
        validation["fieldPath"] = field_path  # the error names this field, not the object
    if message:
        validation["message"] = message
    if message_expression:
        validation["messageExpression"] = message_expression
    return validation


# Validated per item, so the error names the offending index (spec.server.extraArgs[2]).
ExtraArg = Annotated[
    str,
    Field(
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!self.matches('{_OWNED_FLAG_REGEX}')",
                    message_expression=(
                        "'must not set ' + self + ': the operator owns "
                        + ", ".join(f"--{flag}" for flag in OWNED_FLAGS)
                        + "'"
                    ),
                )
            ]
        },
    ),
]


def matching(regex: str, message: str, max_length: int) -> Any:
    """A string constraint checked by CEL at admission (so the error explains itself, unlike a
    bare `pattern`) and by the same regex when the operator parses a body."""

    def check(value: str) -> str:
        if not re.fullmatch(regex, value):
            raise ValueError(message)
        return value

    cel_regex = regex.replace("\\", "\\\\")  # inside a CEL string literal
    schema = {
        "type": "string",
        "maxLength": max_length,
        "x-kubernetes-validations": [cel(f"self.matches('{cel_regex}')", message)],
    }
    return Annotated[str, Field(max_length=max_length), AfterValidator(check), WithJsonSchema(schema)]


if TYPE_CHECKING:  # the type checker sees the plain type
    RepositoryUri = str
else:
    RepositoryUri = matching(
        REPOSITORY_PATTERN,
        "must be pvc://<claim>[/<subpath>], s3://<bucket>[/<path>], gs://<bucket>[/<path>] or file:///<absolute path>",
        max_length=1024,
    )
if TYPE_CHECKING:  # the type checker sees the plain type
    GpuResourceName = str
else:
    GpuResourceName = matching(
        r"^nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb(\.[a-z0-9]+)?)$",
        "must be nvidia.com/gpu or a MIG profile such as nvidia.com/mig-1g.10gb",
        max_length=253,
    )


class ApiModel(BaseModel):
    """Base: camelCase in YAML, unknown fields refused (the API server prunes them anyway)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


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

    max_batch_size: int | None = Field(
        None,
        alias="maxBatchSize",
        ge=0,
        le=65536,
        description="Largest batch Triton forms (0 disables batching). Omitted: the repository's value.",
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
            "Root of a Triton model repository: pvc://<claim>[/<subpath>], s3://<bucket>[/<path>], "
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
    credentials_secret: str | None = Field(
        None,
        alias="credentialsSecret",
        max_length=253,
        description=(
            "Secret in this namespace with storage credentials for s3:// (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, optional AWS_DEFAULT_REGION) or gs:// (key file under 'credentials.json')."
        ),
    )


class ResourceSettings(ApiModel):
    cpu: str | None = Field(
        None, pattern=QUANTITY_PATTERN, description='CPU per replica (request and limit), e.g. "4" or "500m".'
    )
    memory: str | None = Field(
        None, pattern=QUANTITY_PATTERN, description='Memory per replica (request and limit), e.g. "16Gi".'
    )


class Toleration(ApiModel):
    key: str | None = Field(None, description="Taint key the toleration applies to; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, alias="tolerationSeconds", description="For NoExecute: how long the pod stays bound after the taint."
    )


class EnvVar(ApiModel):
    name: str = Field(..., pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Environment variable name.")
    value: str = Field("", description="Value of the environment variable.")


class ServerSpec(ApiModel):
    image: str = Field(DEFAULT_IMAGE, min_length=1, description="tritonserver container image.")
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
    node_selector: dict[str, str] = Field(
        default_factory=dict, alias="nodeSelector", description="Node labels the replicas must run on."
    )
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the replicas tolerate.")
    affinity: dict[str, Any] | None = Field(
        None,
        description="Pod affinity/anti-affinity/node affinity, as in a Pod spec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(
        None, alias="priorityClassName", max_length=253, description="PriorityClass of the replicas."
    )
    runtime_class_name: str | None = Field(
        None, alias="runtimeClassName", max_length=253, description="RuntimeClass of the replicas (e.g. nvidia)."
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


if TYPE_CHECKING:  # the type checker sees the plain type
    PrometheusUrl = str
else:
    PrometheusUrl = matching(
        r"^https?://[^\s/:]+(:[0-9]+)?(/\S*)?$",
        "must be an http:// or https:// URL such as http://prometheus.monitoring:9090",
        max_length=2048,
    )


class PrometheusSource(ApiModel):
    url: PrometheusUrl = Field(..., description="Prometheus base URL, e.g. http://prometheus.monitoring:9090.")


class AutoscalingSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be less than or equal to maxReplicas",
                    field_path=".minReplicas",
                )
            ]
        }
    )

    min_replicas: int = Field(1, alias="minReplicas", ge=1, le=MAX_REPLICAS, description="Fewest replicas.")
    max_replicas: int = Field(..., alias="maxReplicas", ge=1, le=MAX_REPLICAS, description="Most replicas.")
    metric: Literal["p95", "average", "queue"] = Field(
        "p95",
        description=(
            "Latency the autoscaler keeps at or under target, from Triton's own metrics: p95 (request latency "
            "95th percentile), average (mean request latency) or queue (mean time queued)."
        ),
    )
    target_latency_ms: int = Field(
        ..., alias="targetLatencyMs", ge=1, le=3_600_000, description="Target latency in milliseconds (integer)."
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
        description="Scale down only to the highest recommendation of this many past seconds.",
    )
    prometheus: PrometheusSource | None = Field(
        None, description="Query this Prometheus instead of scraping the pods' metrics directly."
    )


class RolloutSpec(ApiModel):
    strategy: Literal["InPlace", "Recreate", "Rolling"] = Field(
        "InPlace",
        description=(
            "How a version or config change reaches the servers. InPlace: load the new version in every running "
            "Triton through the model control API, then retire the old one (no pod restarts). Recreate: stop all "
            "pods, then start new ones. Rolling: replace pods one at a time."
        ),
    )


class ModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.replicas) && has(self.autoscaling))",
                    "replicas and autoscaling are mutually exclusive: remove spec.replicas to autoscale, "
                    "or spec.autoscaling to set replicas by hand",
                    field_path=".replicas",
                )
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


# -- status ------------------------------------------------------------------------------
class Condition(ApiModel):
    type: str = Field(..., description="Ready, RepositoryValid, Scheduled, ModelLoaded, Progressing, ...")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str = Field(..., description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable details.")
    last_transition_time: str = Field(..., alias="lastTransitionTime", description="When status last changed.")
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="metadata.generation this condition was computed for."
    )


class LatencyStatus(ApiModel):
    p95_ms: int | None = Field(None, alias="p95Ms", description="95th percentile request latency (ms).")
    average_ms: int | None = Field(None, alias="averageMs", description="Mean request latency (ms).")
    queue_ms: int | None = Field(None, alias="queueMs", description="Mean queue time (ms).")
    window_seconds: int | None = Field(None, alias="windowSeconds", description="Measurement window (s).")


class EndpointStatus(ApiModel):
    http: str | None = Field(None, description="In-cluster HTTP endpoint (host:port).")
    grpc: str | None = Field(None, description="In-cluster gRPC endpoint (host:port).")


class ModelDeploymentStatus(ApiModel):
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="metadata.generation the status reflects."
    )
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
    endpoint: EndpointStatus | None = Field(None, description="Where clients reach the model.")
    last_scale_time: str | None = Field(None, alias="lastScaleTime", description="When replicas last changed.")
    ready_summary: str | None = Field(None, alias="readySummary", description="readyReplicas/replicas, for kubectl.")
    reason: str | None = Field(None, description="Reason of a non-True Ready condition, for kubectl get.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, RepositoryValid, Scheduled, ModelLoaded, Progressing, LatencyWithinTarget.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ModelDeployment(ApiModel):
    """What the operator reads from a ModelDeployment body."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelDeploymentSpec
    status: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ModelDeployment:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation", 1),
            spec=ModelDeploymentSpec.model_validate(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )

    @property
    def model_name(self) -> str:
        return self.spec.model_name(self.name)
