"""The in-place switch's decisions, pure and table-tested: plan() per pod (what one server needs)
and next_swap_step() (which pod a pod-by-pod swap takes next, and when it waits)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.fakes import FakeTriton, base_config
from tritonop.api.spec import ModelDeployment
from tritonop.serving import (
    FAILED_LOAD_RETRY_SECONDS,
    Action,
    FailedLoad,
    Kind,
    Probe,
    SwapKind,
    SwapNeed,
    SwapPod,
    SwapStep,
    next_swap_step,
    plan,
)
from tritonop.serving.plan import does_not_fit, wanted_config
from tritonop.serving.swap import swap_blocked, swap_notice
from tritonop.triton import ServerUnreachable, TritonError

NOW = 5_000.0


def md(**config: Any) -> ModelDeployment:
    model = {"name": "m", "repository": "file:///r", **({"config": config} if config else {})}
    return ModelDeployment.from_body(
        {"metadata": {"name": "m", "namespace": "n", "uid": "u"}, "spec": {"model": model}}
    )


WANTED_3 = wanted_config(base_config(), md(), 3)
BATCH_4 = wanted_config(base_config(), md(maxBatchSize=4), 3)  # an override the servers do not have yet


def serving(*versions: int) -> Probe:
    """A live server serving `versions` with the repository's config."""
    return Probe(True, versions, FakeTriton().serve(*versions).config if versions else None)


def failed(config: str | None, seconds_ago: float) -> FailedLoad:
    return FailedLoad(config, "corrupt weights file", NOW - seconds_ago)


def case(name: str, probe: Probe, wanted: str | None, expected: Action, **given: Any) -> Any:
    """One row: the probe and wanted config of a pod whose version is 3 (unless `version` is
    given), a `failure` if any, plan()'s flags, and the action expected."""
    return pytest.param(probe, wanted, given.pop("version", 3), given.pop("failure", None), given, expected, id=name)


LATEST = wanted_config(base_config(), md(), None)
BESIDE_2 = Action(Kind.LOAD_BESIDE, "SideBySide", (2,))
OUT_OF_TEMPLATE = {"managed": False, "in_place": False}
# fmt: off
PLAN_CASES = [
    case("Triton does not answer", Probe(False), WANTED_3, Action(Kind.NOT_LIVE)),
    case("Recreate/Rolling: an older template's pod keeps its version", serving(2), WANTED_3,
         Action(Kind.AWAITING_REPLACEMENT), **OUT_OF_TEMPLATE),
    case("step 3: serves exactly the target, as wanted", serving(3), WANTED_3, Action(Kind.CURRENT)),
    case("latest: the highest version loaded", serving(3), LATEST, Action(Kind.CURRENT), version=None),
    case("current: an old failure no longer matters", serving(3), WANTED_3, Action(Kind.CURRENT),
         failure=failed(WANTED_3, 1)),
    case("a new server (nothing loaded) loads the target alone", serving(), WANTED_3,
         Action(Kind.LOAD_ALONE, "Initial")),
    case("the repository's config unknown: Triton loads it as-is first", serving(), None,
         Action(Kind.LOAD_ALONE, "Initial", learn_first=True)),
    case("step 4: the target beside the old version", serving(2), WANTED_3, BESIDE_2),
    case("beside, the config learned first", serving(2), None,
         Action(Kind.LOAD_BESIDE, "SideBySide", (2,), learn_first=True)),
    case("step 5 only: the target serves beside the old one already", serving(2, 3), WANTED_3,
         Action(Kind.RETIRE, "Reload", (2,))),
    case("the overrides changed: the target reloaded", serving(3), BATCH_4, Action(Kind.LOAD_ALONE, "Reload")),
    case("Recreate/Rolling: a pod of the current template loads the target alone", serving(2), WANTED_3,
         Action(Kind.LOAD_ALONE, "Reload", (2,)), in_place=False),
    case("overrides that cannot load: nothing loads", serving(2), WANTED_3, Action(Kind.CONFIG_PROBLEM),
         config_problem=True),
    case("the repository blocks the target: nothing loads", serving(2), WANTED_3, Action(Kind.REPOSITORY_BLOCKS),
         repository_blocks=True),
    case("node cache: the version is not on the node(s) yet: nothing loads", serving(2), WANTED_3,
         Action(Kind.AWAITING_STAGING), staging_blocks=True),
    case("node cache: a new server waits for its node's copy", serving(), WANTED_3,
         Action(Kind.AWAITING_STAGING), staging_blocks=True),
    case("a swap under way: a serving pod waits its turn", serving(2), WANTED_3, Action(Kind.AWAITING_SWAP),
         swapping=True),
    case("a swap under way: a new server loads the target at once", serving(), WANTED_3,
         Action(Kind.LOAD_ALONE, "Initial"), swapping=True),
    case("the same config failed 5 s ago: back off", serving(2), WANTED_3,
         Action(Kind.BACK_OFF, error="corrupt weights file"), failure=failed(WANTED_3, 5)),
    case("the same config failed FAILED_LOAD_RETRY_SECONDS ago: retried", serving(2), WANTED_3, BESIDE_2,
         failure=failed(WANTED_3, FAILED_LOAD_RETRY_SECONDS)),
    case("another config failed 5 s ago: loaded at once", serving(3), BATCH_4, Action(Kind.LOAD_ALONE, "Reload"),
         failure=failed(WANTED_3, 5)),
    case("the as-is load failed 5 s ago: back off", serving(), None,
         Action(Kind.BACK_OFF, error="corrupt weights file"), failure=failed(None, 5)),
]
# fmt: on


