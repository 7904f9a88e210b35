"""The operator's settings: built once by the CLI (`tritonop run` flags) and handed to kopf's memo.

No other module reads the environment: handlers, the controller, the reconciler and the
autoscaler receive what they need from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonop import __version__
from tritonop.leader import ElectionConfig

# The image the manifests and the chart ship; verification Jobs run it when the operator cannot
# tell its own image (out of a pod) and no --verifier-image was given (see preflight.py).
DEFAULT_VERIFIER_IMAGE = f"ghcr.io/tritonop/tritonop:{__version__}"


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None  # None: in-cluster ServiceAccount, else $KUBECONFIG / ~/.kube/config
    metrics_port: int = 8080  # 0 disables the metrics endpoint
    workers: int = 16  # ModelDeployments reconciled in parallel
    resync_seconds: float = 30.0  # periodic reconcile of every object
    relist_seconds: float = 60.0  # full LIST of owned objects (the cache's safety net)
    autoscale_period_seconds: float = 1.0  # autoscaler evaluation period per ModelDeployment
    autoscale_report_seconds: float = 5.0  # how often status gets the autoscaler's measurement
    in_cluster: bool = False  # running in a pod: file:// repositories live on the nodes, not here
    clusterwide: bool = True  # watches every namespace (no --namespace): may list ModelDeployments anywhere
    verifier_image: str = DEFAULT_VERIFIER_IMAGE  # verification Jobs run `tritonop repo verify-version`
    election: ElectionConfig | None = None  # None: no leader election, this process reconciles
