"""Autoscalers.scale (the runner): when the learned memory reaches status."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from types import SimpleNamespace

from tests.unit.fakes import FakeClock
from tritonop.api.spec import AutoscalingSpec, ModelDeployment
from tritonop.autoscale.metrics import Measurement, PodMetricsReader
from tritonop.autoscale.policy import Decision, History, Observation
from tritonop.autoscale.runner import Autoscalers, AutoscalerState
from tritonop.events import EventRecorder


class SteadyReader(PodMetricsReader):
    """The same window every time: 15 req/s over 3 s, nothing changing that status shows."""

    async def measure(self, pods: dict[str, tuple[str, str]], model: str) -> Measurement:
        return Measurement(15.0, 130.0, 30.0, 200.0, 3.0, len(pods), (), busy=0.4, arrival_rate=15.0)


def test_a_figure_learned_for_the_first_time_reaches_status_at_once() -> None:
    """A steady deployment learns its variability between two 5-minute profile buckets: status
    shows it when it is learned, not at the next bucket (or scale-up)."""
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": {"repository": "file:///r"}, "autoscaling": {"maxReplicas": 4, "targetLatencyMs": 400}},
    }
    md = ModelDeployment.from_body(body)
    pod = {
        "metadata": {"name": "m-0", "uid": "p0"},
        "status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    clock = FakeClock()
    learned_at = 4  # the evaluation whose window first teaches V

    def decide(observation: Observation, spec: AutoscalingSpec, current: int, history: History, now: float) -> Decision:
        history = dataclasses.replace(history, capacity_per_replica=10.0, service_ms=100.0)
        if now >= start + learned_at:
            history = dataclasses.replace(history, variability=0.4)
        return Decision(current, current, "none", "steady", history, utilisation=0.6)

    start = clock.now
    autoscalers = Autoscalers(clock=clock, report_every=60.0, decide=decide)
    held = SimpleNamespace(autoscaler=AutoscalerState(SteadyReader(), "pods", 1.0))
    events = EventRecorder(logging.LoggerAdapter(logging.getLogger("test")), "ns/m")
    shown: list[tuple[int, float | None]] = []
    for second in range(8):
        scaling = asyncio.run(autoscalers.scale(md, [pod], None, events, held))
        if scaling.facts is not None and scaling.facts.learned is not None:
            shown.append((second, scaling.facts.learned.variability))
        clock.advance(1.0)
    # The first evaluation reports (capacity learned); then nothing until V is learned, at once.
    assert shown == [(0, None), (learned_at, 0.4)]
