"""Per-ModelDeployment autoscaler state: the metrics reader, the decision history, the cadence.

policy.py decides (pure); metrics.py measures (I/O); this module keeps each ModelDeployment's
memory between reconciles, evaluates when its period is due, records each decision (log line,
Event, gauges) and releases everything when autoscaling is turned off or the object goes away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from tritonop.api.spec import LATENCY_METRICS, AutoscalingSpec, ModelDeployment
from tritonop.api.status import AutoscalerStatus, StartupStatus
from tritonop.autoscale import token_policy
from tritonop.autoscale.forecast import MIN_ERROR_SAMPLES, Forecast, LeadTime
from tritonop.autoscale.metrics import Measurement, PodMetricsReader, PrometheusReader
from tritonop.autoscale.policy import Decision, History, Observation, decide
from tritonop.autoscale.token_policy import TokenHistory, TokenObservation, TokenTargets
from tritonop.autoscale.tokens import TokenWindow
from tritonop.clock import Clock, SystemClock
from tritonop.events import EventRecorder
from tritonop.facts import AutoscaleFacts, TokenFacts
from tritonop.serving import pod_facts

LOG = logging.getLogger("tritonop.autoscale")
EARLY_TOLERANCE = 0.05  # fraction of the period
Key = tuple[str, str]  # (namespace, name)
MD_LABELS = ["namespace", "name"]
DESIRED_REPLICAS = Gauge("tritonop_autoscaler_desired_replicas", "Replicas the autoscaler wants.", MD_LABELS)
CURRENT_REPLICAS = Gauge("tritonop_autoscaler_current_replicas", "Replicas before the decision.", MD_LABELS)
OBSERVED_LATENCY = Gauge(
    "tritonop_autoscaler_observed_latency_ms", "Latency the autoscaler acted on.", ["namespace", "name", "metric"]
)
TARGET_LATENCY = Gauge("tritonop_autoscaler_target_latency_ms", "The spec's latency target.", MD_LABELS)
DECISIONS = Counter("tritonop_autoscaler_decisions_total", "Autoscaler decisions by direction.", ["direction"])
DECISIONS_BY_DIRECTION = {direction: DECISIONS.labels(direction) for direction in ("up", "down", "none")}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def learned_status(history: History, utilisation: float | None) -> AutoscalerStatus:
    """What status shows, and a restarted operator reads back (learned_history)."""
    forecast = history.forecast
    return AutoscalerStatus.model_validate(
        {
            "utilisation": _rounded(utilisation, 3),
            "capacityPerReplica": _rounded(history.capacity_per_replica, 3),
            "serviceMs": _rounded(history.service_ms, 2),
            "variability": _rounded(history.variability, 3),
            "leadSeconds": round(history.lead.seconds),
            "podStartSeconds": [round(s) for s in history.lead.samples],
            "forecastError": round(forecast.error, 3),
            "dailyProfile": [_rounded(v, 2) for v in forecast.daily.values] if forecast.daily.known else [],
            "weeklyProfile": [_rounded(v, 2) for v in forecast.weekly.values] if forecast.weekly.known else [],
        }
    )


def learned_history(learned: AutoscalerStatus | None) -> History:
    """A history that starts from what status kept (the windows and the trend start afresh)."""
    if learned is None:
        return History()
    forecast = Forecast()
    if learned.forecast_error is not None:
        forecast = dataclasses.replace(forecast, errors=(learned.forecast_error,) * MIN_ERROR_SAMPLES)
    for name in ("daily", "weekly"):
        values = getattr(learned, f"{name}_profile")
        profile = getattr(forecast, name)
        if len(values) == len(profile.values):
            forecast = dataclasses.replace(forecast, **{name: dataclasses.replace(profile, values=tuple(values))})
    return History(
        capacity_per_replica=learned.capacity_per_replica,
        service_ms=learned.service_ms,
        variability=learned.variability,
        lead=LeadTime(tuple(float(s) for s in learned.pod_start_seconds)),
        forecast=forecast,
    )


# A pod measured in status.startup counts from its creation; the autoscaler's lead time from the
# replica write, which comes this much earlier (the Deployment and ReplicaSet controllers).
CONTROLLER_SECONDS = 1.0


def lead_from_startup(startup: StartupStatus) -> LeadTime:
    """Before the autoscaler has timed a scale-up of its own: the pod starts status measured
    (any pod: the first ones, rescheduled ones), so a large model's minutes are planned for
    from the start instead of the 30 s default."""
    return LeadTime(tuple(total + CONTROLLER_SECONDS for total in startup.recent_total_seconds))


@dataclass(frozen=True)
class Scaling:
    """The replicas to run, and what the autoscaler measured (None: it did not evaluate now)."""

    replicas: int
    facts: AutoscaleFacts | None = None


@dataclass
class AutoscalerState:
    """One ModelDeployment's autoscaler memory (in-process, like the HPA controller's)."""

    reader: PodMetricsReader | PrometheusReader
    source: str
    period: float  # seconds between evaluations
    history: History = field(default_factory=History)
    # A streaming model with tokenLatency targets is sized by token_policy, which learns this.
    token_history: TokenHistory | None = None
    last_evaluation: float = float("-inf")
    replicas: int | None = None
    last_report: float = float("-inf")  # when status last got this autoscaler's measurement
    last_within: bool | None = None  # the latency verdict status last got
    last_shown: tuple[int | None, ...] | None = None  # the figures status last got, as it shows them
    last_gauges: tuple[object, ...] | None = None  # what the gauges last got (set only on change)
    # The ready pods (uid -> (name, ip)) of the pods list last seen: observe() hands back the same
    # list object while no pod changed, and readiness is then the same too.
    ready_of: tuple[list[dict[str, Any]], dict[str, tuple[str, str]]] | None = None
    last_unreachable: str | None = None  # the unreachable-target message last reported
    last_unused: str | None = None  # the unused-replicas hold last said
    last_learned: tuple[object, ...] | None = None  # when status last got the learned memory


def desired_replicas(md: ModelDeployment, deployment: dict[str, Any] | None) -> int:
    """Replicas without a new evaluation: the spec's, or the autoscaler's last word within bounds."""
    autoscaling = md.spec.autoscaling
    if autoscaling is None:
        return md.spec.replicas if md.spec.replicas is not None else 1
    # The autoscaler owns the number between min and max; until it speaks, keep what runs.
    current = (deployment or {}).get("spec", {}).get("replicas")
    wanted = md.status.desired_replicas
    if wanted is None:
        wanted = current if current is not None else autoscaling.min_replicas
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, int(wanted)))


class HoldsAutoscaler(Protocol):
    """Where one ModelDeployment's autoscaler state lives (its record in the operator's memory)."""

    autoscaler: AutoscalerState | None


# How a decision is taken (policy.decide; the simulator passes variants of it).
DecideFn = Callable[[Observation, AutoscalingSpec, int, History, float], Decision]


class Autoscalers:
    """How every ModelDeployment is autoscaled: the cadence, the clock and the policy. Each
    object's state lives in its own memory record (HoldsAutoscaler)."""

    def __init__(
        self,
        evaluate_every: float = 1.0,
        report_every: float = 5.0,
        clock: Clock | None = None,
        decide: DecideFn = decide,
    ) -> None:
        # Decisions come every second: a burst shows in the pending gauge within a second, and
        # each second of a breach costs requests. A scrape per pod is cheap. Status gets the
        # measurement every report_every seconds (and whenever the replicas or the latency
        # verdict change), so status writes stay rare.
        self.period = evaluate_every
        self.report_period = report_every
        self.clock = clock or SystemClock()
        self.decide = decide

    @staticmethod
    def decide_tokens(
        state: AutoscalerState,
        measurement: Measurement,
        observation: Observation,
        spec: AutoscalingSpec,
        current: int,
        now: float,
    ) -> Decision:
        """A streaming model with TTFT/ITL targets: token_policy sizes it from the token figures
        (its lead time starts from what the request policy learned of pod starts)."""
        tokens, targets = measurement.tokens, spec.token_latency
        assert tokens is not None and targets is not None
        if state.token_history is None:
            state.token_history = TokenHistory(lead=state.history.lead)
        decided = token_policy.decide(
            token_observation(tokens, observation, targets.percentile, measurement.recent_tokens),
            TokenTargets(
                targets.time_to_first_token_ms,
                targets.inter_token_latency_ms,
                targets.percentile,
                spec.min_replicas,
                spec.max_replicas,
                spec.scale_down_stabilization_seconds,
                spec.spare_replicas,
            ),
            current,
            state.token_history,
            now,
        )
        state.token_history = decided.history
        history = dataclasses.replace(state.history, lead=decided.history.lead)
        return Decision(
            decided.replicas,
            decided.recommendation,
            decided.direction,
            decided.reason,
            history,
            decided.unreachable,
            decided.utilisation,
        )

    @staticmethod
    def next_evaluation_in(md: ModelDeployment, held: HoldsAutoscaler) -> float | None:
        state = held.autoscaler
        return state.period if state is not None and md.spec.autoscaling is not None else None

    @staticmethod
    async def forget(held: HoldsAutoscaler, key: Key) -> None:
        """Release the reader (its HTTP session) and the gauges of one ModelDeployment."""
        state, held.autoscaler = held.autoscaler, None
        if state is not None:
            await state.reader.close()
        forget_metrics(*key)

    async def scale(
        self,
        md: ModelDeployment,
        pods: list[dict[str, Any]],
        deployment: dict[str, Any] | None,
        events: EventRecorder,
        held: HoldsAutoscaler,
    ) -> Scaling:
        key = (md.namespace, md.name)
        spec = md.spec.autoscaling
        if spec is None:
            if held.autoscaler is not None:  # autoscaling turned off: nothing to keep
                await self.forget(held, key)
            return Scaling(desired_replicas(md, deployment))
        state = await self._state(held, spec, md)
        if not state.history.lead.samples and md.status.startup is not None:
            state.history = dataclasses.replace(state.history, lead=lead_from_startup(md.status.startup))
        current = state.replicas if state.replicas is not None else desired_replicas(md, deployment)
        now = self.clock.monotonic()
        # A tick a hair early (the ticker's cadence is the period) still evaluates.
        if now - state.last_evaluation < state.period * (1 - EARLY_TOLERANCE):
            return Scaling(max(spec.min_replicas, min(spec.max_replicas, current)))
        state.last_evaluation = now
        # Pods still loading or not ready are left out: they serve nothing yet.
        if state.ready_of is not None and state.ready_of[0] is pods:
            ready = state.ready_of[1]
        else:
            ready = {
                pod["metadata"]["uid"]: (pod["metadata"]["name"], pod["status"]["podIP"])
                for pod in pods
                if pod_facts(pod).ready and pod.get("status", {}).get("podIP")
            }
            state.ready_of = (pods, ready)
        # Issue 24: the token families (from the pods or Prometheus) are read only for a spec with tokenLatency.
        state.reader.read_tokens = spec.token_latency is not None
        try:
            measurement = await state.reader.measure(ready, md.model_name)
        except Exception as error:  # e.g. Prometheus unreachable: say so, hold the replica count
            state.replicas = current
            events.log.warning("%s/%s: cannot measure latency: %s", md.namespace, md.name, error)
            unreadable = (f"{state.source}: {error}",)
            return Scaling(
                current,
                AutoscaleFacts(None, None, None, None, 0.0, spec.target_latency_ms, spec.metric, unreadable),
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
            longest_queue=measurement.longest_queue if measurement.measured_pods else None,
            queue_ms=measurement.queue_ms,
            service_ms=measurement.service_ms,
            wall_time=self.clock.time(),
            idle_replicas=measurement.idle_pods,
        )
        if spec.token_latency is not None and measurement.tokens is not None:
            decision = self.decide_tokens(state, measurement, observation, spec, current, now)
        else:
            decision = self.decide(observation, spec, current, state.history, now)
        state.history = decision.history
        state.replicas = decision.replicas
        state.last_gauges = record_decision(events, md, decision, current, observation, state.last_gauges)
        within = None if observation.latency_ms is None else observation.latency_ms <= spec.target_latency_ms
        # Issue 24: TTFT and ITL go to status and LatencyWithinTarget (sizing does not read them yet).
        targets = spec.token_latency
        token_facts = None if targets is None else TokenFacts.of(measurement.tokens, targets.percentile)
        if within and token_facts is not None and targets is not None:
            within = token_facts.within(targets.time_to_first_token_ms, targets.inter_token_latency_ms)
        # As status shows them (whole ms): figures that would not change status are no news. The
        # window's length alone is not either: it moves between 3 and 4 s with the cadence, and
        # idle objects with running pods would otherwise write status every report period.
        token_figures = (token_facts.ttft, token_facts.itl) if token_facts is not None else ()
        shown = tuple(
            None if value is None else round(value)
            for value in (
                measurement.p95_ms,
                measurement.p99_ms,
                measurement.average_ms,
                measurement.queue_ms,
                *(None if figure is None else figure.ms for figure in token_figures),  # issue 24
            )
        )
        if decision.unreachable != state.last_unreachable and decision.unreachable is not None:
            events.warning("TargetBelowServiceTime", decision.unreachable)
        if decision.unused is not None and state.last_unused is None:
            events.warning("ReplicasUnused", decision.unused)
        state.last_unused = decision.unused
        # The learned memory goes to status when something a restart needs changed: a profile
        # bucket closed (every 5 minutes), a pod start was measured, the verdict on the target moved,
        # a figure was learned for the first time (a steady deployment would otherwise show no
        # variability until the next bucket closed).
        history = decision.history
        learned_key = (
            history.forecast.daily.current,
            history.lead.samples,
            decision.unreachable,
            history.capacity_per_replica is None,
            history.service_ms is None,
            history.variability is None,
        )
        learned = learned_status(history, decision.utilisation) if learned_key != state.last_learned else None
        report = (
            decision.direction != "none"
            or within != state.last_within
            or bool(measurement.unreadable)
            or decision.unreachable != state.last_unreachable
            or learned is not None
            or (now - state.last_report >= self.report_period and shown != state.last_shown)
        )
        if not report:
            return Scaling(decision.replicas)
        state.last_report, state.last_within, state.last_shown = now, within, shown
        state.last_unreachable, state.last_learned = decision.unreachable, learned_key
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
            unreachable=decision.unreachable,
            learned=learned,
            tokens=token_facts,  # issue 24
            p99_ms=measurement.p99_ms,
        )
        return Scaling(decision.replicas, facts)

    async def _state(self, held: HoldsAutoscaler, spec: AutoscalingSpec, md: ModelDeployment) -> AutoscalerState:
        """The state for this spec's metrics source (a new source starts afresh, from what status
        kept of the learned memory)."""
        source = spec.prometheus.url if spec.prometheus else "pods"
        state = held.autoscaler
        if state is None or state.source != source:
            if state is not None:
                await state.reader.close()
            reader = PrometheusReader(source) if spec.prometheus else PodMetricsReader()
            state = held.autoscaler = AutoscalerState(
                reader=reader, source=source, period=self.period, history=learned_history(md.status.autoscaler)
            )
        return state


