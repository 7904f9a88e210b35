"""The Helm chart on the dev cluster: `helm install`, `helm upgrade` and `helm uninstall` with the
real helm, the shared CRD left alone throughout, and the operator reconciling under the chart's
ServiceAccount with the chart's own flags.

The dev cluster runs no container images (kwok fakes the operator's pods: scheduled, Running,
Ready, no process), so the operator process runs from the venv, with a token of the chart's
ServiceAccount and the args of the chart's Deployment, as test_install.py does for kustomize."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster import DevCluster
from devcluster.cluster import stop_pid, wait_until

from ..unit.test_chart import CHART, helm
from .conftest import start_operator
from .helpers import apply_md, md_pods, sleepy_spec, wait_for_condition

pytestmark = pytest.mark.integration
CRD = "modeldeployments.tritonop.dev"
# Where Helm keeps the release records: the chart makes the operator's namespace itself.
RELEASE_NAMESPACE = "default"


def service_account_kubeconfig(cluster: DevCluster, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig whose only credential is a token of this ServiceAccount."""
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "dev", "cluster": {"server": cluster.server, "certificate-authority": str(cluster.certs.ca_cert)}}
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": name}}],
        "current-context": "dev",
    }
    path.write_text(json.dumps(config))
    return path


def crd_facts(api: client.ApiClient) -> dict[str, Any]:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
    return {
        "uid": crd.metadata.uid,
        "managers": sorted({entry.manager for entry in crd.metadata.managed_fields or []}),
        "labels": crd.metadata.labels,
        "annotations": {k: v for k, v in (crd.metadata.annotations or {}).items() if k.startswith("meta.helm.sh/")},
    }


def gone(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def deployment_args(apps: client.AppsV1Api, namespace: str, name: str) -> list[str]:
    (container,) = apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers
    return list(container.args)


@pytest.fixture
def models_namespace(cluster: DevCluster, core: client.CoreV1Api) -> Iterator[str]:
    """A namespace for the ModelDeployment, outside the t-* that the session's operator watches."""
    name = f"hm-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until("default ServiceAccount", lambda: core.read_namespaced_service_account("default", name) is not None, 30)
    yield name
    core.delete_namespace(name)


def test_helm_install_upgrade_uninstall(
    cluster: DevCluster,
    crd: None,
    api: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    models_namespace: str,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    release = f"tritonop-helm-{suffix}"  # contains "tritonop": objects are named after the release
    namespace = f"helm-{suffix}"  # the operator's namespace, made by the chart
    rbac = client.RbacAuthorizationV1Api(api)
    crd_before = crd_facts(api)
    kubeconfig = cluster.kubeconfig
    installed = False
    running = None
    try:
        helm(
            "install",
            release,
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            "--set",
            f"namespace.name={namespace},watchNamespaces={{{models_namespace}}}",
            "--wait",
            "--timeout=120s",
            kubeconfig=kubeconfig,
        )
        installed = True
        # The CRD existed (every test shares it): Helm skipped it, it did not take it over.
        assert crd_facts(api) == crd_before
        assert "helm" not in crd_before["managers"]

        labels = core.read_namespace(namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        deployment = apps.read_namespaced_deployment(release, namespace)
        assert deployment.status.ready_replicas == 2, "helm --wait returned before the rollout"
        args = deployment_args(apps, namespace, release)
        assert args == [
            "run",
            f"--namespace={models_namespace}",
            "--leader-elect",
            "--metrics-port=8080",
            "--liveness-port=8081",
        ]

        # The operator as the chart's Deployment runs it: its flags, its ServiceAccount's token (the
        # chart's ClusterRole and leader-election Role, nothing else). Out of a pod it cannot read its
        # namespace from the ServiceAccount mount, so that one flag is added; ports are free ones.
        chart_flags = [a for a in args[1:] if not a.startswith(("--namespace", "--metrics-port", "--liveness-port"))]
        token = service_account_kubeconfig(cluster, namespace, release, tmp_path / "kubeconfig")
        log_path = tmp_path / "operator.log"
        running = start_operator(
            cluster,
            models_namespace,
            log_path,
            kubeconfig=token,
            extra_args=(*chart_flags, f"--leader-election-namespace={namespace}"),
        )
        apply_md(cluster, models_namespace, "sleepy", sleepy_spec())
        md = wait_for_condition(api, models_namespace, "sleepy", "Ready", "True", timeout=120)
        assert md["status"]["activeVersion"] == 2 and len(md_pods(core, models_namespace, "sleepy")) == 1
        lease = client.CoordinationV1Api(api).read_namespaced_lease("tritonop-leader", namespace)
        assert lease.spec.holder_identity, "the leader holds the Lease in the chart's namespace"
        forbidden = {k: v for k, v in running.metrics().items() if 'code="403"' in k}
        assert not forbidden, f"a request was forbidden: the chart's RBAC lacks a rule: {forbidden}"

        # A changed value reaches the Deployment; the CRD is still not Helm's.
        helm(
            "upgrade",
            release,
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "logFormat=json,replicas=1",
            "--wait",
            "--timeout=120s",
            kubeconfig=kubeconfig,
        )
        deployment = apps.read_namespaced_deployment(release, namespace)
        assert deployment.spec.replicas == 1
        assert deployment_args(apps, namespace, release)[-1] == "--log-format=json"
        assert crd_facts(api) == crd_before
        history = json.loads(
            helm("history", release, "-n", RELEASE_NAMESPACE, "-o", "json", kubeconfig=kubeconfig).stdout
        )
        assert [(entry["revision"], entry["status"]) for entry in history] == [(1, "superseded"), (2, "deployed")]

        stop_pid(running.process.pid)
        running = None
        helm("uninstall", release, "-n", RELEASE_NAMESPACE, "--wait", "--timeout=120s", kubeconfig=kubeconfig)
        installed = False
        # Everything the release made is gone, cluster-scoped objects included; the CRD (and with it
        # every ModelDeployment in the cluster) stays: Helm never deletes crds/ CRDs.
        assert gone(core.read_namespace, namespace)
        assert gone(rbac.read_cluster_role, release) and gone(rbac.read_cluster_role_binding, release)
        assert crd_facts(api) == crd_before
        still = wait_for_condition(api, models_namespace, "sleepy", "Ready", "True")
        assert still["metadata"]["uid"] == md["metadata"]["uid"], "the ModelDeployment went with the CRD"
    finally:
        if running is not None:
            stop_pid(running.process.pid)
        if installed:
            helm("uninstall", release, "-n", RELEASE_NAMESPACE, "--wait", check=False, kubeconfig=kubeconfig)
        cluster.kubectl("delete", "md", "--all", "-n", models_namespace, "--wait=false", check=False)


def test_helm_install_refuses_bad_values(cluster: DevCluster) -> None:
    release = f"tritonop-bad-{uuid.uuid4().hex[:6]}"
    for setting, message in [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 0"),
        ("logFormat=xml", "at '/logFormat': value must be one of 'text', 'json'"),
        ("image.tag=5", "at '/image/tag': got number, want string"),
    ]:
        result = helm(
            "install",
            release,
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            "--set",
            setting,
            check=False,
            kubeconfig=cluster.kubeconfig,
        )
        assert result.returncode != 0 and message in result.stderr, result.stderr
    listed = helm("list", "-n", RELEASE_NAMESPACE, "-a", "-q", kubeconfig=cluster.kubeconfig).stdout.split()
    assert release not in listed, "a refused install left a release behind"
