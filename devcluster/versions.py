"""Pinned versions of every dev-cluster component (the build script takes them from here)."""

KUBERNETES = "v1.37.2"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.22.0"  # not a cluster component: `make helm` builds it for the chart's tests
# MinIO publishes no semver tags: the Go module proxy serves it as a pseudo-version (a commit).
MINIO = "v0.0.0-20260212201848-7aac2a2c5b7c"  # not a cluster component: `make minio` for the S3 tests
# The real node (python -m devcluster node-up; docs/real-node.md): kubelet and kube-proxy come
# from KUBERNETES; containerd 2.x, runc and the CNI plugins from their modules on the proxy.
CONTAINERD = "v2.4.2"
RUNC = "v1.5.3"
CNI_PLUGINS = "v1.10.0"
