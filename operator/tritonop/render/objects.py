"""Pure rendering: a ModelDeployment (plus what the reconciler decided) -> Kubernetes objects.

Every function here returns a plain dict holding only the fields the operator owns; the
reconciler applies them with server-side apply. Tests compare whole objects.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tritonop.api.spec import ModelDeployment
from tritonop.api.validation import API_GROUP, API_VERSION, GCS_CREDENTIALS_ENV, KIND, quantity_bytes
from tritonop.cache.plan import LiveOwners
from tritonop.names import (
    ANNOTATION_ROLLOUT_HASH,
    CACHE_MOUNT_PATH,
    CACHE_VOLUME,
    CONTAINER_NAME,
    CONTROL_KEY_ENV,
    CONTROL_KEY_HEADER,
    CONTROL_KEY_SECRET_KEY,
    GCS_CREDENTIALS_DIR,
    GRPC_MAX_CONNECTION_AGE_SECONDS,
    GRPC_PORT,
    HTTP_PORT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_NAME,
    MANAGER,
    METRICS_PORT,
    MODEL_MOUNT_PATH,
    MODEL_READY_GATE,
    NODE_NAME_ENV,
    PRESTOP_SLEEP_SECONDS,
    STAGE_DEADLINE_SECONDS,
    VERIFY_DEADLINE_SECONDS,
    VERIFY_JOB_TTL_SECONDS,
)
from tritonop.render.triton_release import HISTOGRAM_LATENCIES_FLAG, first_response_histogram


@dataclass(frozen=True)
class RenderInputs:
    """What the reconciler decided, on top of the spec."""

    replicas: int
    target_version: int | None


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    return {LABEL_NAME: "tritonserver", LABEL_INSTANCE: md.name, LABEL_MANAGED_BY: MANAGER}


def common_labels(md: ModelDeployment) -> dict[str, str]:
    return {**selector_labels(md), LABEL_MODEL_DEPLOYMENT: md.name, "app.kubernetes.io/component": "model-server"}


def selector_string(md: ModelDeployment) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(md).items()))


def control_key_secret_name(md: ModelDeployment) -> str:
    return f"{md.name}-control-key"


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(md: ModelDeployment, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or md.name,
        "namespace": md.namespace,
        "labels": common_labels(md),
        "ownerReferences": [owner_reference(md)],
    }


def _repository_wiring(md: ModelDeployment) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """(--model-repository value, volumes, volumeMounts, env) for the repository URI."""
    uri = md.spec.model.repository
    scheme, _, rest = uri.partition("://")
    secret = md.spec.model.credentials_secret
    if scheme == "file":
        volume = {"name": "model-repository", "hostPath": {"path": "/" + rest.strip("/"), "type": "Directory"}}
        mount = {"name": "model-repository", "mountPath": MODEL_MOUNT_PATH, "readOnly": True}
        return MODEL_MOUNT_PATH, [volume], [mount], []
    if scheme == "pvc":
        claim, _, subpath = rest.partition("/")
        volume = {"name": "model-repository", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        claim_mount: dict[str, Any] = {"name": "model-repository", "mountPath": MODEL_MOUNT_PATH, "readOnly": True}
        if subpath.strip("/"):
            claim_mount["subPath"] = subpath.strip("/")
        return MODEL_MOUNT_PATH, [volume], [claim_mount], []
    if scheme == "gs" and secret:
        volume = {"name": "gcs-credentials", "secret": {"secretName": secret}}
        mount = {"name": "gcs-credentials", "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
        env = [{"name": GCS_CREDENTIALS_ENV, "value": f"{GCS_CREDENTIALS_DIR}/credentials.json"}]
        return uri, [volume], [mount], env
    if scheme == "s3" and secret:
        return uri, [], [], [{"secretRef": {"name": secret}}]
    return uri, [], [], []


def cache_owner(md: ModelDeployment) -> str:
    """This ModelDeployment's folder in each node's cache (repos/<owner>: the servers' repository)."""
    return f"{md.namespace}.{md.name}"


def _server_repository_wiring(
    md: ModelDeployment,
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """What the servers read: the repository itself, or with spec.model.cache their node's cache.

    With the cache the servers never read the store: they load the verified copy a staging Job
    left on their node (staging.py). The node's folder is mounted twice: whole (the versions
    the repository's links point to, relative links) and this ModelDeployment's repos/<owner>
    folder at the same path inside it, only so the kubelet creates it before tritonserver starts
    (Triton refuses to start on a repository folder that does not exist)."""
    cache = md.spec.model.cache
    if cache is None:
        return _repository_wiring(md)
    repos = f"repos/{cache_owner(md)}"
    volume = {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name, "readOnly": True}}
    mounts = [
        {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT_PATH, "subPathExpr": f"$({NODE_NAME_ENV})", "readOnly": True},
        {
            "name": CACHE_VOLUME,
            "mountPath": f"{CACHE_MOUNT_PATH}/{repos}",
            "subPathExpr": f"$({NODE_NAME_ENV})/{repos}",
            "readOnly": True,
        },
    ]
    env = [{"name": NODE_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    return f"{CACHE_MOUNT_PATH}/{repos}", [volume], mounts, env


def rollout_hash(md: ModelDeployment, inputs: RenderInputs) -> str:
    """Changes when a Recreate/Rolling rollout must replace pods (version or config overrides)."""
    config = md.spec.model.config.model_dump(by_alias=True) if md.spec.model.config else None
    payload = json.dumps({"version": inputs.target_version, "config": config}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tritonserver_args(md: ModelDeployment, repository: str) -> list[str]:
    key = f"{CONTROL_KEY_HEADER}=$({CONTROL_KEY_ENV})"
    extra = md.spec.server.extra_args
    user_set = {arg.split("=", 1)[0] for arg in extra}
    defaults = [
        # gRPC pins a client to the pod its connection reached: a maximum age makes it reconnect.
        f"--grpc-max-connection-age={GRPC_MAX_CONNECTION_AGE_SECONDS * 1000}",
    ]
    return [
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        # Load/unload/index only with the per-deployment key; inference and health stay open.
        f"--http-restricted-api=model-repository:{key}",
        f"--grpc-restricted-protocol=model-repository:{key}",
        # p95 for the autoscaler comes from Triton's summary quantiles.
        "--metrics-config=summary_latencies=true",
        *[arg for arg in defaults if arg.split("=", 1)[0] not in user_set],
        # TTFT from Triton core's first-response histogram (24.11+), for token targets.
        *([HISTOGRAM_LATENCIES_FLAG] if first_response_histogram(md).add_flag else []),
        *extra,
    ]


def render_deployment(md: ModelDeployment, inputs: RenderInputs) -> dict[str, Any]:
    server = md.spec.server
    repository, volumes, mounts, repo_env = _server_repository_wiring(md)
    env: list[dict[str, Any]] = [
        {
            "name": CONTROL_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": control_key_secret_name(md), "key": CONTROL_KEY_SECRET_KEY}},
        },
        *[item for item in repo_env if "name" in item],
        *[{"name": item.name, "value": item.value} for item in server.env],
    ]
    env_from = [item for item in repo_env if "secretRef" in item]
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if server.gpus > 0:
        limits[server.gpu_resource_name] = str(server.gpus)
    if server.resources is not None:
        for resource, value in (("cpu", server.resources.cpu), ("memory", server.resources.memory)):
            if value is not None:
                limits[resource] = requests[resource] = value
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits

    def http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": server.image,
        "command": ["tritonserver"],
        "args": tritonserver_args(md, repository),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": resources,
        # Every second: the kubelet runs readiness only once the startup probe passed, so these
        # periods are added to every pod's start (tritonserver is live in well under a second;
        # the operator loads the model meanwhile). 10 minutes before liveness starts counting.
        "startupProbe": http_probe("/v2/health/live", 1, 600),
        "livenessProbe": http_probe("/v2/health/live", 10, 3),
        "readinessProbe": http_probe(f"/v2/models/{md.model_name}/ready", 1, 3),
        # A pod leaving (scale-down, rollout) keeps serving while load balancers drop it and its
        # gRPC channels reach their maximum age; on SIGTERM tritonserver serves the HTTP
        # connections still open and in-flight requests for up to its exit timeout (30 s), in
        # the grace period.
        # The sleep action needs no shell in the image (Kubernetes >= 1.30).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": container_security(),
    }
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "readinessGates": [{"conditionType": MODEL_READY_GATE}],
        # Triton needs no Kubernetes API access.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security(),
        # The python backend passes tensors through shared memory; the default 64Mi is too small.
        "volumes": [*volumes, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        **_identity(md),
        **_placement(md),
    }
    if server.runtime_class_name:
        pod_spec["runtimeClassName"] = server.runtime_class_name

    template_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    strategy: dict[str, Any]
    if md.spec.rollout.strategy == "Recreate":
        strategy = {"type": "Recreate"}
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    if not md.spec.rollout.in_place:
        # Version/config changes replace pods; InPlace switches them inside running servers instead.
        template_annotations[ANNOTATION_ROLLOUT_HASH] = rollout_hash(md, inputs)

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md),
        "spec": {
            "replicas": inputs.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(md)},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": common_labels(md), "annotations": template_annotations},
                "spec": pod_spec,
            },
        },
    }


