"""spec.autoscaling.tokenLatency (TTFT and ITL targets of a streaming model): the pydantic model,
status.tokenLatency and the LatencyWithinTarget condition with both kinds of target."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tritonop.api.spec import ModelDeployment, TokenLatencyTargets
from tritonop.api.status import ModelDeploymentStatus
from tritonop.autoscale.tokens import TRITON_FIRST_RESPONSE, VLLM_ITL, VLLM_TTFT, Histogram, Percentile, TokenWindow
from tritonop.facts import AutoscaleFacts, Facts, PodFacts, TokenFacts
from tritonop.repository.report import RepositoryReport
from tritonop.status import compute_status

NOW = "2026-11-25T12:00:00Z"


def md(token_latency: dict[str, Any] | None = None, target: int = 5000) -> ModelDeployment:
    autoscaling: dict[str, Any] = {"maxReplicas": 4, "targetLatencyMs": target}
    if token_latency is not None:
        autoscaling["tokenLatency"] = token_latency
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "llm", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": {"model": {"repository": "file:///r", "version": 1}, "autoscaling": autoscaling},
        }
    )


def test_targets_parse_from_camel_case_with_the_default_percentile() -> None:
    targets = md({"timeToFirstTokenMs": 500, "interTokenLatencyMs": 50}).spec.autoscaling
    assert targets is not None and targets.token_latency == TokenLatencyTargets(
        time_to_first_token_ms=500, inter_token_latency_ms=50, percentile=95
    )
    only_itl = TokenLatencyTargets.model_validate({"interTokenLatencyMs": 40, "percentile": 99.9})
    assert (only_itl.time_to_first_token_ms, only_itl.percentile) == (None, 99.9)
    assert md().spec.autoscaling is not None and md().spec.autoscaling.token_latency is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "must set timeToFirstTokenMs, interTokenLatencyMs or both"),
        ({"percentile": 99}, "must set timeToFirstTokenMs, interTokenLatencyMs or both"),
        ({"timeToFirstTokenMs": 500, "percentile": 40}, "greater than or equal to 50"),
        ({"timeToFirstTokenMs": 500, "percentile": 100}, "less than or equal to 99.9"),
        ({"timeToFirstTokenMs": 0}, "greater than or equal to 1"),
        ({"interTokenLatencyMs": -5}, "greater than or equal to 1"),
        ({"interTokenLatencyMs": 12.5}, "integer"),
        ({"timeToFirstTokenMs": 500, "ttftMs": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_targets_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TokenLatencyTargets.model_validate(body)


def histogram(*ms: float) -> Histogram:
    """A histogram with one bucket per value (exact quantiles at the bounds)."""
    bounds = (*sorted(ms), float("inf"))
    return Histogram(bounds, (*(float(i + 1) for i in range(len(ms))), float(len(ms))))


def auto(latency: float | None = 2400.0, tokens: TokenFacts | None = None, **extra: Any) -> AutoscaleFacts:
    return AutoscaleFacts(latency, latency, latency, 1.0, 3.0, 5000, "p95", tokens=tokens, **extra)


def tokens(ttft: float | None, itl: float | None, beyond: bool = False) -> TokenFacts:
    return TokenFacts(
        95,
        None if ttft is None else Percentile(ttft, beyond),
        None if itl is None else Percentile(itl),
        f"{VLLM_TTFT}, {VLLM_ITL}",
        16.0,
        ttft_exported=ttft is not None,
        itl_exported=itl is not None,
    )


def status(spec: ModelDeployment, facts: AutoscaleFacts | None) -> ModelDeploymentStatus:
    pods = (PodFacts("a", ready=True, live=True, ready_versions=(1,), config_current=True),)
    report = RepositoryReport(readable=True, message="ok", versions=[1])
    return compute_status(spec, Facts(1, report, 1, pods, autoscale=facts), ModelDeploymentStatus(), NOW)


BOTH = {"timeToFirstTokenMs": 500, "interTokenLatencyMs": 50}

CONDITIONS = [
    ("both within", BOTH, auto(tokens=tokens(420, 38)), "True", "WithinTarget", ["TTFT p95 420ms, target 500ms"]),
    ("ttft above", BOTH, auto(tokens=tokens(900, 38)), "False", "AboveTarget", ["TTFT p95 900ms, target 500ms"]),
    ("itl above", BOTH, auto(tokens=tokens(420, 75)), "False", "AboveTarget", ["ITL p95 75ms, target 50ms"]),
    (
        "request latency above, tokens within",
        BOTH,
        auto(latency=6000.0, tokens=tokens(420, 38)),
        "False",
        "AboveTarget",
        ["p95 6000ms, target 5000ms"],
    ),
    (
        "only the TTFT target: ITL not needed",
        {"timeToFirstTokenMs": 500},
        auto(tokens=tokens(420, None)),
        "True",
        "WithinTarget",
        ["TTFT p95 420ms"],
    ),
    (
        "ITL not exported (TensorRT-LLM)",
        BOTH,
        auto(tokens=tokens(420, None)),
        "Unknown",
        "TokenLatencyNotMeasured",
        ["no ITL measured: the pods do not export vllm:time_per_output_token_seconds", "TTFT p95 420ms"],
    ),
    (
        "no token family at all (the runner had no window yet)",
        BOTH,
        auto(tokens=None),
        "Unknown",
        "TokenLatencyNotMeasured",
        ["no TTFT measured: the pods export neither", "nv_inference_first_response_histogram_ms"],
    ),
    (
        "exported, but no first token in the window",
        BOTH,
        auto(tokens=TokenFacts(95, None, Percentile(30), ttft_exported=True, itl_exported=True)),
        "Unknown",
        "TokenLatencyNotMeasured",
        ["no TTFT in the window", "ITL p95 30ms"],
    ),
    (
        "beyond the highest bucket, above the target",
        BOTH,
        auto(tokens=tokens(10000, 38, beyond=True)),
        "False",
        "AboveTarget",
        ["TTFT p95 above 10000ms (the histogram's highest bucket), target 500ms"],
    ),
    (
        "beyond the highest bucket, which is below a loose target: cannot tell",
        {"timeToFirstTokenMs": 20000},
        auto(tokens=tokens(10000, None, beyond=True)),
        "Unknown",
        "TokenLatencyNotMeasured",
        ["TTFT p95 above 10000ms"],
    ),
    ("no traffic", BOTH, auto(latency=None), "Unknown", "NoTraffic", ["no p95 latency measured"]),
    (
        "a target below the service time says so first",
        BOTH,
        auto(tokens=tokens(420, 38), unreachable="target 5000ms is below the compute time"),
        "False",
        "TargetBelowServiceTime",
        ["TTFT p95 420ms"],
    ),
]


@pytest.mark.parametrize(
    ("case", "targets", "facts", "want", "reason", "fragments"), CONDITIONS, ids=[c[0] for c in CONDITIONS]
)
def test_latency_within_target_covers_ttft_and_itl(
    case: str,
    targets: dict[str, Any],
    facts: AutoscaleFacts,
    want: str,
    reason: str,
    fragments: list[str],
) -> None:
    found = status(md(targets), facts).condition("LatencyWithinTarget")
    assert found is not None and (found.status, found.reason) == (want, reason), found
    for fragment in fragments:
        assert fragment in found.message, (fragment, found.message)


@pytest.mark.parametrize(
    ("image", "extra_args", "says"),
    [
        (None, [], "the operator sets --metrics-config=histogram_latencies=true (image release 25.10)"),
        (
            "registry.local/llm/triton-custom:2025-11",
            [],
            "the operator cannot tell the Triton release from the image registry.local/llm/triton-custom:2025-11 "
            "(it reads NGC's tritonserver:YY.MM-... tags): if it is 24.11 or later, add "
            "--metrics-config=histogram_latencies=true to spec.server.extraArgs",
        ),
        (None, ["--metrics-config=histogram_latencies=false"], "spec.server.extraArgs sets histogram_latencies"),
    ],
)
def test_without_a_ttft_family_the_message_says_how_the_first_response_histogram_is_turned_on(
    image: str | None, extra_args: list[str], says: str
) -> None:
    spec = md(BOTH)
    server = spec.spec.server.model_copy(update={"extra_args": extra_args, **({"image": image} if image else {})})
    spec = spec.model_copy(update={"spec": spec.spec.model_copy(update={"server": server})})
    found = status(spec, auto(tokens=None)).condition("LatencyWithinTarget")
    assert found is not None and found.reason == "TokenLatencyNotMeasured"
    want = f"{TRITON_FIRST_RESPONSE} (Triton 24.11+ with --metrics-config=histogram_latencies=true; {says})"
    assert want in found.message, found.message


def test_without_token_targets_the_token_figures_are_ignored() -> None:
    found = status(md(), auto(tokens=tokens(9000, 900))).condition("LatencyWithinTarget")
    assert found is not None and (found.status, found.reason) == ("True", "WithinTarget")
    assert "TTFT" not in found.message and status(md(), auto()).token_latency is None


def test_status_shows_the_measured_figures_and_keeps_them_between_evaluations() -> None:
    spec = md(BOTH)
    first = status(spec, auto(tokens=tokens(419.6, 37.7)))
    assert first.to_body()["tokenLatency"] == {
        "percentile": 95.0,
        "timeToFirstTokenMs": 420,
        "interTokenLatencyMs": 38,
        "source": f"{VLLM_TTFT}, {VLLM_ITL}",
        "windowSeconds": 16,
    }
    pods = (PodFacts("a", ready=True, live=True, ready_versions=(1,), config_current=True),)
    report = RepositoryReport(readable=True, message="ok", versions=[1])
    kept = compute_status(spec, Facts(1, report, 1, pods, autoscale=None), first, NOW)
    assert kept.token_latency == first.token_latency
    nothing = status(spec, auto(tokens=tokens(None, None)))
    assert nothing.token_latency is None


def test_token_facts_from_a_window_and_their_verdicts() -> None:
    window = TokenWindow(seconds=15.0, ttft=histogram(100, 200, 300, 400), ttft_source=VLLM_TTFT)
    facts = TokenFacts.of(window, 50)
    assert facts.ttft == Percentile(200.0) and facts.itl is None
    assert (facts.ttft_exported, facts.itl_exported, facts.source) == (True, False, VLLM_TTFT)
    assert facts.within(250, None) is True
    assert facts.within(150, None) is False
    assert facts.within(250, 50) is None  # ITL not measured: cannot tell
    assert facts.within(150, 50) is False  # one target missed is enough
    assert TokenFacts.of(None, 95) == TokenFacts(95)
