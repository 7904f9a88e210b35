"""Render functions are pure: whole objects compared against expected ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tritonop.api.spec import ModelDeployment
from tritonop.cache.plan import LiveOwners
from tritonop.render.objects import (
    RenderInputs,
    render_control_key_secret,
    render_deployment,
    render_pdb,
    render_service,
    render_stage_job,
    render_verify_job,
    rollout_hash,
    stage_job_name,
    verifies_where_the_bytes_are,
    verify_job_name,
)


def model_deployment(**spec: Any) -> ModelDeployment:
    body_spec = {"model": {"repository": "file:///srv/models", "version": 3}, "replicas": 2, **spec}
    return ModelDeployment.from_body(
        {"metadata": {"name": "resnet50", "namespace": "vision", "uid": "uid-1", "generation": 4}, "spec": body_spec}
    )


LABELS = {
    "app.kubernetes.io/name": "tritonserver",
    "app.kubernetes.io/instance": "resnet50",
    "app.kubernetes.io/managed-by": "tritonop",
    "tritonop.dev/model-deployment": "resnet50",
    "app.kubernetes.io/component": "model-server",
}
SELECTOR = {
    "app.kubernetes.io/name": "tritonserver",
    "app.kubernetes.io/instance": "resnet50",
    "app.kubernetes.io/managed-by": "tritonop",
}
METADATA = {
    "name": "resnet50",
    "namespace": "vision",
    "labels": LABELS,
    "ownerReferences": [
        {
            "apiVersion": "tritonop.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "resnet50",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ],
}
KEY = "$(TRITONOP_CONTROL_KEY)"


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


EXPECTED_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": METADATA,
    "spec": {
        "replicas": 2,
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": SELECTOR},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": LABELS,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "8002",
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "containers": [
                    {
                        "name": "tritonserver",
                        "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
                        "command": ["tritonserver"],
                        "args": [
                            "--model-repository=/models",
                            "--model-control-mode=explicit",
                            "--http-port=8000",
                            "--grpc-port=8001",
                            "--metrics-port=8002",
                            f"--http-restricted-api=model-repository:tritonop-control-key={KEY}",
                            f"--grpc-restricted-protocol=model-repository:tritonop-control-key={KEY}",
                            "--metrics-config=summary_latencies=true",
                            "--grpc-max-connection-age=10000",
                        ],
                        "ports": [
                            {"name": "http", "containerPort": 8000, "protocol": "TCP"},
                            {"name": "grpc", "containerPort": 8001, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 8002, "protocol": "TCP"},
                        ],
                        "env": [
                            {
                                "name": "TRITONOP_CONTROL_KEY",
                                "valueFrom": {"secretKeyRef": {"name": "resnet50-control-key", "key": "control-key"}},
                            }
                        ],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        "startupProbe": probe("/v2/health/live", 1, 600),
                        "lifecycle": {"preStop": {"sleep": {"seconds": 12}}},
                        "livenessProbe": probe("/v2/health/live", 10, 3),
                        "readinessProbe": probe("/v2/models/resnet50/ready", 1, 3),
                        "volumeMounts": [
                            {"name": "model-repository", "mountPath": "/models", "readOnly": True},
                            {"name": "dshm", "mountPath": "/dev/shm"},
                        ],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
                "readinessGates": [{"conditionType": "tritonop.dev/model-ready"}],
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 60,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "fsGroup": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumes": [
                    {"name": "model-repository", "hostPath": {"path": "/srv/models", "type": "Directory"}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                ],
            },
        },
    },
}


def expected(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(EXPECTED_DEPLOYMENT)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = result
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return result


def test_deployment_default() -> None:
    md = model_deployment()
    assert render_deployment(md, RenderInputs(replicas=2, target_version=3)) == EXPECTED_DEPLOYMENT


def test_deployment_pvc_with_subpath_and_server_settings() -> None:
    md = model_deployment(
        model={"name": "resnet", "repository": "pvc://models/vision/v1"},
        server={
            "gpus": 2,
            "gpuResourceName": "nvidia.com/mig-1g.10gb",
            "resources": {"cpu": "4", "memory": "16Gi"},
            "nodeSelector": {"nvidia.com/gpu.product": "A100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "inference",
            "runtimeClassName": "nvidia",
            "env": [{"name": "LOG", "value": "1"}],
            "extraArgs": ["--log-verbose=1"],
        },
    )
    want = expected()
    pod = want["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"].append("--log-verbose=1")
    container["env"].append({"name": "LOG", "value": "1"})
    container["resources"] = {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"nvidia.com/mig-1g.10gb": "2", "cpu": "4", "memory": "16Gi"},
    }
    container["readinessProbe"] = probe("/v2/models/resnet/ready", 1, 3)
    container["volumeMounts"][0] = {
        "name": "model-repository",
        "mountPath": "/models",
        "readOnly": True,
        "subPath": "vision/v1",
    }
    pod["volumes"][0] = {"name": "model-repository", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    pod["nodeSelector"] = {"nvidia.com/gpu.product": "A100"}
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pod["priorityClassName"] = "inference"
    pod["runtimeClassName"] = "nvidia"
    assert render_deployment(md, RenderInputs(replicas=2, target_version=None)) == want


def test_a_maximum_grpc_connection_age_in_extra_args_replaces_the_default() -> None:
    md = model_deployment(server={"extraArgs": ["--grpc-max-connection-age=60000", "--log-verbose=1"]})
    want = expected()
    args = want["spec"]["template"]["spec"]["containers"][0]["args"]
    args.remove("--grpc-max-connection-age=10000")
    args += ["--grpc-max-connection-age=60000", "--log-verbose=1"]
    assert render_deployment(md, RenderInputs(replicas=2, target_version=3)) == want


def test_deployment_s3_with_credentials_and_cpu_only() -> None:
    md = model_deployment(model={"repository": "s3://bucket/models", "credentialsSecret": "aws"}, server={"gpus": 0})
    want = expected()
    pod = want["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"][0] = "--model-repository=s3://bucket/models"
    container["envFrom"] = [{"secretRef": {"name": "aws"}}]
    container["resources"] = {}
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    assert render_deployment(md, RenderInputs(replicas=2, target_version=None)) == want


def test_deployment_service_account_and_pull_secrets() -> None:
    """A cloud identity for s3:// or gs:// (IRSA, Workload Identity) and a mirrored Triton image:
    the pod runs as the ServiceAccount and pulls with the Secrets; still no API token mounted."""
    md = model_deployment(
        model={"repository": "s3://bucket/models"},
        server={
            "image": "registry.example/mirror/tritonserver:25.10-py3",
            "serviceAccountName": "triton-s3-reader",
            "imagePullSecrets": [{"name": "mirror-pull"}, {"name": "ngc.nvidia.com"}],
        },
    )
    want = expected()
    pod = want["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["image"] = "registry.example/mirror/tritonserver:25.10-py3"
    container["args"][0] = "--model-repository=s3://bucket/models"
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    pod["serviceAccountName"] = "triton-s3-reader"
    pod["imagePullSecrets"] = [{"name": "mirror-pull"}, {"name": "ngc.nvidia.com"}]
    assert render_deployment(md, RenderInputs(replicas=2, target_version=None)) == want
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "uri",
    [
        "s3://minio.storage.svc:9000/models/vision",
        "s3://https://rgw.example.com:443/models",
        "s3://10.0.0.5:9000/models",
    ],
)
def test_deployment_s3_compatible_endpoint_is_passed_to_triton_as_is(uri: str) -> None:
    md = model_deployment(model={"repository": uri, "credentialsSecret": "minio"}, server={"gpus": 0})
    want = expected()
    pod = want["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"][0] = f"--model-repository={uri}"
    container["envFrom"] = [{"secretRef": {"name": "minio"}}]
    container["resources"] = {}
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    assert render_deployment(md, RenderInputs(replicas=2, target_version=None)) == want


@pytest.mark.parametrize("uri", ["s3://http://minio/models", "s3://minio:port/models", "s3://Bucket/x"])
def test_malformed_s3_uris_are_refused_by_the_model_too(uri: str) -> None:
    with pytest.raises(ValueError, match="s3://\\[http\\(s\\)://<host>:<port>/\\]<bucket>"):
        model_deployment(model={"repository": uri})


def test_deployment_gcs_credentials_are_mounted() -> None:
    md = model_deployment(model={"repository": "gs://bucket/models", "credentialsSecret": "gcp"})
    rendered = render_deployment(md, RenderInputs(replicas=1, target_version=None))
    pod = rendered["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "gcs-credentials", "secret": {"secretName": "gcp"}}
    assert pod["containers"][0]["env"][1] == {
        "name": "GOOGLE_APPLICATION_CREDENTIALS",
        "value": "/var/run/secrets/tritonop/gcs/credentials.json",
    }


TOKEN_TARGETS = {"timeToFirstTokenMs": 500, "interTokenLatencyMs": 50}
HISTOGRAM_FLAG = "--metrics-config=histogram_latencies=true"


def llm_deployment(image: str | None, extra_args: list[str], token_latency: dict[str, Any] | None) -> ModelDeployment:
    autoscaling: dict[str, Any] = {"minReplicas": 2, "maxReplicas": 4, "targetLatencyMs": 60000}
    if token_latency is not None:
        autoscaling["tokenLatency"] = token_latency
    server: dict[str, Any] = {"extraArgs": extra_args}
    if image is not None:
        server["image"] = image
    body = {"model": {"repository": "file:///srv/models", "version": 3}, "server": server, "autoscaling": autoscaling}
    return ModelDeployment.from_body(
        {"metadata": {"name": "resnet50", "namespace": "vision", "uid": "uid-1", "generation": 4}, "spec": body}
    )


@pytest.mark.parametrize(
    ("image", "extra_args", "token_latency", "added"),
    [
        # Token targets on the default image (25.10): Triton core's first-response histogram on.
        (None, [], TOKEN_TARGETS, [HISTOGRAM_FLAG]),
        (
            "nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3",
            ["--log-verbose=1"],
            {"interTokenLatencyMs": 50},
            [HISTOGRAM_FLAG],
        ),
        ("registry.local:5000/mirror/tritonserver:24.11-trtllm-python-py3", [], TOKEN_TARGETS, [HISTOGRAM_FLAG]),
        # No token targets: the servers run as before.
        ("nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3", [], None, []),
        # Before 24.11 the family does not exist.
        ("nvcr.io/nvidia/tritonserver:24.10-vllm-python-py3", [], TOKEN_TARGETS, []),
        # Releases the tag does not tell: nothing added (status says how to add it).
        ("registry.local/llm/vllm-server:1.4", [], TOKEN_TARGETS, []),
        ("nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64, [], TOKEN_TARGETS, []),
        ("nvcr.io/nvidia/tritonserver:latest", [], TOKEN_TARGETS, []),
        # The user set it already, in either form, to either value: not twice.
        (None, [HISTOGRAM_FLAG], TOKEN_TARGETS, []),
        (None, ["--metrics-config", "histogram_latencies=false"], TOKEN_TARGETS, []),
        (None, ["--metrics-conf=histogram_latencies=true"], TOKEN_TARGETS, []),
        # Another metrics-config key of the user's does not stop it.
        (None, ["--metrics-config=summary_quantiles=0.5:0.05,0.95:0.001"], TOKEN_TARGETS, [HISTOGRAM_FLAG]),
    ],
)
def test_token_targets_turn_on_the_first_response_histogram_on_releases_that_have_it(
    image: str | None, extra_args: list[str], token_latency: dict[str, Any] | None, added: list[str]
) -> None:
    md = llm_deployment(image, extra_args, token_latency)
    want = expected(spec__replicas=2)
    container = want["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image or container["image"]
    container["args"] = [*container["args"], *added, *extra_args]
    assert render_deployment(md, RenderInputs(replicas=2, target_version=3)) == want


@pytest.mark.parametrize("strategy", ["Recreate", "Rolling"])
def test_replacing_strategies_roll_pods_on_version_change(strategy: str) -> None:
    md = model_deployment(rollout={"strategy": strategy})
    v3 = render_deployment(md, RenderInputs(replicas=2, target_version=3))
    v4 = render_deployment(md, RenderInputs(replicas=2, target_version=4))
    hash3 = v3["spec"]["template"]["metadata"]["annotations"]["tritonop.dev/rollout-hash"]
    assert hash3 == rollout_hash(md, RenderInputs(replicas=2, target_version=3))
    assert hash3 != v4["spec"]["template"]["metadata"]["annotations"]["tritonop.dev/rollout-hash"]
    want_strategy = {"type": "Recreate"} if strategy == "Recreate" else EXPECTED_DEPLOYMENT["spec"]["strategy"]
    assert v3["spec"]["strategy"] == want_strategy


def test_in_place_template_does_not_change_with_the_version() -> None:
    md = model_deployment()
    v3 = render_deployment(md, RenderInputs(replicas=2, target_version=3))
    v4 = render_deployment(md, RenderInputs(replicas=2, target_version=4))
    assert v3["spec"]["template"] == v4["spec"]["template"]


def test_service() -> None:
    assert render_service(model_deployment()) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": METADATA,
        "spec": {
            "type": "ClusterIP",
            "selector": SELECTOR,
            "ports": [
                {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "metrics", "port": 8002, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def test_pod_disruption_budget() -> None:
    assert render_pdb(model_deployment()) == {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": METADATA,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}},
    }


def test_control_key_secret() -> None:
    assert render_control_key_secret(model_deployment(), "k3y") == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**METADATA, "name": "resnet50-control-key"},
        "type": "Opaque",
        "data": {"control-key": "azN5"},
    }


def test_verification_job_mounts_the_repository_as_the_servers_do() -> None:
    md = model_deployment(
        model={"repository": "pvc://models/vision", "version": 3},
        server={"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    )
    name = verify_job_name(md, 3)
    labels = {
        "app.kubernetes.io/name": "model-verifier",
        "app.kubernetes.io/instance": "resnet50",
        "app.kubernetes.io/managed-by": "tritonop",
        "tritonop.dev/model-deployment": "resnet50",
        "app.kubernetes.io/component": "model-verifier",
    }
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert render_verify_job(md, 3, "ghcr.io/tritonop/tritonop:0.1.0", name) == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**METADATA, "name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "verify",
                            "image": "ghcr.io/tritonop/tritonop:0.1.0",
                            "command": ["tritonop"],
                            "args": [
                                "repo",
                                "verify-version",
                                "/models",
                                "resnet50",
                                "--version",
                                "3",
                                "--verdict-file",
                                "/dev/termination-log",
                                "--display-root",
                                "pvc://models/vision",
                            ],
                            "terminationMessagePolicy": "File",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                            "volumeMounts": [
                                {
                                    "name": "model-repository",
                                    "mountPath": "/models",
                                    "readOnly": True,
                                    "subPath": "vision",
                                }
                            ],
                            "securityContext": security,
                        }
                    ],
                    "volumes": [
                        {"name": "model-repository", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
                    ],
                    "nodeSelector": {"pool": "gpu"},
                    "tolerations": [{"key": "gpu", "operator": "Exists"}],
                },
            },
        },
    }
    # The verifier's pods are not the servers': the Deployment's selector does not match them.
    assert not SELECTOR.items() <= labels.items()


def test_verification_job_runs_as_the_servers_and_pulls_with_their_secrets() -> None:
    plain = model_deployment(model={"repository": "pvc://models/vision", "version": 3})
    identity = {"serviceAccountName": "models-reader", "imagePullSecrets": [{"name": "mirror-pull"}]}
    md = model_deployment(model={"repository": "pvc://models/vision", "version": 3}, server=identity)
    want = render_verify_job(plain, 3, "registry.example/mirror/tritonop:0.1.0", "v")
    want["spec"]["template"]["spec"].update(identity)
    assert render_verify_job(md, 3, "registry.example/mirror/tritonop:0.1.0", "v") == want
    assert want["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_verification_job_names() -> None:
    md = model_deployment(model={"repository": "pvc://models/vision", "version": 3})
    assert verify_job_name(md, 3).startswith("resnet50-verify-3-")
    assert verify_job_name(md, None).startswith("resnet50-verify-latest-")
    assert len({verify_job_name(md, 3), verify_job_name(md, 4), verify_job_name(md, 3, "again")}) == 3
    other = model_deployment(model={"repository": "pvc://models/other", "version": 3})
    assert verify_job_name(other, 3) != verify_job_name(md, 3)
    long = ModelDeployment.from_body(
        {"metadata": {"name": "m" * 63, "namespace": "n", "uid": "u"}, "spec": {"model": {"repository": "pvc://c"}}}
    )
    assert len(verify_job_name(long, 123456)) <= 63
    assert verifies_where_the_bytes_are(md) and verifies_where_the_bytes_are(model_deployment())
    s3 = {"repository": "s3://bucket/models", "credentialsSecret": "aws"}
    assert verifies_where_the_bytes_are(model_deployment(model=s3))
    # Without a Secret the servers read with their own identity (IRSA): a Job would have none.
    assert not verifies_where_the_bytes_are(model_deployment(model={"repository": "s3://bucket/models"}))
    assert not verifies_where_the_bytes_are(model_deployment(model={"repository": "gs://bucket/models"}))


def test_s3_verification_job_reads_with_the_servers_credentials() -> None:
    md = model_deployment(
        model={"repository": "s3://http://minio.storage:9000/models", "credentialsSecret": "minio", "version": 2}
    )
    job = render_verify_job(md, 2, "ghcr.io/tritonop/tritonop:0.1.0", "v")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # The servers' own wiring: no volume, the URI as Triton gets it, the Secret as environment.
    assert container["args"][:3] == ["repo", "verify-version", "s3://http://minio.storage:9000/models"]
    assert container["envFrom"] == [{"secretRef": {"name": "minio"}}]
    assert container["volumeMounts"] == [] and job["spec"]["template"]["spec"]["volumes"] == []
    deployment = render_deployment(md, RenderInputs(replicas=1, target_version=2))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] == container["envFrom"]


def test_with_a_node_cache_the_servers_read_their_nodes_cache_and_never_the_store() -> None:
    md = model_deployment(
        model={
            "repository": "s3://http://minio:9000/models",
            "credentialsSecret": "aws",
            "version": 3,
            "cache": {"claimName": "model-cache", "budget": "200Gi"},
        }
    )
    want = expected()
    pod = want["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"][0] = "--model-repository=/tritonop-cache/repos/vision.resnet50"
    container["env"].append({"name": "TRITONOP_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    container["volumeMounts"] = [
        {
            "name": "tritonop-cache",
            "mountPath": "/tritonop-cache",
            "subPathExpr": "$(TRITONOP_NODE_NAME)",
            "readOnly": True,
        },
        {
            "name": "tritonop-cache",
            "mountPath": "/tritonop-cache/repos/vision.resnet50",
            "subPathExpr": "$(TRITONOP_NODE_NAME)/repos/vision.resnet50",
            "readOnly": True,
        },
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    pod["volumes"] = [
        {"name": "tritonop-cache", "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]
    # No store credentials in the servers: they load the verified copy on their node.
    assert "envFrom" not in container
    assert render_deployment(md, RenderInputs(replicas=2, target_version=3)) == want


def test_stage_job_runs_on_its_node_reading_the_store_as_a_verification_job_does() -> None:
    md = model_deployment(
        model={
            "repository": "s3://http://minio:9000/models",
            "credentialsSecret": "aws",
            "version": 3,
            "cache": {"claimName": "model-cache", "budget": "1.5Gi"},
        },
        server={"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    )
    name = stage_job_name(md, "gpu-node-1", 3)
    assert name.startswith("resnet50-stage-3-") and name != stage_job_name(md, "gpu-node-2", 3)
    assert stage_job_name(md, "gpu-node-1", 3, "retry") != name
    job = render_stage_job(md, "gpu-node-1", 3, [2, 3, 3], "ghcr.io/tritonop/tritonop:0.1.0", name)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == [
        "cache", "stage", "s3://http://minio:9000/models", "resnet50", "--version", "3",
        "--cache-root", "/tritonop-cache", "--owner", "vision.resnet50", "--budget-bytes", str(3 * 2**29),
        "--keep", "2,3", "--verdict-file", "/dev/termination-log", "--display-root", "s3://http://minio:9000/models",
    ]  # fmt: skip
    assert container["envFrom"] == [{"secretRef": {"name": "aws"}}]
    assert container["volumeMounts"] == [
        {"name": "tritonop-cache", "mountPath": "/tritonop-cache", "subPath": "gpu-node-1"}
    ]
    owners = LiveOwners(frozenset({"vision.resnet50", "a.b"}), "vision", 1_700_000_000.4)
    with_owners = render_stage_job(md, "gpu-node-1", 3, [2, 3], "ghcr.io/tritonop/tritonop:0.1.0", name, owners)
    assert with_owners["spec"]["template"]["spec"]["containers"][0]["args"][len(container["args"]) :] == [
        "--live-owners", "a.b,vision.resnet50", "--owners-scope", "vision", "--owners-listed-at", "1700000000",
    ]  # fmt: skip
    assert pod["volumes"] == [{"name": "tritonop-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}]
    # Pinned to the node (the scheduler would refuse a node whose GPUs the servers hold), tolerating its taints.
    assert pod["nodeName"] == "gpu-node-1"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert "nodeSelector" not in pod and "affinity" not in pod
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "model-stager"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
