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
GCS_CREDENTIALS_DIR = "/var/run/secrets/tritonop/gcs"
# Header (HTTP) / metadata key (gRPC) that unlocks Triton's model control API.
CONTROL_KEY_HEADER = "tritonop-control-key"
CONTROL_KEY_ENV = OPERATOR_ENV
# Seconds a leaving pod keeps serving before SIGTERM: endpoints and kube-proxy need a moment.
PRESTOP_SLEEP_SECONDS = 5
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
