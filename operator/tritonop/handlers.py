"""The only module with kopf handlers: thin adapters from watch events to the controller.

kopf watches ModelDeployments and the pods/Deployments the operator owns; every event only
records the latest body and queues a reconcile (see controller.py). kopf itself writes nothing
to ModelDeployments: no handler progress in status, and its bookkeeping prefix is tritonop.dev.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from prometheus_client import REGISTRY, start_http_server

from tritonop.api.validation import API_GROUP, API_VERSION, PLURAL
from tritonop.controller import Controller, Next
from tritonop.informer import CACHED_KINDS
from tritonop.k8s import RESOURCES, KubeClient, KubeError, kopf_login
from tritonop.leader import LeaderElector
from tritonop.names import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER
from tritonop.owned import ModelDeploymentGone
from tritonop.reconcile import reconcile
from tritonop.settings import Settings
from tritonop.state import EntriesCollector, OperatorState
from tritonop.triton import CONTROL_THREADS

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
    # Triton loads run in threads (tritonop.triton), each blocked for as long as a model loads:
    # enough of them that many pods starting at once do not queue behind one another.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=CONTROL_THREADS, thread_name_prefix="tritonop")
    )
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # The CLI puts its Settings in the memo; without them (kopf run), the defaults.
    config: Settings = getattr(memo, "settings", None) or Settings()
    state = OperatorState.from_settings(config, KubeClient.from_environment(config.kubeconfig))

    async def run_reconcile(body: dict[str, Any]) -> Next:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        try:
            return await reconcile(state, body)
        except ModelDeploymentGone as gone:
            logging.getLogger("tritonop.handlers").info("forgetting %s: %s", "/".join(key), gone)
            controller.forget(key)  # the finally below releases what the process remembers
            return Next()
        except KubeError as error:
            # A watch scoped by namespace pattern can end with its namespace, before any DELETED
            # event: ask once whether the object still exists, and forget it if not.
            if error.going_away and await state.kube.get("ModelDeployment", *key) is None:
                controller.forget(key)  # the finally below releases what the process remembers
                return Next()
            raise
        finally:
            await release_if_gone(key, body)

    async def run_evaluation(body: dict[str, Any]) -> Next:
        """The autoscaler's tick alone; full_now: more to do, a full reconcile follows (errors too)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        try:
            return await reconcile(state, body, quiet_only=True)
        finally:
            await release_if_gone(key, body)

    async def release_if_gone(key: tuple[str, str], body: dict[str, Any]) -> None:
        """Deleted while a reconcile or evaluation ran (a load or a scrape can take seconds): what
        it just remembered must go too."""
        if key not in controller.bodies:
            await state.release(key, body["metadata"].get("uid"))

    controller = Controller(
        run_reconcile,
        workers=config.workers,
        resync_seconds=config.resync_seconds,
        evaluate=run_evaluation,
        tick_seconds=config.autoscale_period_seconds,
    )
    if config.metrics_port:
        REGISTRY.register(EntriesCollector(state.entries, controller.entries))
        start_http_server(config.metrics_port)
    # Owned objects are read from a watch-fed cache; a periodic relist catches deletions that a
    # watch gap (API server or etcd restart) hid from it.
    memo.relist_task = asyncio.create_task(
        state.cache.keep_fresh(state.kube, OWNED_SELECTOR, config.relist_seconds), name="cache-relist"
    )
    memo.elector = None
    if config.election is None:
        controller.start()
    else:
        # Watches run in every process; only the Lease holder's workers reconcile.
        controller.start(leading=False)
        memo.elector = LeaderElector(state.kube, config.election, controller.resume, controller.pause)
        memo.election_task = asyncio.create_task(memo.elector.run(), name="leader-election")
    memo.state = state
    memo.controller = controller


async def release(memo: kopf.Memo, key: tuple[str, str], uid: str | None) -> None:
    """The one cleanup path for a ModelDeployment that is gone (deleted, or its namespace)."""
    memo.controller.forget(key)
    await memo.state.release(key, uid)


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's own watches: the operator's credentials, loaded afresh each time kopf meets a 401."""
    config: Settings = getattr(memo, "settings", None) or Settings()
    return kopf_login(config.kubeconfig)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.relist_task.cancel()
    if memo.elector is not None:
        memo.election_task.cancel()
    # Workers stop before the Lease goes: nothing is written after another process may lead.
    await memo.controller.stop()
    if memo.elector is not None:
        await memo.elector.release()
    await memo.state.close()
    await memo.state.kube.close()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def model_deployment_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = (str(body.metadata.namespace), str(body.metadata.name))
    if event.get("type") == "DELETED":
        await release(memo, key, body.metadata.uid)
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
