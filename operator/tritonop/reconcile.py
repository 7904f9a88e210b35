"""One level-based reconcile of a ModelDeployment, as steps:

observe -> render (pure) -> apply what differs -> bring every Triton to the target -> compute
status (pure) -> write status only if it changed.

An idle reconcile (nothing changed anywhere) makes no write call: owned objects are applied only
when they differ from what is live (or from what was last applied), and status only when it changed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge
from tritonclient.grpc import model_config_pb2

from tritonop.api.spec import AutoscalingSpec, ModelDeployment
from tritonop.autoscale.metrics import PodMetricsReader, PrometheusReader
from tritonop.autoscale.policy import Decision, History, Observation, decide
from tritonop.cache import ObjectCache
from tritonop.k8s import KubeClient, KubeError
from tritonop.render.model_config import effective_config, from_json, to_json
from tritonop.render.objects import (
    ANNOTATION_ROLLOUT_HASH,
    CONTROL_KEY_SECRET_KEY,
    MODEL_READY_GATE,
    RenderInputs,
    control_key_secret_name,
    render_control_key_secret,
    render_deployment,
    render_pdb,
    render_service,
    rollout_hash,
    selector_labels,
    selector_string,
)
from tritonop.repository.local import RepositoryReport, inspect
from tritonop.status import FAILING_WAIT_REASONS, AutoscaleFacts, Facts, PodFacts, compute_status, status_patch
from tritonop.triton import ServerUnreachable, TritonError, TritonServer

LOG = logging.getLogger("tritonop.reconcile")
APPLIED_HASH_ANNOTATION = "tritonop.dev/applied-hash"
# A load that failed is retried after this long, or at once when the config to load changes.
FAILED_LOAD_RETRY_SECONDS = 20.0
# While something is converging (servers starting, loads under way) look again soon.
CONVERGING_REQUEUE_SECONDS = 1.0
AUTOSCALE_PERIOD_SECONDS = float(os.environ.get("TRITONOP_AUTOSCALE_PERIOD_SECONDS", "5"))
# While latency is over target, look every second: each second of a breach costs requests.
BREACH_PERIOD_SECONDS = float(os.environ.get("TRITONOP_BREACH_PERIOD_SECONDS", "1"))
MD_LABELS = ["namespace", "name"]
DESIRED_REPLICAS = Gauge("tritonop_autoscaler_desired_replicas", "Replicas the autoscaler wants.", MD_LABELS)
CURRENT_REPLICAS = Gauge("tritonop_autoscaler_current_replicas", "Replicas before the decision.", MD_LABELS)
OBSERVED_LATENCY = Gauge(
    "tritonop_autoscaler_observed_latency_ms", "Latency the autoscaler acted on.", ["namespace", "name", "metric"]
)
TARGET_LATENCY = Gauge("tritonop_autoscaler_target_latency_ms", "The spec's latency target.", MD_LABELS)
DECISIONS = Counter("tritonop_autoscaler_decisions_total", "Autoscaler decisions by direction.", ["direction"])
READY = Gauge("tritonop_modeldeployment_ready", "1 when the ModelDeployment's Ready condition is True.", MD_LABELS)
# Ready=False reasons that are progress, not trouble (a Normal event, not a Warning).
PROGRESS_REASONS = frozenset({"WaitingForReplicas", "VersionSwitch", "RollingOut"})


@dataclass
class FailedLoad:
    config_json: str | None
    message: str
    at: float


@dataclass
class AutoscalerState:
    """One ModelDeployment's autoscaler memory (in-process, like the HPA controller's)."""

    reader: PodMetricsReader | PrometheusReader
    source: str
    history: History = field(default_factory=History)
    last_evaluation: float = float("-inf")
    period: float = AUTOSCALE_PERIOD_SECONDS  # shorter while the target is breached
    replicas: int | None = None


@dataclass
class OperatorState:
    """Process-wide state, kept in kopf's memo."""

    kube: KubeClient
    autoscalers: dict[tuple[str, str], AutoscalerState] = field(default_factory=dict)
    # Keyed by the ModelDeployment's uid: a new object of the same name has a new key.
    control_keys: dict[str, str] = field(default_factory=dict)
    # Repository configs learned from Triton where the operator cannot read the storage itself.
    learned_configs: dict[str, model_config_pb2.ModelConfig] = field(default_factory=dict)
    failed_loads: dict[str, FailedLoad] = field(default_factory=dict)  # by pod uid
    cache: ObjectCache = field(default_factory=ObjectCache)


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None = None


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_subset(desired: Any, live: Any) -> bool:
    """Every field the operator sets has that value live (the server may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    return bool(desired == live) or str(desired) == str(live)


def first_difference(desired: Any, live: Any, path: str = "") -> str:
    if isinstance(desired, dict) and isinstance(live, dict):
        for key, value in desired.items():
            if key not in live:
                return f"{path}.{key}".lstrip(".")
            if not is_subset(value, live[key]):
                return first_difference(value, live[key], f"{path}.{key}")
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        for index, (d, v) in enumerate(zip(desired, live, strict=True)):
            if not is_subset(d, v):
                return first_difference(d, v, f"{path}[{index}]")
    return path.lstrip(".") or "(object)"


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp what we apply, so a field dropped from the spec (absent from desired) is noticed too."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    obj["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
    return obj


def desired_replicas(md: ModelDeployment, deployment: dict[str, Any] | None) -> int:
    autoscaling = md.spec.autoscaling
    if autoscaling is None:
        return md.spec.replicas if md.spec.replicas is not None else 1
    # The autoscaler owns the number between min and max; until it speaks, keep what runs.
    current = (deployment or {}).get("spec", {}).get("replicas")
    wanted = md.status.get("desiredReplicas", current if current is not None else autoscaling.min_replicas)
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, int(wanted)))


class Reconciler:
    def __init__(self, state: OperatorState, body: dict[str, Any]) -> None:
        self.state = state
        self.kube = state.kube
        self.body = body
        self.md = ModelDeployment.from_body(body)
        self.events: list[tuple[str, str, str]] = []
        self.created: list[str] = []  # one "Created" event for all of a reconcile's new objects
        # Every log line names the ModelDeployment (a field of its own in JSON logs).
        self.log = logging.LoggerAdapter(LOG, {"namespace": self.md.namespace, "model_deployment": self.md.name})

    def event(self, event_type: str, reason: str, message: str) -> None:
        self.log.info("%s/%s: %s: %s", self.md.namespace, self.md.name, reason, message)
        self.events.append((event_type, reason, message))

    async def run(self) -> Outcome:
        md = self.md
        # 1. observe
        deployment, service, pdb = await asyncio.gather(
            self.read("Deployment"), self.read("Service"), self.read("PodDisruptionBudget")
        )
        control_key = await self.ensure_control_key()
        report = await asyncio.to_thread(inspect, md.spec.model.repository, md.model_name, md.spec.model.version)
        target = md.spec.model.version
        if target is None and report.readable and report.versions:
            target = report.versions[-1]

        pods = await self.list_pods()
        pods = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        autoscale: AutoscaleFacts | None = None
        if md.spec.autoscaling is not None:
            replicas, autoscale = await self.autoscale(md.spec.autoscaling, pods, deployment)
        else:
            replicas = desired_replicas(md, deployment)

        # 2. render, 3. apply what differs
        inputs = RenderInputs(replicas=replicas, target_version=target)
        applies = [
            self.apply_if_changed(render_deployment(md, inputs), deployment),
            self.apply_if_changed(render_service(md), service),
        ]
        if replicas > 1:
            applies.append(self.apply_if_changed(render_pdb(md), pdb))
        elif pdb is not None:
            applies.append(self.delete("PodDisruptionBudget"))
            self.event("Normal", "Deleted", "PodDisruptionBudget removed: one replica cannot tolerate a disruption")
        await asyncio.gather(*applies)

        # 4. bring each Triton to the target version and config
        current_hash = rollout_hash(md, inputs)
        pod_facts = await self.manage_servers(pods, report, target, control_key, current_hash)

        # 5. status, written only if it changed
        rollout_pending = deployment is not None and (
            deployment.get("status", {}).get("updatedReplicas", 0) < replicas
            or deployment.get("status", {}).get("replicas", 0) > replicas
        )
        facts = Facts(
            desired_replicas=replicas,
            repository=report,
            target_version=target,
            pods=tuple(pod_facts),
            rollout_pending=rollout_pending,
            gpu_resource=md.spec.server.gpu_resource_name,
            autoscale=autoscale,
        )
        old_status = dict(self.body.get("status") or {})
        new_status = compute_status(md, facts, old_status, now_rfc3339())
        READY.labels(md.namespace, md.name).set(int("reason" not in new_status))
        self.note_transitions(old_status, new_status)
        patch = status_patch(old_status, new_status)
        if patch is not None:
            try:
                updated = await self.kube.patch_status("ModelDeployment", md.namespace, md.name, patch)
                self.body["status"] = updated.get("status", new_status)
            except KubeError as error:
                if error.status != 404:  # deleted meanwhile: nothing to report on
                    raise
        await self.flush_events()

        # Servers starting or loading: look again soon. A crash loop or a failed load is not
        # progress; pod events and the resync bring those back.
        converging = any(
            not pod.live or not pod.serves(target) or not pod.ready
            for pod in pod_facts
            if pod.scheduled and pod.waiting_reason not in FAILING_WAIT_REASONS
        ) and not any(pod.load_error for pod in pod_facts)
        if converging:
            return Outcome(requeue_after=CONVERGING_REQUEUE_SECONDS)
        # The autoscaler evaluates on its own period, whether or not anything else happens.
        autoscaler = self.state.autoscalers.get((md.namespace, md.name))
        return Outcome(requeue_after=autoscaler.period if md.spec.autoscaling and autoscaler else None)

    # -- owned objects: read from the watch-fed cache once it is primed, else from the API ------
    async def read(self, kind: str) -> dict[str, Any] | None:
        md, cache = self.md, self.state.cache
        if cache.trusted(kind):
            return cache.get(kind, md.namespace, md.name)
        return await self.kube.get(kind, md.namespace, md.name)

    async def list_pods(self) -> list[dict[str, Any]]:
        md, cache = self.md, self.state.cache
        if cache.trusted("Pod"):
            return cache.select("Pod", md.namespace, selector_labels(md))
        return await self.kube.list("Pod", md.namespace, selector_string(md))

    async def delete(self, kind: str) -> None:
        await self.kube.delete(kind, self.md.namespace, self.md.name)
        self.state.cache.remove(kind, {"metadata": {"namespace": self.md.namespace, "name": self.md.name}})

    # -- autoscaling -------------------------------------------------------------------
    async def autoscale(
        self, spec: AutoscalingSpec, pods: list[dict[str, Any]], deployment: dict[str, Any] | None
    ) -> tuple[int, AutoscaleFacts | None]:
        md = self.md
        key = (md.namespace, md.name)
        source = spec.prometheus.url if spec.prometheus else "pods"
        state = self.state.autoscalers.get(key)
        if state is None or state.source != source:
            if state is not None:
                await state.reader.close()
            reader = PrometheusReader(source) if spec.prometheus else PodMetricsReader()
            state = self.state.autoscalers[key] = AutoscalerState(reader=reader, source=source)
        current = state.replicas if state.replicas is not None else desired_replicas(md, deployment)
        now = time.monotonic()
        if now - state.last_evaluation < state.period:
            return max(spec.min_replicas, min(spec.max_replicas, current)), None
        state.last_evaluation = now
        # Pods still loading or not ready are left out: they serve nothing yet.
        ready = {
            pod["metadata"]["uid"]: (pod["metadata"]["name"], pod["status"]["podIP"])
            for pod in pods
            if pod_basics(pod).ready and pod.get("status", {}).get("podIP")
        }
        try:
            measurement = await state.reader.measure(ready, md.model_name)
        except Exception as error:  # e.g. Prometheus unreachable: say so, hold the replica count
            state.replicas = current
            self.log.warning("%s/%s: cannot measure latency: %s", md.namespace, md.name, error)
            return current, AutoscaleFacts(
                None, None, None, None, 0.0, spec.target_latency_ms, spec.metric, (f"{source}: {error}",)
            )
        observation = Observation(
            latency_ms=measurement.latency(spec.metric),
            request_rate=measurement.request_rate,
            ready_replicas=measurement.measured_pods,
            window_seconds=measurement.window_seconds,
            average_ms=measurement.average_ms,
            busy=measurement.busy,
            arrival_rate=measurement.arrival_rate if measurement.measured_pods else None,
            pending=measurement.pending,
        )
        decision = decide(observation, spec, current, state.history, now)
        state.history = decision.history
        breached = observation.latency_ms is not None and observation.latency_ms > spec.target_latency_ms
        state.period = BREACH_PERIOD_SECONDS if breached else AUTOSCALE_PERIOD_SECONDS
        state.replicas = decision.replicas
        record_decision(self.log, md, decision, current, observation)
        if decision.direction != "none":
            self.event("Normal", "Scaled", f"{current} -> {decision.replicas}: {decision.reason}")
        facts = AutoscaleFacts(
            latency_ms=observation.latency_ms,
            p95_ms=measurement.p95_ms,
            average_ms=measurement.average_ms,
            queue_ms=measurement.queue_ms,
            window_seconds=measurement.window_seconds,
            target_ms=spec.target_latency_ms,
            metric=spec.metric,
            unreadable=measurement.unreadable,
            scaled=decision.direction != "none",
        )
        return decision.replicas, facts

    # -- owned objects -----------------------------------------------------------------
    async def ensure_control_key(self) -> str:
        md = self.md
        cache_key = md.uid
        if cache_key in self.state.control_keys:
            return self.state.control_keys[cache_key]
        name = control_key_secret_name(md)
        key = secrets.token_urlsafe(32)
        if not self.body.get("status"):
            # Never reconciled: the Secret is almost surely missing, so create it in one call.
            try:
                await self.kube.create(render_control_key_secret(md, key))
                self.created.append(f"Secret {name}")
                self.state.control_keys[cache_key] = key
                return key
            except KubeError as error:
                if error.status != 409:
                    raise
        secret = await self.kube.get("Secret", md.namespace, name)
        if secret is not None and CONTROL_KEY_SECRET_KEY in (secret.get("data") or {}):
            key = base64.b64decode(secret["data"][CONTROL_KEY_SECRET_KEY]).decode()
            owners = {ref.get("uid") for ref in secret["metadata"].get("ownerReferences") or []}
            if md.uid not in owners:  # left by an earlier object of the same name: adopt it
                await self.kube.apply(render_control_key_secret(md, key))
        else:
            await self.kube.apply(render_control_key_secret(md, key))
            self.created.append(f"Secret {name}")
        self.state.control_keys[cache_key] = key
        return key

    async def apply_if_changed(self, desired: dict[str, Any], live: dict[str, Any] | None) -> None:
        desired = with_applied_hash(desired)
        if live is not None and is_subset(desired, live):
            return
        kind, name = desired["kind"], desired["metadata"]["name"]
        self.state.cache.store(kind, await self.kube.apply(desired))  # read-your-writes
        if live is None:
            self.created.append(f"{kind} {name}")
            return
        live_hash = live.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
        unstamped = copy.deepcopy(desired)
        del unstamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        changed = first_difference(unstamped, live) if not is_subset(unstamped, live) else "a field no longer set"
        if live_hash == desired["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]:
            # Same desired state as last time, yet live differs: someone edited it by hand.
            self.event("Warning", "DriftReverted", f"{kind} {name}: {changed} reverted")
        else:
            self.event("Normal", "Updated", f"{kind} {name}: {changed} changed")

    # -- Triton --------------------------------------------------------------------------
    async def manage_servers(
        self,
        pods: list[dict[str, Any]],
        report: RepositoryReport,
        target: int | None,
        control_key: str,
        current_hash: str,
    ) -> list[PodFacts]:
        md = self.md
        in_place = md.spec.rollout.strategy == "InPlace"
        facts: list[PodFacts] = []
        servers: dict[str, TritonServer] = {}
        for pod in pods:
            base = pod_basics(pod)
            facts.append(base)
            ip = pod.get("status", {}).get("podIP")
            if pod.get("status", {}).get("phase") == "Running" and ip:
                servers[pod["metadata"]["uid"]] = TritonServer(ip, control_key)
        if not servers:
            return facts

        by_uid = {pod["metadata"]["uid"]: pod for pod in pods}

        async def probe(uid: str) -> tuple[str, bool, list[int], dict[str, Any] | None]:
            server = servers[uid]
            if not await server.is_live():
                return uid, False, [], None
            try:
                versions = await server.ready_versions(md.model_name)
                config = await server.model_config(md.model_name) if versions else None
            except TritonError:
                return uid, False, [], None
            return uid, True, versions, config

        observed = {
            uid: (live, versions, config) for uid, live, versions, config in await asyncio.gather(*map(probe, servers))
        }
        if report.readable and report.config is not None and report.problem is None:
            base_config = report.config
        elif report.problem is not None:
            base_config = None  # the repository is broken: load nothing new
        else:
            base_config = self.learned_config(observed)

        async def converge(uid: str) -> PodFacts:
            pod = by_uid[uid]
            basics = next(f for f in facts if f.name == pod["metadata"]["name"])
            live, versions, loaded_config = observed[uid]
            if not live:
                return basics
            server = servers[uid]
            pod_hash = pod["metadata"].get("annotations", {}).get(ANNOTATION_ROLLOUT_HASH)
            # With Recreate/Rolling, old pods keep their version until the Deployment replaces them.
            managed = in_place or pod_hash == current_hash
            wanted = self.wanted_config(base_config, target)
            current = loaded_config is not None and config_is_current(loaded_config, versions, wanted, target)
            error: str | None = None
            if managed and not current and report.problem is None:
                versions, loaded_config, error = await self.load(pod, server, wanted, versions, target, in_place)
                current = loaded_config is not None and config_is_current(loaded_config, versions, wanted, target)
            result = PodFacts(
                **{
                    **basics.__dict__,
                    "live": True,
                    "ready_versions": tuple(versions),
                    "config_current": current or (not managed and bool(versions)),
                    "load_error": error,
                }
            )
            if result.serves(target if managed else None):
                await self.open_gate(pod, result)
            return result

        converged = {f.name: f for f in await asyncio.gather(*map(converge, servers))}
        return [converged.get(f.name, f) for f in facts]

    def learned_config(
        self, observed: dict[str, tuple[bool, list[int], dict[str, Any] | None]]
    ) -> model_config_pb2.ModelConfig | None:
        """Where the operator cannot read the storage: the config a serving pod reports."""
        key = self.md.uid
        for _live, _versions, config in observed.values():
            if config:
                self.state.learned_configs[key] = from_json(config)
                break
        return self.state.learned_configs.get(key)

    def wanted_config(self, base: model_config_pb2.ModelConfig | None, target: int | None) -> str | None:
        if base is None:
            return None
        config = effective_config(base, self.md.model_name, self.md.spec.model.config, [target] if target else None)
        return to_json(config)

    async def load(
        self,
        pod: dict[str, Any],
        server: TritonServer,
        wanted: str | None,
        versions: list[int],
        target: int | None,
        in_place: bool,
    ) -> tuple[list[int], dict[str, Any] | None, str | None]:
        """Load the wanted config on one server; return (ready versions, loaded config, error)."""
        md = self.md
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        failed = self.state.failed_loads.get(uid)
        if failed and failed.config_json == wanted and time.monotonic() - failed.at < FAILED_LOAD_RETRY_SECONDS:
            return versions, None, failed.message
        try:
            if wanted is None:
                # Nothing known about the repository's config: let Triton load it as-is, then
                # learn the config from Triton and reload exactly the target version.
                self.event("Normal", "Loading", f"{md.model_name} on {name} with the repository's config")
                await server.load(md.model_name, None)
                base = from_json(await server.model_config(md.model_name))
                self.state.learned_configs[md.uid] = base
                wanted = self.wanted_config(base, target)
            old = [v for v in versions if v != target]
            if in_place and old and target is not None and target not in versions and wanted is not None:
                # Zero downtime: serve old and new side by side, then retire the old one.
                both = effective_config(
                    from_json(json.loads(wanted)), md.model_name, md.spec.model.config, sorted({*old, target})
                )
                self.event("Normal", "LoadingVersion", f"version {target} on {name} beside {old}")
                await server.load(md.model_name, to_json(both))
                self.event("Normal", "RetiringVersion", f"version(s) {old} on {name}: {target} is ready")
            else:
                self.event("Normal", "LoadingVersion", f"version {target or 'latest'} of {md.model_name} on {name}")
            await server.load(md.model_name, wanted)
            self.state.failed_loads.pop(uid, None)
            ready = await server.ready_versions(md.model_name)
            return ready, await server.model_config(md.model_name), None
        except ServerUnreachable as error:
            # The pod is going away or its server restarting: nothing to blame on the model,
            # and the next reconcile (pod events, resync) finds it again or finds it gone.
            self.log.info("%s/%s: %s unreachable during load: %s", md.namespace, md.name, name, error)
            return versions, None, None
        except TritonError as error:
            message = str(error).strip()
            self.state.failed_loads[uid] = FailedLoad(wanted, message, time.monotonic())
            self.event("Warning", "LoadFailed", f"{name}: {message}")
            try:
                still = await server.ready_versions(md.model_name)
            except TritonError:
                still = versions
            return still, None, message

    async def open_gate(self, pod: dict[str, Any], facts: PodFacts) -> None:
        conditions = {c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions") or []}
        if conditions.get(MODEL_READY_GATE) == "True":
            return
        versions = ",".join(map(str, facts.ready_versions))
        patched = await self.kube.patch_pod_condition(
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {
                "type": MODEL_READY_GATE,
                "status": "True",
                "reason": "ModelLoaded",
                "message": f"serving {self.md.model_name} version(s) {versions}",
                "lastTransitionTime": now_rfc3339(),
            },
        )
        if patched is not None:
            self.state.cache.store("Pod", {**patched, "kind": "Pod"})

    # -- events ------------------------------------------------------------------------
    def note_transitions(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_conditions = {c["type"]: c for c in old.get("conditions") or []}
        for cond in new["conditions"]:
            before = old_conditions.get(cond["type"])
            if before and before.get("status") == cond["status"] and before.get("reason") == cond["reason"]:
                continue
            if cond["type"] == "Ready":
                progress = cond["status"] == "True" or cond["reason"] in PROGRESS_REASONS
                kind = "Normal" if progress else "Warning"
                if cond["status"] == "True" or before is not None:
                    self.event(kind, cond["reason"], cond["message"])
            elif cond["status"] == "False" and cond["type"] != "Progressing" and cond["reason"] != "Loading":
                self.event("Warning", cond["reason"], cond["message"])
        if old.get("activeVersion") not in (None, new.get("activeVersion")) and new.get("activeVersion"):
            self.event(
                "Normal", "VersionSwitched", f"version {old['activeVersion']} -> {new['activeVersion']} on all replicas"
            )

    async def flush_events(self) -> None:
        if self.created:
            self.events.insert(0, ("Normal", "Created", ", ".join(self.created)))
            self.created.clear()
        involved = {
            "apiVersion": self.body["apiVersion"],
            "kind": self.body["kind"],
            "metadata": self.body["metadata"],
        }
        await asyncio.gather(*(self.kube.post_event(involved, *event) for event in self.events))
        self.events.clear()


def pod_basics(pod: dict[str, Any]) -> PodFacts:
    status = pod.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    waiting: dict[str, Any] = next(
        (c["state"]["waiting"] for c in status.get("containerStatuses") or [] if c.get("state", {}).get("waiting")),
        {},
    )
    return PodFacts(
        name=pod["metadata"]["name"],
        scheduled=scheduled.get("status") != "False" and bool(pod.get("spec", {}).get("nodeName")),
        unschedulable_message=scheduled.get("message") if scheduled.get("reason") == "Unschedulable" else None,
        ready=conditions.get("Ready", {}).get("status") == "True",
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message", ""),
    )


def config_is_current(loaded: dict[str, Any], ready: list[int], wanted: str | None, target: int | None) -> bool:
    """The server serves exactly the target version, with the fields the operator sets as wanted.

    Versions come from the repository index: after a reload that only changes versions, Triton
    keeps reporting the previous version_policy in the model config."""
    if ready != ([target] if target is not None else ready[-1:]) or not ready:
        return False
    if wanted is None:
        return True
    desired = json.loads(wanted)
    for key in ("max_batch_size", "dynamic_batching"):
        if key in desired and not is_subset(_numbers(desired[key]), _numbers(loaded.get(key))):
            return False
    wanted_counts = [g.get("count", 1) for g in desired.get("instance_group", [])]
    loaded_counts = [g.get("count", 1) for g in loaded.get("instance_group", [])]
    return not wanted_counts or wanted_counts == loaded_counts


def _numbers(value: Any) -> Any:
    """Triton prints int64 fields as strings in JSON; compare them as numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def record_decision(
    log: logging.LoggerAdapter[logging.Logger],
    md: ModelDeployment,
    decision: Decision,
    current: int,
    observation: Observation,
) -> None:
    labels = (md.namespace, md.name)
    DESIRED_REPLICAS.labels(*labels).set(decision.replicas)
    CURRENT_REPLICAS.labels(*labels).set(current)
    if md.spec.autoscaling is not None:
        TARGET_LATENCY.labels(*labels).set(md.spec.autoscaling.target_latency_ms)
        if observation.latency_ms is not None:
            OBSERVED_LATENCY.labels(*labels, md.spec.autoscaling.metric).set(observation.latency_ms)
    DECISIONS.labels(decision.direction).inc()
    log.info(
        "%s/%s: autoscaler %s: %d -> %d (%s; %.1f req/s over %d ready)",
        md.namespace,
        md.name,
        decision.direction,
        current,
        decision.replicas,
        decision.reason,
        observation.request_rate,
        observation.ready_replicas,
    )


def forget(state: OperatorState, namespace: str, name: str, uid: str | None) -> None:
    """Drop what the operator remembers of a deleted ModelDeployment."""
    if uid:
        state.control_keys.pop(uid, None)
        state.learned_configs.pop(uid, None)
    forget_metrics(namespace, name)


def forget_metrics(namespace: str, name: str) -> None:
    """Drop a deleted ModelDeployment's series, so dashboards do not show it forever."""
    for gauge in (READY, DESIRED_REPLICAS, CURRENT_REPLICAS, TARGET_LATENCY):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    for metric in ("p95", "average", "queue"):
        with contextlib.suppress(KeyError):
            OBSERVED_LATENCY.remove(namespace, name, metric)
