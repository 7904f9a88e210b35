"""Integration tests run against the real local cluster (devcluster) and real Triton."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from devcluster import DevCluster, running_cluster
from devcluster.cluster import wait_until
from kubernetes import client, config


@pytest.fixture(scope="session")
def cluster() -> Iterator[DevCluster]:
    with running_cluster() as started:
        yield started


@pytest.fixture(scope="session")
def api(cluster: DevCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def namespace(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (and its pods with it)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the controller manager has made the namespace's ServiceAccount.
    wait_until(
        f"ServiceAccount default in {name}",
        lambda: core.read_namespaced_service_account("default", name) is not None,
        timeout=30,
    )
    yield name
    core.delete_namespace(name)
