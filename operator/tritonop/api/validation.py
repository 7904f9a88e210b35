"""The ModelDeployment API's vocabulary: its group and kind, the allowed values and patterns, and
the helpers that put each rule in the CRD schema (CEL) and in the pydantic model at once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

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
MAX_IMAGE_PULL_SECRETS = 16
MIN_PERCENTILE = 50
MAX_PERCENTILE = 99.9
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
    GpuResourceName = str
    PrometheusUrl = str
    DnsSubdomain = str
    CpuQuantity = str
    MemoryQuantity = str
    LabelValue = str
    TolerationKey = str
    ImageReference = str
    EnvName = str
    Percentile = float
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
    GpuResourceName = matching(
        r"^nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb(\.[a-z0-9]+)?)$",
        "must be nvidia.com/gpu or a MIG profile such as nvidia.com/mig-1g.10gb",
        253,
    )
    PrometheusUrl = matching(
        r"^https?://[^\s/:]+(:[0-9]+)?(/\S*)?$",
        "must be an http:// or https:// URL such as http://prometheus.monitoring:9090",
        max_length=2048,
    )
    # Secret, ServiceAccount, PriorityClass and RuntimeClass names: the Deployment is refused with
    # anything else (a bad imagePullSecrets name only fails the pull).
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
    # A CEL rule, not minimum/maximum: the API server's message then gives both bounds.
    Percentile = Annotated[
        float,
        Field(ge=MIN_PERCENTILE, le=MAX_PERCENTILE),
        WithJsonSchema(
            {
                "type": "number",
                "x-kubernetes-validations": [
                    cel(
                        f"self >= {MIN_PERCENTILE:.1f} && self <= {MAX_PERCENTILE}",
                        f"must be a percentile between {MIN_PERCENTILE:g} and {MAX_PERCENTILE:g}, "
                        "such as 90, 95, 99 or 99.9",
                    )
                ],
            }
        ),
    ]


class ApiModel(BaseModel):
    """Base: camelCase in YAML, unknown fields refused (the API server prunes them anyway)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


_QUANTITY_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("200Gi", "8G", "1e9") as whole bytes (rounded down)."""
    match = re.fullmatch(r"([0-9.]+)(?:([eE][0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?)", quantity.strip())
    if match is None:
        raise ValueError(f"{quantity!r} is not a quantity of bytes such as 200Gi")
    number, exponent, suffix = match.groups()
    if exponent:
        return int(float(number + exponent))
    return int(float(number) * _QUANTITY_SUFFIXES[suffix or ""])
