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
MAX_SPARE_REPLICAS = 100
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
# pvc://claim[/subpath] | s3://[http(s)://host:port/]bucket[/path] | gs://bucket[/path] | file:///absolute/path
# s3:// with host:port is an S3-compatible endpoint (MinIO, Ceph RGW), as Triton spells it; the
# port is what tells Triton that the first segment is an endpoint and not a bucket.
REPOSITORY_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/]+)*/?"
    r"|s3://((https?://)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}/)?[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[^/]+)*/?"
    r"|gs://[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9](/[^/]+)*/?"
    r"|file:///([^/]+/?)*)$"
)
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
TRITON_MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
# Kubernetes name syntaxes (k8s.io/apimachinery/pkg/util/validation), as RE2 for CEL.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MESSAGE = (
    "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter "
    "or digit, at most 253 characters"
)
# A label key: [DNS subdomain prefix (at most 253) + '/'] + name (at most 63).
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_MESSAGE = (
    "must be a label key: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, digits, "
    "'-', '_' or '.' starting and ending with a letter or digit (e.g. nvidia.com/gpu.present)"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
LABEL_VALUE_MESSAGE = (
    "must be a label value: empty, or at most 63 letters, digits, '-', '_' or '.' starting and ending with a "
    "letter or digit"
)
# A container image reference (github.com/distribution/reference), as the kubelet parses it.
_IMAGE_DOMAIN_COMPONENT = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE_DOMAIN = rf"({_IMAGE_DOMAIN_COMPONENT}(\.{_IMAGE_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(:[0-9]+)?"
_IMAGE_PATH_COMPONENT = r"[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^({_IMAGE_DOMAIN}/)?{_IMAGE_PATH_COMPONENT}(/{_IMAGE_PATH_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# Environment variables the operator sets in the tritonserver container (render/objects.py): a
# second entry of the same name would win (the last one does) and break what the operator set.
OPERATOR_ENV = "TRITONOP_CONTROL_KEY"  # the key that unlocks Triton's model control API
GCS_CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"  # gs:// with credentialsSecret


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


def cel_matches(regex: str, message: str) -> JsonDict:
    """A CEL rule: the string matches `regex` (RE2), else `message`."""
    cel_regex = regex.replace("\\", "\\\\")  # inside a CEL string literal
    return cel(f"self.matches('{cel_regex}')", message)


def cel_label_key(var: str) -> str:
    """A CEL condition: the string `var` is a label key (the regex cannot bound the prefix)."""
    return f"({var}.indexOf('/') <= 253 && {var}.matches('" + LABEL_KEY_PATTERN.replace("\\", "\\\\") + "'))"


def cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def cel_string(longest: int, *rules: JsonDict, **python: Any) -> Any:
    """A string checked at admission by CEL rules whose messages say what is allowed.

    Only the API server runs the rules: the operator parses what admission let through, including
    objects stored before a rule existed, and must still parse those (what the API server then
    refuses in an owned object is reported at runtime). `python` are the pydantic constraints the
    field always had, kept for the same reason. `longest` bounds the rules' cost at admission."""
    schema = {"type": "string", "maxLength": longest, "x-kubernetes-validations": list(rules)}
    return Annotated[str, Field(**python), WithJsonSchema(schema)]


# Validated per item, so the error names the offending index (spec.server.extraArgs[2]).
# tritonserver parses flags with getopt_long, which takes any unambiguous abbreviation of a long
# option (--model-control=poll is --model-control-mode=poll), so a flag whose name is a prefix of
# an owned flag is refused too. The `--flag value` form is covered: the flag alone is refused.
ExtraArg = Annotated[
    str,
    Field(
        max_length=256,
        json_schema_extra={
            "minLength": 1,
            "x-kubernetes-validations": [
                cel(
                    "!self.startsWith('--') || self.size() == 2 || !"
                    + cel_list(OWNED_FLAGS)
                    + ".exists(flag, flag.startsWith(self.substring(2).split('=')[0]))",
                    message_expression=(
                        "'must not set ' + self + ': the operator owns "
                        + ", ".join(f"--{flag}" for flag in OWNED_FLAGS)
                        + " (and tritonserver takes any abbreviation of them)'"
                    ),
                )
            ],
        },
    ),
]


def matching(regex: str, message: str, max_length: int, *extra_rules: JsonDict) -> Any:
    """A string constraint checked by CEL at admission (so the error explains itself, unlike a
    bare `pattern`) and by the same regex when the operator parses a body. `extra_rules` are
    checked at admission only (see cel_string)."""

    def check(value: str) -> str:
        if not re.fullmatch(regex, value):
            raise ValueError(message)
        return value

    schema = {
        "type": "string",
        "maxLength": max_length,
        "x-kubernetes-validations": [cel_matches(regex, message), *extra_rules],
    }
    return Annotated[str, Field(max_length=max_length), AfterValidator(check), WithJsonSchema(schema)]


if TYPE_CHECKING:  # the type checker sees the plain type
    RepositoryUri = str
else:
    RepositoryUri = matching(
        REPOSITORY_PATTERN,
        "must be pvc://<claim>[/<subpath>], s3://[http(s)://<host>:<port>/]<bucket>[/<path>], gs://<bucket>[/<path>] "
        "or file:///<absolute path>",
        1024,
        # The path of pvc:// and file:// becomes the volume's subPath or hostPath, which may not go up.
        cel(
            "!(self.startsWith('pvc://') || self.startsWith('file://')) || !self.matches('/\\\\.\\\\.(/|$)')",
            "must not contain a '..' path segment in a pvc:// or file:// path (it becomes the volume's "
            "subPath or hostPath, which may not leave its root)",
        ),
    )
if TYPE_CHECKING:  # the type checker sees the plain type
    GpuResourceName = str
else:
    GpuResourceName = matching(
        r"^nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb(\.[a-z0-9]+)?)$",
        "must be nvidia.com/gpu or a MIG profile such as nvidia.com/mig-1g.10gb",
        253,
    )


if TYPE_CHECKING:  # the type checker sees the plain type
    DnsSubdomain = str
    CpuQuantity = str
    MemoryQuantity = str
    LabelValue = str
    TolerationKey = str
    ImageReference = str
    EnvName = str
else:
    # Secret, PriorityClass and RuntimeClass names: the Deployment is refused with anything else.
    DnsSubdomain = cel_string(253, cel_matches(DNS_SUBDOMAIN_PATTERN, DNS_SUBDOMAIN_MESSAGE), max_length=253)
    # Kubernetes refuses a negative quantity in a Deployment and takes 0, fractional bytes or CPU
    # below 1m with a warning at most; none is a size to run Triton with. The pattern is the Python
    # side's old check.
    CpuQuantity = cel_string(
        64,
        cel(
            "isQuantity(self) && quantity(self).compareTo(quantity('1m')) >= 0",
            'must be a positive CPU quantity of at least 1m, such as "4", "0.5" or "500m"',
        ),
        pattern=QUANTITY_PATTERN,
    )
    MemoryQuantity = cel_string(
        64,
        cel(
            # isInteger() is false for "1.5Gi" (a whole 1610612736 bytes, stored as a decimal), so a
            # value below 2^63 is whole when its approximation has no fraction.
            "isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && (quantity(self).isInteger() "
            "|| (quantity(self).asApproximateFloat() < 9.0e18 "
            "&& double(int(quantity(self).asApproximateFloat())) == quantity(self).asApproximateFloat()))",
            'must be a positive whole number of bytes, such as "16Gi", "512Mi" or "8G" (not a fraction like "0.5")',
        ),
        pattern=QUANTITY_PATTERN,
    )
    LabelValue = cel_string(63, cel_matches(LABEL_VALUE_PATTERN, LABEL_VALUE_MESSAGE))
    TolerationKey = cel_string(
        317,
        cel(
            "self == '' || " + cel_label_key("self"),
            "must be empty (every taint key) or " + LABEL_KEY_MESSAGE.removeprefix("must be "),
        ),
    )
    ImageReference = cel_string(
        1024,
        cel_matches(
            IMAGE_PATTERN,
            "must be a container image reference such as nvcr.io/nvidia/tritonserver:25.10-py3: "
            "[registry[:port]/]repository[:tag][@digest], the repository in lowercase, no spaces",
        ),
        min_length=1,
    )
    EnvName = cel_string(
        256,
        cel_matches(
            r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
            "must consist of letters, digits, '_', '-' and '.', and must not start with a digit",
        ),
        cel(
            f"self != '{OPERATOR_ENV}'",
            f"must not be {OPERATOR_ENV}: the operator sets it (the key that unlocks Triton's model control API)",
        ),
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
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
    metric: Literal["p95", "average", "queue"] = Field(
        "p95",
        description=(
            "Latency the autoscaler keeps at or under target, from Triton's own metrics: p95 (request latency "
            "95th percentile), average (mean request latency) or queue (mean time queued). With the target it "
            "decides how busy each replica may run (a queueing model of each pod, learned from its own metrics)."
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
            "error of its own demand forecast. Never above maxReplicas."
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
        description="Scale down only to the highest recommendation of this many past seconds.",
    )
    prometheus: PrometheusSource | None = Field(
        None, description="Query this Prometheus instead of scraping the pods' metrics directly."
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
    average_ms: int | None = Field(None, alias="averageMs", description="Mean request latency (ms).")
    queue_ms: int | None = Field(None, alias="queueMs", description="Mean queue time (ms).")
    window_seconds: int | None = Field(None, alias="windowSeconds", description="Measurement window (s).")


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


class SideFigures(StatusModel):
    """One side of a canary analysis over its window: the canary pods' new version, or the other
    pods' stable version."""

    requests: int = Field(0, description="Requests served (successes and failures).")
    errors: int = Field(0, description="Failed requests (Triton's nv_inference_request_failure).")
    compute_ms: float | None = Field(None, alias="computeMs", description="Compute time per request (ms).")


class AnalysisStatus(StatusModel):
    result: Literal["Passed", "Failed", "Inconclusive", "FastFailed"] = Field(..., description="The verdict.")
    reason: str = Field(
        ..., description="Healthy, LatencyRegression, ErrorRegression, InsufficientTraffic or ErrorBurst."
    )
    message: str = Field("", description="The figures behind the verdict.")
    canary: SideFigures = Field(default_factory=lambda: SideFigures(), description="The canary side.")
    stable: SideFigures = Field(default_factory=lambda: SideFigures(), description="The stable side.")
    at: str | None = Field(None, description="When it was reached.")


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
    autoscaler: AutoscalerStatus | None = Field(
        None, description="What the autoscaler learned: utilisation for the target, pod start, demand profile."
    )
    integrity: IntegrityStatus | None = Field(
        None, description="Integrity check of the target version's files (absent: storage tritonop cannot verify)."
    )
    last_load: LoadStatus | None = Field(None, alias="lastLoad", description="The most recent model load.")
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
