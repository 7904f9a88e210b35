"""Credentials that expire or are revoked: the operator out of the cluster, on a kubeconfig whose
user is an exec plugin (as on EKS, GKE and AKS), keeps reconciling after its token is revoked.

The plugin hands out a fresh ServiceAccount token (TokenRequest) at every run, for a
ServiceAccount bound to the shipped ClusterRole, and counts its runs. Revoking = deleting the
ServiceAccount and its ClusterRoleBinding and creating them again: every token issued before then
gets 401 from the API server. The operator's own client must run the plugin again and retry; kopf
must log in again for the watches it opens afterwards (a namespace created after the revocation).
"""

from __future__ import annotations

import json
import shlex
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import kubectl_binary, stop_pid, wait_until

from .conftest import REPO_ROOT, start_operator
from .helpers import apply_md, get_md, sleepy_spec, wait_for_condition

pytestmark = pytest.mark.integration
SA_NAMESPACE = "tritonop-creds"  # outside the operator's cred-* pattern
SA_NAME = "tritonop-creds"

PLUGIN = """#!/bin/bash
# An exec credential plugin, as `aws eks get-token` is: a fresh token at every run.
echo run >> {runs}
for attempt in $(seq 1 150); do  # the ServiceAccount may be being recreated: wait for it
  if token=$({kubectl} --kubeconfig={admin} create token {sa} -n {namespace} --duration=10m 2>>{errors}); then
    expiry=$(date -u -d '+10 minutes' +%Y-%m-%dT%H:%M:%SZ)
    printf '{{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
      "status": {{"token": "%s", "expirationTimestamp": "%s"}}}}\\n' "$token" "$expiry"
    exit 0
  fi
  sleep 0.2
done
exit 1
"""


def identity() -> list[dict[str, Any]]:
    """The ServiceAccount and its binding to the shipped ClusterRole (binding first: a token can
    only be issued once the ServiceAccount exists, and by then the binding does too)."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": SA_NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tritonop"},
            "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA_NAME, "namespace": SA_NAMESPACE}},
    ]


def shipped_cluster_role() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO_ROOT / "manifests" / "rbac.yaml").read_text())
    return next(doc for doc in docs if doc and doc["kind"] == "ClusterRole")


def exec_kubeconfig(cluster: DevCluster, folder: Path) -> tuple[Path, Path]:
    """A kubeconfig whose user is the plugin; returns it and the plugin's run log."""
    runs = folder / "plugin-runs"
    script = folder / "plugin.sh"
    script.write_text(
        PLUGIN.format(
            runs=shlex.quote(str(runs)),
            kubectl=shlex.quote(kubectl_binary()),
            admin=shlex.quote(str(cluster.kubeconfig)),
            sa=SA_NAME,
            namespace=SA_NAMESPACE,
            errors=shlex.quote(str(folder / "plugin-errors")),
        )
    )
    exec_config = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "/bin/bash",
        "args": [str(script)],
        "interactiveMode": "Never",
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "dev", "cluster": {"server": cluster.server, "certificate-authority": str(cluster.certs.ca_cert)}}
        ],
        "users": [{"name": "plugin", "user": {"exec": exec_config}}],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "plugin"}}],
        "current-context": "dev",
    }
    path = folder / "kubeconfig"
    path.write_text(json.dumps(config))
    return path, runs


def plugin_runs(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def answer_to(cluster: DevCluster, token: str) -> int:
    """The API server's HTTP status for a request carrying this token."""
    context = ssl.create_default_context(cafile=str(cluster.certs.ca_cert))
    request = urllib.request.Request(
        f"{cluster.server}/apis/tritonop.dev/v1alpha1/modeldeployments", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def make_namespace(core: client.CoreV1Api, name: str) -> str:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(f"ServiceAccount default in {name}", lambda: core.read_namespaced_service_account("default", name), 30)
    return name


@pytest.fixture
def service_account(cluster: DevCluster, crd: None) -> Iterator[None]:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(shipped_cluster_role())
    )
    cluster.kubectl("create", "namespace", SA_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(identity()))
    yield
    cluster.kubectl("delete", "clusterrolebinding", SA_NAME, "--ignore-not-found")
    cluster.kubectl("delete", "namespace", SA_NAMESPACE, "--wait=false", "--ignore-not-found")


def test_the_operator_survives_a_revoked_token(
    cluster: DevCluster, service_account: None, api: client.ApiClient, core: client.CoreV1Api, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    namespace = make_namespace(core, f"cred-{suffix}")
    kubeconfig, runs = exec_kubeconfig(cluster, tmp_path)
    log_path = tmp_path / "operator.log"
    running = start_operator(cluster, "cred-*", log_path, kubeconfig=kubeconfig)
    later = f"cred-{suffix}-later"
    try:
        apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
        wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=120)
        runs_before = plugin_runs(runs)
        assert runs_before >= 1

        # Revoke: every token issued so far (the operator's, and this one) gets 401 from now on.
        issued = cluster.kubectl("create", "token", SA_NAME, "-n", SA_NAMESPACE, "--duration=10m").stdout.strip()
        assert answer_to(cluster, issued) == 200
        cluster.kubectl("delete", "clusterrolebinding", SA_NAME)
        cluster.kubectl("delete", "serviceaccount", SA_NAME, "-n", SA_NAMESPACE, "--wait=true")
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(identity()))
        revoked_at = time.monotonic()
        wait_until("the old tokens are rejected", lambda: answer_to(cluster, issued) == 401, timeout=30)
        rejected_after = time.monotonic() - revoked_at

        # The operator's client meets the 401, runs the plugin again and carries on.
        apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=2))
        edited_at = time.monotonic()
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=120)
        reconciled_after = time.monotonic() - edited_at
        assert md["status"]["observedGeneration"] == md["metadata"]["generation"] == 2
        assert md["status"]["readyReplicas"] == 2
        assert plugin_runs(runs) > runs_before, "the exec plugin was not asked for a new token"
        unauthorized = [key for key in running.metrics() if "kubernetes_requests_total" in key and 'code="401"' in key]
        assert unauthorized, "the operator never met a 401: the revocation did not reach it"

        # kopf opens new watches for a namespace created now: with the revoked token they get 401,
        # so kopf must log in again (through the same plugin) to see this ModelDeployment at all.
        make_namespace(core, later)
        apply_md(cluster, later, "sleepy", sleepy_spec(replicas=1))
        created_at = time.monotonic()
        wait_for_condition(api, later, "sleepy", "Ready", "True", timeout=120)
        later_after = time.monotonic() - created_at
        assert get_md(api, namespace, "sleepy")["status"]["readyReplicas"] == 2
        assert running.process.poll() is None, "the operator exited"
        print(
            f"\nold tokens rejected {rejected_after:.1f}s after the revocation; edit reconciled (Ready, "
            f"2 replicas) {reconciled_after:.1f}s after it; a new namespace's ModelDeployment Ready in "
            f"{later_after:.1f}s; plugin runs {runs_before} before, {plugin_runs(runs)} after"
        )
    finally:
        stop_pid(running.process.pid)
        for name in (namespace, later):
            cluster.kubectl("delete", "md", "--all", "-n", name, "--wait=false", check=False)
            cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    log_text = log_path.read_text()
    assert "credentials reloaded" in log_text, log_text[-3000:]
    assert "Re-authentication has finished" in log_text, log_text[-3000:]
    assert "Forbidden" not in log_text, log_text[-3000:]
