"""The names and numbers the rendered objects and the code that talks to them share: ports,
labels, annotations, the readiness gate, the control key. One place, so the renderer (render/)
and its readers (serving/, triton.py, owned.py, handlers.py) cannot drift apart."""

from __future__ import annotations

from tritonop.api.validation import API_GROUP, OPERATOR_ENV

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
CONTAINER_NAME = "tritonserver"
MODEL_MOUNT_PATH = "/models"
# The node-local model cache (spec.model.cache): the claim's volume, each node's subfolder mounted here.
CACHE_VOLUME = "tritonop-cache"
CACHE_MOUNT_PATH = "/tritonop-cache"
NODE_NAME_ENV = "TRITONOP_NODE_NAME"  # the pod's node, for the cache mount's subPathExpr
STAGE_DEADLINE_SECONDS = 3600  # copying tens of GB from a slow store takes minutes, not hours
GCS_CREDENTIALS_DIR = "/var/run/secrets/tritonop/gcs"
# Header (HTTP) / metadata key (gRPC) that unlocks Triton's model control API.
CONTROL_KEY_HEADER = "tritonop-control-key"
CONTROL_KEY_ENV = OPERATOR_ENV
# Every gRPC connection gets a GOAWAY this long after it opened (gRPC adds up to 10% jitter):
# clients reconnect through the Service, so kube-proxy's per-connection choice is made again
# (new replicas and canary pods get their share) and a leaving pod's channels move elsewhere.
# No grace period: RPCs in flight (LLM streams) finish on the old connection.
GRPC_MAX_CONNECTION_AGE_SECONDS = 10
# Seconds a leaving pod keeps serving before SIGTERM: endpoints and kube-proxy drop it, and every
# gRPC channel on it has reached its maximum age and reconnected to another pod.
PRESTOP_SLEEP_SECONDS = GRPC_MAX_CONNECTION_AGE_SECONDS * 11 // 10 + 1
CONTROL_KEY_SECRET_KEY = "control-key"
# Pod condition the operator sets once a new pod serves the target version; until then the
# pod is not Ready and receives no traffic (a readiness gate, as Kubernetes intends).
MODEL_READY_GATE = f"{API_GROUP}/model-ready"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MODEL_DEPLOYMENT = f"{API_GROUP}/model-deployment"
MANAGER = "tritonop"
ANNOTATION_ROLLOUT_HASH = f"{API_GROUP}/rollout-hash"
VERIFY_DEADLINE_SECONDS = 3600  # hashing tens of GB at a few hundred MB/s takes minutes, not hours
VERIFY_JOB_TTL_SECONDS = 600  # kept a while for `kubectl describe`; the verdict lives in status
