"""The only module with kopf handlers: thin adapters from watch events to the controller.

kopf watches ModelDeployments and the pods/Deployments the operator owns; every event only
records the latest body and queues a reconcile (see controller.py). kopf itself writes nothing
to ModelDeployments: no handler progress in status, and its bookkeeping prefix is tritonop.dev.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
from prometheus_client import start_http_server

from tritonop.api.spec import API_GROUP, API_VERSION, PLURAL
from tritonop.cache import CACHED_KINDS
from tritonop.controller import Controller
from tritonop.k8s import RESOURCES, KubeClient, KubeError
from tritonop.leader import ElectionConfig, LeaderElector
from tritonop.reconcile import OperatorState, Reconciler, forget
from tritonop.render.objects import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER

OWNED = {LABEL_MANAGED_BY: MANAGER}
OWNED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Events are posted by the reconciler itself, one per meaningful step.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    metrics_port = int(os.environ.get("TRITONOP_METRICS_PORT", "8080"))
    if metrics_port:
        start_http_server(metrics_port)
    state = OperatorState(kube=KubeClient.from_environment())

    async def reconcile(body: dict[str, Any]) -> float | None:
        try:
            return (await Reconciler(state, body).run()).requeue_after
        except KubeError as error:
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            # A watch scoped by namespace pattern can end with its namespace, before any DELETED
            # event: ask once whether the object still exists, and forget it if not.
            if error.going_away and await state.kube.get("ModelDeployment", *key) is None:
                controller.forget(key)
                forget(state, *key, body["metadata"].get("uid"))
                return None
            raise

    # Owned objects are read from a watch-fed cache; a periodic relist catches deletions that a
    # watch gap (API server or etcd restart) hid from it.
    relist_seconds = float(os.environ.get("TRITONOP_RELIST_SECONDS", "60"))
    memo.relist_task = asyncio.create_task(
        state.cache.keep_fresh(state.kube, OWNED_SELECTOR, relist_seconds), name="cache-relist"
    )
    controller = Controller.from_environment(reconcile)
    election = election_from_environment()
    memo.elector = None
    if election is None:
        controller.start()
    else:
        # Watches run in every process; only the Lease holder's workers reconcile.
        controller.start(leading=False)
        memo.elector = LeaderElector(state.kube, election, controller.resume, controller.pause)
        memo.election_task = asyncio.create_task(memo.elector.run(), name="leader-election")
    memo.state = state
    memo.controller = controller


def election_from_environment() -> ElectionConfig | None:
    namespace = os.environ.get("TRITONOP_LEADER_ELECTION_NAMESPACE")
    if not namespace:
        return None
    return ElectionConfig(
        namespace=namespace,
        name=os.environ.get("TRITONOP_LEADER_ELECTION_ID", "tritonop-leader"),
        lease_duration=float(os.environ.get("TRITONOP_LEASE_DURATION", "15")),
        renew_deadline=float(os.environ.get("TRITONOP_RENEW_DEADLINE", "10")),
        retry_period=float(os.environ.get("TRITONOP_RETRY_PERIOD", "2")),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.relist_task.cancel()
    if memo.elector is not None:
        memo.election_task.cancel()
    # Workers stop before the Lease goes: nothing is written after another process may lead.
    await memo.controller.stop()
    if memo.elector is not None:
        await memo.elector.release()
    await memo.state.kube.close()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def model_deployment_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = (str(body.metadata.namespace), str(body.metadata.name))
    if event.get("type") == "DELETED":
        memo.controller.forget(key)
        forget(memo.state, *key, body.metadata.uid)
        state = memo.state.autoscalers.pop(key, None)
        if state is not None:
            await state.reader.close()
        return
    memo.controller.update(dict(body))


def _watch_owned(kind: str) -> None:
    """One kopf event handler per owned kind (CACHED_KINDS), all feeding _owned_changed."""
    api_version, plural, _ = RESOURCES[kind]

    async def owned_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _owned_changed(kind, event, body, memo)

    group, _, version = api_version.rpartition("/")
    kopf.on.event(group=group, version=version, plural=plural, labels=OWNED, id=f"owned-{plural}")(owned_event)


for _kind in CACHED_KINDS:
    _watch_owned(_kind)


def _owned_changed(kind: str, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo) -> None:
    """Keep the cache as the watch sees the object, and let its ModelDeployment look again."""
    obj = {**dict(body), "kind": kind}
    if event.get("type") == "DELETED":
        memo.state.cache.remove(kind, obj)
    else:
        memo.state.cache.store(kind, obj)
    name = body.metadata.labels.get(LABEL_INSTANCE)
    if name:
        memo.controller.enqueue((body.metadata.namespace, name))


# kopf logs every successful event handler at INFO; ours only queue work.
logging.getLogger("kopf.objects").setLevel(logging.WARNING)
