"""Pinned versions of every dev-cluster component (the build script takes them from here)."""

KUBERNETES = "v1.37.2"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