@pytest.mark.parametrize(("probe", "wanted", "version", "failure", "flags", "expected"), PLAN_CASES)
def test_plan(
    probe: Probe,
    wanted: str | None,
    version: int | None,
    failure: FailedLoad | None,
    flags: dict[str, bool],
    expected: Action,
) -> None:
    assert plan(probe, wanted, version, failure, NOW, **flags) == expected


def test_only_loads_are_loads() -> None:
    assert {kind for kind in Kind if Action(kind).loads} == {Kind.LOAD_ALONE, Kind.LOAD_BESIDE, Kind.RETIRE}


def test_out_of_memory_is_a_refusal_not_a_server_that_does_not_answer() -> None:
    assert does_not_fit(TritonError("failed to load 'm' version 2: CUDA out of memory. Tried to allocate 2 GiB"))
    assert does_not_fit(TritonError("onnx runtime error 6: MemoryAllocation failed"))
    assert not does_not_fit(TritonError("corrupt weights file: truncated at byte 4096"))
    assert not does_not_fit(ServerUnreachable("load: ClientConnectorError: out of memory"))


NEED = SwapNeed(3, "CUDA out of memory", announced=True)


def pods(*spec: str) -> list[SwapPod]:
    """One letter per pod: "s" serves the target, "r" is behind and Ready, "n" behind and not Ready,
    "x" serves the target but is not Ready (yet)."""
    return [SwapPod(f"p{i}", letter in "sr", letter in "sx") for i, letter in enumerate(spec)]


def step(name: str, swap_pods: list[SwapPod], expected: SwapStep, **given: Any) -> Any:
    """One row: the pods, the swap need (announced unless `need` is given), allowSwapDowntime
    (`allow`), the failures by pod uid, and the step expected."""
    need, allow, failures = given.get("need", NEED), given.get("allow", False), given.get("failures", {})
    return pytest.param(swap_pods, need, allow, failures, expected, id=name)


UNSAID = SwapNeed(3, "oom")
# fmt: off
SWAP_CASES = [
    step("every pod serves the target: done", pods("s", "s", "s"), SwapStep(SwapKind.DONE)),
    step("no running pod: nothing is behind, done", [], SwapStep(SwapKind.DONE)),
    step("one replica without allowSwapDowntime: blocked", pods("r"), SwapStep(SwapKind.BLOCKED, "p0")),
    step("blocked comes before the announcement", pods("r"), SwapStep(SwapKind.BLOCKED, "p0"), need=UNSAID),
    step("one replica with allowSwapDowntime: swapped", pods("r"), SwapStep(SwapKind.SWAP, "p0"), allow=True),
    step("said in status first", pods("r", "r", "r"), SwapStep(SwapKind.ANNOUNCE, "p0"), need=UNSAID),
    step("the first pod behind, while every other one is Ready", pods("s", "r", "r"), SwapStep(SwapKind.SWAP, "p1")),
    step("a pod a swap took out of service goes first", pods("r", "r", "n"), SwapStep(SwapKind.SWAP, "p2")),
    step("another pod not Ready: wait", pods("x", "r", "r"), SwapStep(SwapKind.WAIT, "p1")),
    step("two pods out of service: the first is next, waiting for the other", pods("n", "n", "s"),
         SwapStep(SwapKind.WAIT, "p0")),
    step("the pod next in turn failed 5 s ago: the swap waits, the second candidate is not taken",
         pods("r", "r", "r"), SwapStep(SwapKind.BACK_OFF, "p0", "corrupt weights file"),
         failures={"p0": failed("any config", 5)}),
    step("... and is retried after FAILED_LOAD_RETRY_SECONDS", pods("r", "r", "r"), SwapStep(SwapKind.SWAP, "p0"),
         failures={"p0": failed("any config", FAILED_LOAD_RETRY_SECONDS)}),
    step("a failure of a pod not next in turn holds nothing", pods("r", "r", "r"), SwapStep(SwapKind.SWAP, "p0"),
         failures={"p1": failed(None, 5)}),
    step("a pod out of service whose swap failed: back off", pods("r", "n", "r"),
         SwapStep(SwapKind.BACK_OFF, "p1", "corrupt weights file"), failures={"p1": failed(None, 5)}),
    step("announced before a failure is waited out", pods("r", "r"), SwapStep(SwapKind.ANNOUNCE, "p0"),
         need=UNSAID, failures={"p0": failed(None, 5)}),
]
# fmt: on


@pytest.mark.parametrize(("swap_pods", "need", "allow_downtime", "failures", "expected"), SWAP_CASES)
def test_next_swap_step(
    swap_pods: list[SwapPod], need: SwapNeed, allow_downtime: bool, failures: dict[str, FailedLoad], expected: SwapStep
) -> None:
    assert next_swap_step(swap_pods, need, allow_downtime, failures, NOW) == expected


def test_what_status_says_of_a_swap() -> None:
    need = SwapNeed(3, "CUDA out of memory " + "x" * 400)
    assert "does not serve during the swap" in swap_notice(need, 1)
    assert "does not serve during the swap" not in swap_notice(need, 2)
    assert len(swap_notice(need, 2)) < 500
    blocked = swap_blocked(need, 3)
    assert "spec.rollout.allowSwapDowntime: true" in blocked and "CUDA out of memory" in blocked
