"""Pinned versions of every dev-cluster component (the build script takes them from here)."""

KUBERNETES = "v1.37.2"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.22.0"  # not a cluster component: `make helm` builds it for the chart's tests
