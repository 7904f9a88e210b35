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
OWNED_FLAGS_MESSAGE = "the operator owns --model-control-mode"


def base(**spec: Any) -> dict[str, Any]:
    return {"model": {"repository": REPO}, **spec}


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
        base(autoscaling={"maxReplicas": 2, "targetLatencyMs": 50, "metric": "p99"}),
        ["spec.autoscaling.metric", 'Unsupported value: "p99"', '"p95", "average", "queue"'],
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
        ["spec.model.repository", "must be pvc://<claim>[/<subpath>], s3://<bucket>[/<path>]"],
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
    ("name-starts-with-digit", "9lives", base(), ["metadata.name", "must be a DNS-1035 label"]),
    ("name-with-dot", "resnet.v2", base(), ["metadata.name", "must be a DNS-1035 label"]),
]

GOOD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("minimal", base()),
    ("pvc", {"model": {"repository": "pvc://models/vision/resnet", "version": 3}}),
    ("s3", {"model": {"repository": "s3://my-bucket/models", "credentialsSecret": "aws"}}),
    ("gs", {"model": {"repository": "gs://my-bucket/models"}}),
    (
        "autoscaled",
        base(autoscaling={"minReplicas": 1, "maxReplicas": 8, "metric": "queue", "targetLatencyMs": 50}),
    ),
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
                "gpus": 2,
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
]


def server_dry_run(cluster: DevCluster, namespace: str, name: str, spec: dict[str, Any]) -> tuple[int, str]:
    manifest = yaml.safe_dump(md_manifest(name, spec, namespace))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    return result.returncode, result.stderr + result.stdout


@pytest.mark.parametrize(("case", "name", "spec", "expected"), BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_is_refused_naming_the_field(
    cluster: DevCluster, crd: None, namespace: str, case: str, name: str, spec: dict[str, Any], expected: list[str]
) -> None:
    code, output = server_dry_run(cluster, namespace, name, spec)
    assert code != 0, f"{case} was accepted"
    assert "is invalid" in output, output
    for fragment in expected:
        assert fragment in output, f"{case}: {fragment!r} not in {output!r}"


@pytest.mark.parametrize(("case", "spec"), GOOD_SPECS, ids=[case[0] for case in GOOD_SPECS])
def test_good_spec_is_accepted_with_defaults(
    cluster: DevCluster, crd: None, namespace: str, case: str, spec: dict[str, Any]
) -> None:
    manifest = yaml.safe_dump(md_manifest("ok", spec, namespace))
    result = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    applied = yaml.safe_load(result.stdout)
    assert applied["spec"]["rollout"]["strategy"] == spec.get("rollout", {}).get("strategy", "InPlace")
    assert applied["spec"]["server"]["image"] == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert applied["spec"]["server"]["gpus"] == spec.get("server", {}).get("gpus", 1)
    if "autoscaling" in spec:
        assert applied["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] == 300
        assert "replicas" not in applied["spec"]
