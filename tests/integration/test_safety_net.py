"""What admission cannot check is caught when the operator applies it: the API server refuses the
owned object, the ModelDeployment says so (Synced=False, reason ApplyRefused, the server's own
message, and a Warning event), and the pods that were serving keep serving.

spec.server.affinity is free-form (as in a Pod spec, preserve-unknown-fields), so the CRD cannot
validate it; the Deployment's validation does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import DevCluster
from devcluster.cluster import wait_until
from tritonop.api.validation import API_GROUP as GROUP
from tritonop.api.validation import API_VERSION as VERSION
from tritonop.k8s import KubeClient
from tritonop.owned import ModelDeploymentGone
from tritonop.reconcile import reconcile
from tritonop.state import OperatorState

from .conftest import OperatorProcess
from .helpers import (
    apply_md,
    events_for,
    infer_version,
    md_condition,
    md_manifest,
    ready_ips,
    sleepy_spec,
    wait_for_condition,
)

pytestmark = pytest.mark.integration

# Accepted by the CRD (affinity is preserve-unknown-fields); refused in a Deployment with
# "...nodeSelectorTerms: Required value: must have at least one node selector term".
REFUSED_AFFINITY: dict[str, Any] = {
    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
}


def test_an_owned_object_the_api_server_refuses_is_reported_and_what_runs_keeps_serving(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")
    serving = ready_ips(core, namespace, "sleepy")
    assert len(serving) == 1 and infer_version(serving[0]) == 2
    apps = client.AppsV1Api(api)
    accepted = apps.read_namespaced_deployment("sleepy", namespace)

    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1, server={"affinity": REFUSED_AFFINITY}))

    md = wait_for_condition(api, namespace, "sleepy", "Synced", "False", "ApplyRefused")
    synced = md_condition(md, "Synced")
    # The API server's own words, naming the field it refused.
    assert "nodeSelectorTerms" in synced["message"], synced
    assert "must have at least one node selector term" in synced["message"], synced
    ready = md_condition(md, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyRefused"), ready
    wait_until(
        "a Warning event ApplyRefused",
        lambda: any(
            event.type == "Warning" and event.reason == "ApplyRefused" and "nodeSelectorTerms" in (event.message or "")
            for event in events_for(core, namespace, "sleepy")
        ),
        timeout=30,
    )

    # What ran before keeps running and serving: the Deployment is the last one accepted.
    live = apps.read_namespaced_deployment("sleepy", namespace)
    assert live.metadata.generation == accepted.metadata.generation
    assert live.spec.template.spec.affinity is None
    assert ready_ips(core, namespace, "sleepy") == serving
    assert infer_version(serving[0]) == 2

    # Fixing the spec clears the report.
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Synced", "True")
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")
    assert infer_version(ready_ips(core, namespace, "sleepy")[0]) == 2


def test_overrides_the_repository_config_cannot_take_are_reported_not_loaded(
    cluster: DevCluster, operator: OperatorProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    """preferredBatchSizes without maxBatchSize passes admission (the repository's max_batch_size
    applies, which the API server cannot see). sleepy's config.pbtxt says max_batch_size 8, so 16
    cannot load: the operator says so in the spec's terms instead of letting Triton answer
    'failed to poll from model repository', and version 2 keeps serving."""
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")
    serving = ready_ips(core, namespace, "sleepy")

    bad = {"name": "sleepy", "repository": sleepy_spec()["model"]["repository"], "version": 3}
    bad["config"] = {"dynamicBatching": {"preferredBatchSizes": [4, 16]}}
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1, model=bad))

    md = wait_for_condition(api, namespace, "sleepy", "ModelLoaded", "False", "InvalidConfig")
    message = md_condition(md, "ModelLoaded")["message"]
    assert "spec.model.config.dynamicBatching.preferredBatchSizes" in message, message
    assert "16" in message and "max_batch_size 8" in message, message
    assert md_condition(md, "Ready")["reason"] == "InvalidConfig"
    assert md["status"]["activeVersion"] == 2
    assert ready_ips(core, namespace, "sleepy") == serving
    assert infer_version(serving[0]) == 2
    wait_until(
        "a Warning event InvalidConfig",
        lambda: any(e.type == "Warning" and e.reason == "InvalidConfig" for e in events_for(core, namespace, "sleepy")),
        timeout=30,
    )

    bad["config"] = {"dynamicBatching": {"preferredBatchSizes": [4, 8]}}
    apply_md(cluster, namespace, "sleepy", sleepy_spec(replicas=1, model=bad))
    wait_for_condition(api, namespace, "sleepy", "Ready", "True", "Serving")
    assert infer_version(ready_ips(core, namespace, "sleepy")[0]) == 3


def test_a_body_whose_deletion_was_missed_creates_nothing(
    cluster: DevCluster, crd: None, api: client.ApiClient, core: client.CoreV1Api, unwatched_namespace: str
) -> None:
    """A watch restart can lose a DELETED event; the queue then still holds the old body and its
    resyncs reconcile it. The reconciler (in process here, against the real API server; no
    operator watches this namespace: the session operator, started by this file's other tests,
    would otherwise create the Deployment between the apply and the delete) must not create the
    object's Deployment and Service again (the garbage collector would delete them again, and
    again): it says the object is gone."""
    namespace = unwatched_namespace
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(md_manifest("gone", sleepy_spec())))
    body = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "gone"
    )
    cluster.kubectl("delete", "md", "gone", "-n", namespace)
    state = OperatorState(kube=KubeClient.from_environment(str(cluster.kubeconfig)))

    async def stale_reconcile() -> None:
        try:
            with pytest.raises(ModelDeploymentGone, match="no longer exists"):
                await reconcile(state, body)
        finally:
            await state.kube.close()

    asyncio.run(stale_reconcile())
    assert not client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    assert not core.list_namespaced_service(namespace).items
