"""Bad specs are refused at admission (CRD schema + CEL), each with a message naming the field.

Sent with `kubectl apply --dry-run=server`: the real API server runs the whole admission chain."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from devcluster import DevCluster

from .helpers import md_manifest

pytestmark = pytest.mark.integration

REPO = "file:///srv/models"
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
OWNED_FLAGS_MESSAGE = "the operator owns --model-control-mode"
CPU_MESSAGE = 'must be a positive CPU quantity of at least 1m, such as "4", "0.5" or "500m"'
MEMORY_MESSAGE = 'must be a positive whole number of bytes, such as "16Gi", "512Mi" or "8G"'
LABEL_KEY_MESSAGE = "a label key: an optional DNS subdomain prefix and '/', then a name of at most 63"
LABEL_VALUE_MESSAGE = "must be a label value: empty, or at most 63 letters, digits, '-', '_' or '.'"
SUBDOMAIN_MESSAGE = "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'"
IMAGE_MESSAGE = "must be a container image reference such as nvcr.io/nvidia/tritonserver:25.10-py3"
DOTDOT_MESSAGE = "must not contain a '..' path segment in a pvc:// or file:// path"
DIGEST = "sha256:" + "0123456789abcdef" * 4
TOKEN_TARGET_MESSAGE = "must set timeToFirstTokenMs, interTokenLatencyMs or both"
PERCENTILE_MESSAGE = "must be a percentile between 50 and 99.9, such as 90, 95, 99 or 99.9"


def base(**spec: Any) -> dict[str, Any]:
    return {"model": {"repository": REPO}, **spec}


def server(**fields: Any) -> dict[str, Any]:
    return base(server=fields)


def tokens(**targets: Any) -> dict[str, Any]:
    return base(autoscaling={"maxReplicas": 4, "targetLatencyMs": 60000, "tokenLatency": targets})


def batching(max_batch_size: int | None, preferred: list[int]) -> dict[str, Any]:
    config: dict[str, Any] = {"dynamicBatching": {"preferredBatchSizes": preferred}}
    if max_batch_size is not None:
        config["maxBatchSize"] = max_batch_size
    return {"model": {"repository": REPO, "config": config}}


# Bad input that passed admission before and failed later (a Deployment the API server refused, a
# pod the kubelet could not start, a config Triton would not load): refused up front now, each
# error naming the field and what is allowed.
LATE_FAILURES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("cpu-negative", "bad", server(resources={"cpu": "-2"}), ["spec.server.resources.cpu", CPU_MESSAGE]),
    ("cpu-zero", "bad", server(resources={"cpu": "0"}), ["spec.server.resources.cpu", CPU_MESSAGE]),
    ("cpu-below-1m", "bad", server(resources={"cpu": "100u"}), ["spec.server.resources.cpu", CPU_MESSAGE]),
    ("cpu-not-a-quantity", "bad", server(resources={"cpu": "4 cores"}), ["spec.server.resources.cpu", CPU_MESSAGE]),
    ("memory-fraction", "bad", server(resources={"memory": "0.5"}), ["spec.server.resources.memory", MEMORY_MESSAGE]),
    (
        "memory-millibytes",
        "bad",
        server(resources={"memory": "500m"}),
        ["spec.server.resources.memory", MEMORY_MESSAGE],
    ),
    ("memory-zero", "bad", server(resources={"memory": "0"}), ["spec.server.resources.memory", MEMORY_MESSAGE]),
    ("memory-negative", "bad", server(resources={"memory": "-16Gi"}), ["spec.server.resources.memory", MEMORY_MESSAGE]),
    ("memory-unit-typo", "bad", server(resources={"memory": "16GB"}), ["spec.server.resources.memory", MEMORY_MESSAGE]),
    (
        "preferred-batch-above-max",
        "bad",
        batching(8, [4, 16]),
        [
            "spec.model.config.dynamicBatching.preferredBatchSizes",
            "each preferred batch size must be at most maxBatchSize",
        ],
    ),
    (
        "preferred-batch-with-batching-off",
        "bad",
        batching(0, [1, 2]),
        [
            "spec.model.config.dynamicBatching.preferredBatchSizes",
            "must be empty when maxBatchSize is 0 (batching off)",
        ],
    ),
    (
        "node-selector-key",
        "bad",
        server(nodeSelector={"gpu type": "a100", "nvidia.com/gpu.present": "true"}),
        ["spec.server.nodeSelector", 'key "gpu type" must be', LABEL_KEY_MESSAGE],
    ),
    (
        "node-selector-key-prefix",
        "bad",
        server(nodeSelector={"NVIDIA.com/gpu": "true"}),
        ["spec.server.nodeSelector", '"NVIDIA.com/gpu"', LABEL_KEY_MESSAGE],
    ),
    (
        "node-selector-value",
        "bad",
        server(nodeSelector={"nvidia.com/gpu.product": "Tesla T4"}),
        ["spec.server.nodeSelector[nvidia.com/gpu.product]", LABEL_VALUE_MESSAGE],
    ),
    (
        "toleration-key",
        "bad",
        server(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}, {"key": "gpu:", "operator": "Exists"}]),
        ["spec.server.tolerations[1].key", LABEL_KEY_MESSAGE],
    ),
    (
        "toleration-value",
        "bad",
        server(tolerations=[{"key": "dedicated", "value": "ml team"}]),
        ["spec.server.tolerations[0].value", LABEL_VALUE_MESSAGE],
    ),
    (
        "toleration-exists-with-value",
        "bad",
        server(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "value": "true"}]),
        ["spec.server.tolerations[0].value", "must be empty when operator is Exists"],
    ),
    (
        "toleration-no-key-equal",
        "bad",
        server(tolerations=[{"effect": "NoSchedule"}]),
        ["spec.server.tolerations[0].operator", "must be Exists when key is empty"],
    ),
    (
        "toleration-seconds-without-noexecute",
        "bad",
        server(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]),
        ["spec.server.tolerations[0].tolerationSeconds", "may be set only with effect NoExecute"],
    ),
    (
        "priority-class-name",
        "bad",
        server(priorityClassName="High_Priority"),
        ["spec.server.priorityClassName", SUBDOMAIN_MESSAGE],
    ),
    (
        "runtime-class-name",
        "bad",
        server(runtimeClassName="NVIDIA"),
        ["spec.server.runtimeClassName", SUBDOMAIN_MESSAGE],
    ),
    (
        "credentials-secret",
        "bad",
        {"model": {"repository": "s3://my-bucket/models", "credentialsSecret": "aws creds"}},
        ["spec.model.credentialsSecret", SUBDOMAIN_MESSAGE],
    ),
    (
        "env-name",
        "bad",
        server(env=[{"name": "1ST_VAR", "value": "x"}]),
        [
            "spec.server.env[0].name",
            "must consist of letters, digits, '_', '-' and '.', and must not start with a digit",
        ],
    ),
    (
        "env-control-key",
        "bad",
        server(env=[{"name": "LOG", "value": "1"}, {"name": "TRITONOP_CONTROL_KEY", "value": "mine"}]),
        ["spec.server.env[1].name", "must not be TRITONOP_CONTROL_KEY: the operator sets it"],
    ),
    (
        "env-gcs-credentials",
        "bad",
        {
            "model": {"repository": "gs://my-bucket/models", "credentialsSecret": "gcs"},
            "server": {"env": [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/tmp/key.json"}]},
        },
        ["spec.server.env", "must not set GOOGLE_APPLICATION_CREDENTIALS with a gs:// repository"],
    ),
    ("image-empty", "bad", server(image=""), ["spec.server.image", IMAGE_MESSAGE]),
    (
        "image-whitespace",
        "bad",
        server(image="nvcr.io/nvidia/tritonserver: 25.10-py3"),
        ["spec.server.image", IMAGE_MESSAGE],
    ),
    (
        "image-uppercase",
        "bad",
        server(image="nvcr.io/NVIDIA/tritonserver:25.10-py3"),
        ["spec.server.image", IMAGE_MESSAGE],
    ),
    ("image-short-digest", "bad", server(image="tritonserver@sha256:abc"), ["spec.server.image", IMAGE_MESSAGE]),
    (
        "mig-with-two-gpus",
        "bad",
        server(gpus=2, gpuResourceName="nvidia.com/mig-1g.10gb"),
        ["spec.server.gpus", "must be 0 or 1 with a MIG profile as gpuResourceName"],
    ),
    (
        "owned-flag-abbreviated",
        "bad",
        server(extraArgs=["--model-control=poll"]),
        ["spec.server.extraArgs[0]", "must not set --model-control=poll", "any abbreviation", OWNED_FLAGS_MESSAGE],
    ),
    (
        "owned-flag-value-apart",
        "bad",
        server(extraArgs=["--log-verbose=1", "--model-repository", "/elsewhere"]),
        ["spec.server.extraArgs[1]", "must not set --model-repository:"],
    ),
    ("empty-extra-arg", "bad", server(extraArgs=[""]), ["spec.server.extraArgs[0]", "at least 1"]),
    (
        "pvc-subpath-up",
        "bad",
        {"model": {"repository": "pvc://models/vision/../../etc"}},
        ["spec.model.repository", DOTDOT_MESSAGE],
    ),
    (
        "hostpath-up",
        "bad",
        {"model": {"repository": "file:///srv/models/.."}},
        ["spec.model.repository", DOTDOT_MESSAGE],
    ),
]


BAD_SPECS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "min-above-max",
        "bad",
        base(autoscaling={"minReplicas": 5, "maxReplicas": 2, "targetLatencyMs": 50}),
        ["spec.autoscaling.minReplicas", "minReplicas must be less than or equal to maxReplicas"],
    ),
    ("negative-replicas", "bad", base(replicas=-1), ["spec.replicas", "greater than or equal to 0"]),
    ("negative-gpus", "bad", base(server={"gpus": -1}), ["spec.server.gpus", "greater than or equal to 0"]),
    ("too-many-gpus", "bad", base(server={"gpus": 17}), ["spec.server.gpus", "less than or equal to 16"]),
    (
        "zero-target-latency",
        "bad",
        base(autoscaling={"maxReplicas": 2, "targetLatencyMs": 0}),
        ["spec.autoscaling.targetLatencyMs", "greater than or equal to 1"],
    ),
    (
        "float-target-latency",
        "bad",
        base(autoscaling={"maxReplicas": 2, "targetLatencyMs": 50.5}),
        ["spec.autoscaling.targetLatencyMs", "integer"],
    ),
    (
        "zero-max-replicas",
        "bad",
        base(autoscaling={"minReplicas": 0, "maxReplicas": 0, "targetLatencyMs": 50}),
        ["spec.autoscaling.maxReplicas", "spec.autoscaling.minReplicas", "greater than or equal to 1"],
    ),
    (
        "unknown-metric",
        "bad",
        base(autoscaling={"maxReplicas": 2, "targetLatencyMs": 50, "metric": "p90"}),
        ["spec.autoscaling.metric", 'Unsupported value: "p90"', '"p95", "p99", "average", "queue"'],
    ),
    (
        "replicas-with-autoscaling",
        "bad",
        base(replicas=2, autoscaling={"maxReplicas": 4, "targetLatencyMs": 50}),
        ["spec.replicas", "replicas and autoscaling are mutually exclusive"],
    ),
    (
        "unknown-scheme",
        "bad",
        {"model": {"repository": "ftp://models/vision"}},
        [
            "spec.model.repository",
            "must be pvc://<claim>[/<subpath>], s3://[http(s)://<host>:<port>/]<bucket>[/<path>]",
        ],
    ),
    (
        "s3-endpoint-without-port",
        "bad",
        {"model": {"repository": "s3://http://minio.storage.svc/models"}},
        ["spec.model.repository", "s3://[http(s)://<host>:<port>/]<bucket>[/<path>]"],
    ),
    (
        "no-scheme",
        "bad",
        {"model": {"repository": "models/vision"}},
        ["spec.model.repository", "file:///<absolute path>"],
    ),
    ("empty-claim", "bad", {"model": {"repository": "pvc://"}}, ["spec.model.repository", "must be pvc://"]),
    (
        "relative-file-path",
        "bad",
        {"model": {"repository": "file://relative/path"}},
        ["spec.model.repository", "must be pvc://"],
    ),
    ("missing-repository", "bad", {"model": {"name": "x"}}, ["spec.model.repository", "Required value"]),
    ("zero-version", "bad", {"model": {"repository": REPO, "version": 0}}, ["spec.model.version", "greater than"]),
    (
        "owned-flag-control-mode",
        "bad",
        base(server={"extraArgs": ["--log-verbose=1", "--model-control-mode=poll"]}),
        ["spec.server.extraArgs[1]", "must not set --model-control-mode=poll", OWNED_FLAGS_MESSAGE],
    ),
    (
        "owned-flag-port",
        "bad",
        base(server={"extraArgs": ["--http-port=9000"]}),
        ["spec.server.extraArgs[0]", "must not set --http-port=9000"],
    ),
    (
        "owned-flag-restricted-api",
        "bad",
        base(server={"extraArgs": ["--http-restricted-api=model-repository:k=v"]}),
        ["spec.server.extraArgs[0]", "must not set --http-restricted-api"],
    ),
    (
        "owned-flag-repository",
        "bad",
        base(server={"extraArgs": ["--model-repository=/elsewhere"]}),
        ["spec.server.extraArgs[0]", "must not set --model-repository=/elsewhere"],
    ),
    (
        "unknown-gpu-resource",
        "bad",
        base(server={"gpuResourceName": "amd.com/gpu"}),
        ["spec.server.gpuResourceName", "must be nvidia.com/gpu or a MIG profile"],
    ),
    (
        "unknown-strategy",
        "bad",
        base(rollout={"strategy": "BlueGreen"}),
        ["spec.rollout.strategy", '"InPlace", "Recreate", "Rolling"'],
    ),
    (
        "zero-instance-count",
        "bad",
        {"model": {"repository": REPO, "config": {"instanceCount": 0}}},
        ["spec.model.config.instanceCount", "greater than or equal to 1"],
    ),
    (
        "malformed-prometheus-url",
        "bad",
        base(autoscaling={"maxReplicas": 2, "targetLatencyMs": 50, "prometheus": {"url": "prometheus:9090"}}),
        ["spec.autoscaling.prometheus.url", "must be an http:// or https:// URL"],
    ),
    (
        "negative-stabilization",
        "bad",
        base(autoscaling={"maxReplicas": 2, "targetLatencyMs": 50, "scaleDownStabilizationSeconds": -5}),
        ["spec.autoscaling.scaleDownStabilizationSeconds", "greater than or equal to 0"],
    ),
    (
        "spare-above-max",
        "bad",
        base(autoscaling={"maxReplicas": 3, "targetLatencyMs": 50, "spareReplicas": 4}),
        ["spec.autoscaling.spareReplicas", "spareReplicas must be at most maxReplicas"],
    ),
    (
        "negative-spare",
        "bad",
        base(autoscaling={"maxReplicas": 3, "targetLatencyMs": 50, "spareReplicas": -1}),
        ["spec.autoscaling.spareReplicas", "greater than or equal to 0"],
    ),
    (
        "service-account-name",
        "bad",
        server(serviceAccountName="Triton_S3_Reader"),
        ["spec.server.serviceAccountName", SUBDOMAIN_MESSAGE],
    ),
    (
        "image-pull-secret-name",
        "bad",
        server(imagePullSecrets=[{"name": "ngc"}, {"name": "mirror key"}]),
        ["spec.server.imagePullSecrets[1].name", SUBDOMAIN_MESSAGE],
    ),
    (
        "too-many-pull-secrets",
        "bad",
        server(imagePullSecrets=[{"name": f"pull-{i}"} for i in range(17)]),
        ["spec.server.imagePullSecrets", "must have at most 16 items"],
    ),
    (
        "duplicate-pull-secret",
        "bad",
        server(imagePullSecrets=[{"name": "ngc"}, {"name": "ngc"}]),
        ["spec.server.imagePullSecrets[1]", "Duplicate value"],
    ),
    (
        "pull-secret-without-name",
        "bad",
        server(imagePullSecrets=[{}]),
        ["spec.server.imagePullSecrets[0].name", "Required value"],
    ),
    (
        "pull-secrets-as-strings",  # a Pod's shape is [{name: ...}], not a list of names
        "bad",
        server(imagePullSecrets=["ngc"]),
        ["spec.server.imagePullSecrets[0]", "must be of type object"],
    ),
    ("token-latency-empty", "bad", tokens(), ["spec.autoscaling.tokenLatency", TOKEN_TARGET_MESSAGE]),
    (
        "token-latency-percentile-only",
        "bad",
        tokens(percentile=99),
        ["spec.autoscaling.tokenLatency", TOKEN_TARGET_MESSAGE],
    ),
    (
        "token-latency-percentile-low",
        "bad",
        tokens(percentile=40, timeToFirstTokenMs=500),
        ["spec.autoscaling.tokenLatency.percentile", PERCENTILE_MESSAGE],
    ),
    (
        "token-latency-percentile-100",
        "bad",
        tokens(percentile=100, interTokenLatencyMs=50),
        ["spec.autoscaling.tokenLatency.percentile", PERCENTILE_MESSAGE],
    ),
    (
        "token-latency-ttft-zero",
        "bad",
        tokens(timeToFirstTokenMs=0),
        ["spec.autoscaling.tokenLatency.timeToFirstTokenMs", "greater than or equal to 1"],
    ),
    (
        "token-latency-itl-fraction",
        "bad",
        tokens(timeToFirstTokenMs=500, interTokenLatencyMs=12.5),
        ["spec.autoscaling.tokenLatency.interTokenLatencyMs", "integer"],
    ),
    (
        "token-latency-without-a-request-target",  # targetLatencyMs stays required (sizing reads it)
        "bad",
        base(autoscaling={"maxReplicas": 4, "tokenLatency": {"timeToFirstTokenMs": 500}}),
        ["spec.autoscaling.targetLatencyMs", "Required value"],
    ),
    ("name-starts-with-digit", "9lives", base(), ["metadata.name", "must be a DNS-1035 label"]),
    ("name-with-dot", "resnet.v2", base(), ["metadata.name", "must be a DNS-1035 label"]),
    *LATE_FAILURES,
]

GOOD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("minimal", base()),
    ("pvc", {"model": {"repository": "pvc://models/vision/resnet", "version": 3}}),
    ("s3", {"model": {"repository": "s3://my-bucket/models", "credentialsSecret": "aws"}}),
    ("s3-minio", {"model": {"repository": "s3://minio.storage.svc:9000/models/vision", "credentialsSecret": "minio"}}),
    ("s3-https-ceph", {"model": {"repository": "s3://https://rgw.example.com:443/models", "credentialsSecret": "rgw"}}),
    ("s3-ip-endpoint", {"model": {"repository": "s3://10.0.0.5:9000/models"}}),
    ("gs", {"model": {"repository": "gs://my-bucket/models"}}),
    (
        "autoscaled",
        base(autoscaling={"minReplicas": 1, "maxReplicas": 8, "metric": "queue", "targetLatencyMs": 50}),
    ),
    (
        "autoscaled-with-spare",
        base(autoscaling={"maxReplicas": 8, "targetLatencyMs": 400, "spareReplicas": 3}),
    ),
    (
        "autoscaled-max-1-default-spare",
        base(autoscaling={"maxReplicas": 1, "targetLatencyMs": 400}),
    ),
    (
        "autoscaled-no-spare",
        base(autoscaling={"maxReplicas": 1, "targetLatencyMs": 400, "spareReplicas": 0}),
    ),
    ("token-latency-both", tokens(timeToFirstTokenMs=500, interTokenLatencyMs=50)),
    ("token-latency-ttft-only-p99", tokens(timeToFirstTokenMs=2000, percentile=99)),
    ("token-latency-itl-only-p99.9", tokens(interTokenLatencyMs=40, percentile=99.9)),
    ("token-latency-p50", tokens(timeToFirstTokenMs=300, interTokenLatencyMs=30, percentile=50)),
    (
        "everything",
        {
            "model": {
                "name": "resnet50",
                "repository": REPO,
                "version": 3,
                "config": {
                    "maxBatchSize": 32,
                    "dynamicBatching": {"maxQueueDelayMicroseconds": 500, "preferredBatchSizes": [8, 16]},
                    "instanceCount": 2,
                },
            },
            "server": {
                "gpus": 1,
                "gpuResourceName": "nvidia.com/mig-1g.10gb",
                "resources": {"cpu": "4", "memory": "16Gi"},
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "extraArgs": ["--log-verbose=1", "--exit-timeout-secs=10"],
            },
            "replicas": 2,
            "rollout": {"strategy": "Rolling"},
        },
    ),
    # The new rules are not over-strict: what Kubernetes and Triton take is still accepted.
    ("quantities", server(resources={"cpu": "500m", "memory": "16Gi"})),
    ("quantities-decimal", server(resources={"cpu": "0.5", "memory": "1.5Gi"})),
    ("quantities-smallest", server(resources={"cpu": "1m", "memory": "1"})),
    ("quantities-decimal-si", server(resources={"cpu": "2k", "memory": "1G"})),
    ("preferred-batch-up-to-max", batching(8, [4, 8])),
    # Without maxBatchSize the repository's max_batch_size applies: admission cannot see it.
    ("preferred-batch-repository-max", batching(None, [4, 16])),
    ("batching-off-no-preferred", batching(0, [])),
    (
        "labels",
        server(nodeSelector={"kubernetes.io/hostname": "gpu-node-1", "example.com/pool": "", "A_b.c-D": "Z.y_x-1"}),
    ),
    (
        "tolerations",
        server(
            tolerations=[
                {"operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "ml-team"},
                {"key": "dedicated", "operator": "Equal", "value": "", "effect": "NoExecute", "tolerationSeconds": 30},
            ]
        ),
    ),
    ("class-names", server(priorityClassName="high-priority.example.com", runtimeClassName="nvidia")),
    (
        "identity",
        server(
            serviceAccountName="triton-s3.reader",
            imagePullSecrets=[{"name": "ngc"}, {"name": "registry.example.com"}],
        ),
    ),
    (
        "images",
        server(image=f"registry.example.com:5000/ml/triton-server_x:24.01-py3@{DIGEST}"),
    ),
    ("image-localhost", server(image="localhost:5000/tritonserver")),
    ("image-digest-only", server(image=f"tritonserver@{DIGEST}")),
    ("env", server(env=[{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}, {"name": "my.var-1", "value": ""}])),
    (
        "gcs-credentials-env-without-secret",
        {
            "model": {"repository": "gs://my-bucket/models"},
            "server": {"env": [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/etc/gcs/key.json"}]},
        },
    ),
    ("mig-one-gpu", server(gpus=1, gpuResourceName="nvidia.com/mig-3g.40gb")),
    ("mig-cpu-only", server(gpus=0, gpuResourceName="nvidia.com/mig-1g.10gb")),
    ("several-gpus", server(gpus=4)),
    (
        "extra-args",
        server(
            extraArgs=[
                "--log-verbose=1",
                "--model-load-thread-count=2",
                "--exit-timeout-secs",
                "10",
                "--metrics-interval-ms=1000",
            ]
        ),
    ),
    ("dots-in-paths", {"model": {"repository": "pvc://models/v1..2/..hidden/./x"}}),
]


def server_dry_run(cluster: DevCluster, namespace: str, name: str, spec: dict[str, Any]) -> tuple[int, str]:
    manifest = yaml.safe_dump(md_manifest(name, spec, namespace))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    return result.returncode, result.stderr + result.stdout


@pytest.mark.parametrize(("case", "name", "spec", "expected"), BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_is_refused_naming_the_field(
    cluster: DevCluster,
    crd: None,
    dry_run_namespace: str,
    case: str,
    name: str,
    spec: dict[str, Any],
    expected: list[str],
) -> None:
    code, output = server_dry_run(cluster, dry_run_namespace, name, spec)
    assert code != 0, f"{case} was accepted"
    assert "is invalid" in output, output
    for fragment in expected:
        assert fragment in output, f"{case}: {fragment!r} not in {output!r}"


@pytest.mark.parametrize(("case", "spec"), GOOD_SPECS, ids=[case[0] for case in GOOD_SPECS])
def test_good_spec_is_accepted_with_defaults(
    cluster: DevCluster, crd: None, dry_run_namespace: str, case: str, spec: dict[str, Any]
) -> None:
    manifest = yaml.safe_dump(md_manifest("ok", spec, dry_run_namespace))
    result = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    applied = yaml.safe_load(result.stdout)
    assert applied["spec"]["rollout"]["strategy"] == spec.get("rollout", {}).get("strategy", "InPlace")
    assert applied["spec"]["server"]["image"] == spec.get("server", {}).get("image", DEFAULT_IMAGE)
    assert applied["spec"]["server"]["gpus"] == spec.get("server", {}).get("gpus", 1)
    if "autoscaling" in spec:
        assert applied["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] == 300
        assert "replicas" not in applied["spec"]
        if "tokenLatency" in spec["autoscaling"]:  # the percentile defaults to 95
            wanted = {"percentile": 95, **spec["autoscaling"]["tokenLatency"]}
            assert applied["spec"]["autoscaling"]["tokenLatency"] == wanted
        else:
            assert "tokenLatency" not in applied["spec"]["autoscaling"], "absent unless set"
