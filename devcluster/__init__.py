"""The local dev cluster used by tritonop's tests and demo (see cluster.py)."""

from .cluster import DevCluster, running_cluster

__all__ = ["DevCluster", "running_cluster"]