def tracked_pods(state: AutoscalerState | None) -> int:
    """Pods whose metric samples a reader keeps (released when a pod or object goes)."""
    return len(state.reader.samples) if state is not None and isinstance(state.reader, PodMetricsReader) else 0


def record_decision(
    events: EventRecorder,
    md: ModelDeployment,
    decision: Decision,
    current: int,
    observation: Observation,
    last_gauges: tuple[object, ...] | None = None,
) -> tuple[object, ...]:
    """Log, count and (on a change) post an Event for one decision; the gauges are set only when
    their values differ from `last_gauges` (evaluations come every second). Returns the values."""
    labels = (md.namespace, md.name)
    autoscaling = md.spec.autoscaling
    gauges = (decision.replicas, current, autoscaling, observation.latency_ms)
    if gauges != last_gauges:
        DESIRED_REPLICAS.labels(*labels).set(decision.replicas)
        CURRENT_REPLICAS.labels(*labels).set(current)
        if autoscaling is not None:
            TARGET_LATENCY.labels(*labels).set(autoscaling.target_latency_ms)
            if observation.latency_ms is not None:
                OBSERVED_LATENCY.labels(*labels, autoscaling.metric).set(observation.latency_ms)
    DECISIONS_BY_DIRECTION[decision.direction].inc()
    # Evaluations come every second: only changes are worth an info line.
    log = events.log.info if decision.direction != "none" else events.log.debug
    log(
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
    if decision.direction != "none":
        events.normal("Scaled", f"{current} -> {decision.replicas}: {decision.reason}")
    return gauges


def forget_metrics(namespace: str, name: str) -> None:
    """Drop a ModelDeployment's autoscaler series, so dashboards do not show it forever."""
    for gauge in (DESIRED_REPLICAS, CURRENT_REPLICAS, TARGET_LATENCY):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    for metric in LATENCY_METRICS:
        with contextlib.suppress(KeyError):
            OBSERVED_LATENCY.remove(namespace, name, metric)


def token_observation(
    tokens: TokenWindow, observation: Observation, percentile: float, recent: TokenWindow | None = None
) -> TokenObservation:
    """What token_policy reads: the deployment's token window and its request rate over the same
    window (the pod reader's; else the request-level rate), with the short window when there is one."""
    ttft, itl = tokens.ttft_percentile(percentile), tokens.itl_percentile(percentile)
    return TokenObservation(
        window_seconds=tokens.seconds,
        ready_replicas=observation.ready_replicas,
        arrival_rate=(
            tokens.arrival_rate
            if tokens.arrival_rate is not None
            else observation.arrival_rate
            if observation.arrival_rate is not None
            else observation.request_rate
        ),
        prompt_tokens_per_second=tokens.prompt_tokens_per_second or 0.0,
        generation_tokens_per_second=tokens.generation_tokens_per_second or 0.0,
        ttft_ms=ttft.ms if ttft is not None else None,
        itl_ms=itl.ms if itl is not None else None,
        ttft_mean_ms=tokens.ttft.mean if tokens.ttft is not None else None,
        itl_mean_ms=tokens.itl.mean if tokens.itl is not None else None,
        running=tokens.running or 0.0,
        waiting=tokens.waiting or 0.0,
        kv_cache_usage=tokens.kv_cache_usage,
        wall_time=observation.wall_time,
        recent=None if recent is None else token_observation(recent, observation, percentile),
    )