def container_security() -> dict[str, Any]:
    """Restricted Pod Security, for every container the operator creates (a fresh dict each time)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _identity(md: ModelDeployment) -> dict[str, Any]:
    """Who the pods run as and what they pull with: serviceAccountName (a cloud identity for
    s3:// or gs://) and imagePullSecrets (a mirrored or private image). No API token is mounted
    either way (automountServiceAccountToken: false)."""
    server = md.spec.server
    identity: dict[str, Any] = {}
    if server.service_account_name:
        identity["serviceAccountName"] = server.service_account_name
    if server.image_pull_secrets:
        identity["imagePullSecrets"] = [{"name": secret.name} for secret in server.image_pull_secrets]
    return identity


def _placement(md: ModelDeployment) -> dict[str, Any]:
    """Where the servers run: node selector, tolerations, affinity, priority."""
    server = md.spec.server
    placement: dict[str, Any] = {}
    if server.node_selector:
        placement["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        placement["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in server.tolerations]
    if server.affinity:
        placement["affinity"] = server.affinity
    if server.priority_class_name:
        placement["priorityClassName"] = server.priority_class_name
    return placement


def verifies_where_the_bytes_are(md: ModelDeployment) -> bool:
    """Storage a verification Job reads exactly as the servers do: pvc:// and file:// (a hostPath)
    mounted the same way, s3:// with the same credentials Secret. s3:// without one (the pods'
    own identity: IRSA, an instance role) is not: the Job would have no credentials."""
    scheme = md.spec.model.repository.partition("://")[0]
    return scheme in ("pvc", "file") or (scheme == "s3" and md.spec.model.credentials_secret is not None)


def verify_job_name(md: ModelDeployment, version: int | None, token: str = "") -> str:
    """One Job per (repository, version, re-verify token): a changed one verifies again."""
    digest = hashlib.sha256(f"{md.uid}|{md.spec.model.repository}|{version}|{token}".encode()).hexdigest()[:8]
    return f"{md.name[:40]}-verify-{version if version is not None else 'latest'}-{digest}"


def render_verify_job(md: ModelDeployment, version: int | None, image: str, name: str) -> dict[str, Any]:
    """A short Job that checks one version with `tritonop repo verify-version`, mounting the
    repository exactly as the servers do (same volume, same nodes), and leaves its verdict as
    the termination message. Bounded memory: files are hashed in 1 MiB chunks."""
    repository = _repository_wiring(md)[0]
    args = ["repo", "verify-version", repository, md.model_name, "--verdict-file", "/dev/termination-log"]
    args += ["--display-root", md.spec.model.repository]  # messages name the user's URI, not the mount
    if md.spec.model.cache is not None:
        args.append("--no-hash")  # the staging Jobs hash each node's copy as they make it: one read, not two
    if version is not None:
        args[4:4] = ["--version", str(version)]
    # As the servers: their placement (the same nodes reach the same volumes).
    return _repository_job(md, name, "model-verifier", "verify", image, args, VERIFY_DEADLINE_SECONDS, _placement(md))


def stage_job_name(md: ModelDeployment, node: str, version: int, token: str = "") -> str:
    """One Job per (node, repository, version, retry token)."""
    digest = hashlib.sha256(f"{md.uid}|{node}|{md.spec.model.repository}|{version}|{token}".encode()).hexdigest()[:10]
    return f"{md.name[:36]}-stage-{version}-{digest}"


def render_stage_job(
    md: ModelDeployment,
    node: str,
    version: int,
    keep: list[int],
    image: str,
    name: str,
    owners: LiveOwners | None = None,
) -> dict[str, Any]:
    """A short Job on `node` that stages one version into that node's cache folder with
    `tritonop cache stage` (verified against its manifest while copying, then renamed into place;
    a hit only compares file identities) and links it into this ModelDeployment's repository
    there. keep: versions the node's pods serve, which no stager may evict. owners: the cache's
    owners that exist (deleted ones' pins are released). Its verdict is the termination message."""
    assert md.spec.model.cache is not None
    repository = _repository_wiring(md)[0]
    budget = str(quantity_bytes(md.spec.model.cache.budget))
    args = ["cache", "stage", repository, md.model_name, "--version", str(version)]
    args += ["--cache-root", CACHE_MOUNT_PATH, "--owner", cache_owner(md), "--budget-bytes", budget]
    args += ["--keep", ",".join(str(v) for v in sorted(set(keep)))] if keep else []
    args += ["--verdict-file", "/dev/termination-log", "--display-root", md.spec.model.repository]
    if owners is not None:
        args += ["--live-owners", ",".join(sorted(owners.names)), "--owners-scope", owners.scope]
        args += ["--owners-listed-at", f"{owners.listed_at:.0f}"]
    tolerations = _placement(md).get("tolerations")
    # On that node, whatever it is: nodeName skips the scheduler (the node's GPUs may all be taken
    # by servers); the servers' tolerations let it stay there.
    placement = {"nodeName": node, **({"tolerations": tolerations} if tolerations else {})}
    cache_volume = {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": md.spec.model.cache.claim_name}}
    cache_mount = {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT_PATH, "subPath": node}
    return _repository_job(
        md, name, "model-stager", "stage", image, args, STAGE_DEADLINE_SECONDS, placement, cache_volume, cache_mount
    )


def _repository_job(
    md: ModelDeployment,
    name: str,
    component: str,
    container_name: str,
    image: str,
    args: list[str],
    deadline: int,
    placement: dict[str, Any],
    volume: dict[str, Any] | None = None,
    mount: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Job running `tritonop ARGS` from the operator's image with the repository mounted (or
    its credentials) exactly as the servers have it, plus `volume` at `mount`."""
    _, volumes, mounts, repo_env = _repository_wiring(md)
    labels = {
        LABEL_NAME: component,
        LABEL_INSTANCE: md.name,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_MODEL_DEPLOYMENT: md.name,
        "app.kubernetes.io/component": component,
    }
    container: dict[str, Any] = {
        "name": container_name,
        "image": image,
        "command": ["tritonop"],
        "args": args,
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [*mounts, *([mount] if mount else [])],
        "securityContext": container_security(),
    }
    # s3://: the servers' credentials Secret, as environment variables (as the servers get it).
    if env_from := [item for item in repo_env if "secretRef" in item]:
        container["envFrom"] = env_from
    if env := [item for item in repo_env if "name" in item]:
        container["env"] = env
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**_metadata(md, name), "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": VERIFY_JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [*volumes, *([volume] if volume else [])],
                    # As the servers: their identity (for a policy that requires it, or pull secrets
                    # attached to the ServiceAccount) and pull secrets (a mirrored operator image
                    # often lives in the same registry as the mirrored Triton image).
                    **_identity(md),
                    **placement,
                },
            },
        },
    }


def render_service(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def render_pdb(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(md)}},
    }


def render_control_key_secret(md: ModelDeployment, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(md, control_key_secret_name(md)),
        "type": "Opaque",
        "data": {CONTROL_KEY_SECRET_KEY: base64.b64encode(key.encode()).decode()},
    }


def endpoint(md: ModelDeployment) -> dict[str, str]:
    host = f"{md.name}.{md.namespace}.svc"
    return {"http": f"{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}
