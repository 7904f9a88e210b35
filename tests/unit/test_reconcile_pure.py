"""Pure helpers of the reconciler and the config override."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from tritonop.api.spec import ModelConfigOverrides, ModelDeployment
from tritonop.api.status import ModelDeploymentStatus
from tritonop.autoscale.runner import desired_replicas
from tritonop.events import EventRecorder
from tritonop.informer import CACHED_KINDS, ObjectCache
from tritonop.k8s import Credentials, KubeClient
from tritonop.memory import Settled
from tritonop.owned import Observed, Owned, OwnedMemory, first_difference, is_subset
from tritonop.quiet import fingerprint, parse, quiet
from tritonop.render.model_config import ModelConfigError, effective_config, override_problem, parse_pbtxt, to_json
from tritonop.serving import config_is_current
from tritonop.state import OperatorState

SLEEPY_CONFIG = (Path(__file__).resolve().parents[2] / "model_repo" / "sleepy" / "config.pbtxt").read_text()


def test_is_subset_ignores_server_defaults_but_not_changes() -> None:
    live = {"spec": {"replicas": 2, "template": {"containers": [{"image": "a", "imagePullPolicy": "IfNotPresent"}]}}}
    assert is_subset({"spec": {"template": {"containers": [{"image": "a"}]}}}, live)
    assert not is_subset({"spec": {"template": {"containers": [{"image": "b"}]}}}, live)
    assert not is_subset({"spec": {"template": {"containers": [{}, {}]}}}, live)
    assert first_difference({"spec": {"template": {"containers": [{"image": "b"}]}}}, live) == (
        "spec.template.containers[0].image"
    )


def md(**spec: object) -> ModelDeployment:
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "m", "namespace": "n", "uid": "u"},
            "spec": {"model": {"repository": "file:///r"}, **spec},
        }
    )


@pytest.mark.parametrize(
    ("spec", "live_replicas", "status", "expected"),
    [
        ({}, None, {}, 1),
        ({"replicas": 0}, 3, {}, 0),
        ({"replicas": 4}, 1, {}, 4),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetLatencyMs": 50}}, None, {}, 2),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetLatencyMs": 50}}, 4, {}, 4),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetLatencyMs": 50}}, 9, {}, 5),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetLatencyMs": 50}}, 2, {"desiredReplicas": 3}, 3),
    ],
)
def test_desired_replicas(
    spec: dict[str, object], live_replicas: int | None, status: dict[str, int], expected: int
) -> None:
    model = md(**spec).model_copy(update={"status": ModelDeploymentStatus.model_validate(status)})
    deployment = {"spec": {"replicas": live_replicas}} if live_replicas is not None else None
    assert desired_replicas(model, deployment) == expected


def test_effective_config_applies_overrides_and_pins_the_version() -> None:
    base = parse_pbtxt(SLEEPY_CONFIG)
    overrides = ModelConfigOverrides.model_validate(
        {
            "maxBatchSize": 4,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 200, "preferredBatchSizes": [2, 4]},
            "instanceCount": 3,
        }
    )
    config = json.loads(to_json(effective_config(base, "renamed", overrides, [3])))
    assert config["name"] == "renamed"
    assert config["version_policy"] == {"specific": {"versions": ["3"]}}
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": "200", "preferred_batch_size": [2, 4]}
    assert config["instance_group"] == [{"count": 3, "kind": "KIND_CPU"}]
    assert config["parameters"]["batch_delay_ms"] == {"string_value": "20"}
    latest = json.loads(to_json(effective_config(base, "m", None, None)))
    assert latest["version_policy"] == {"latest": {"num_versions": 1}}
    assert latest["max_batch_size"] == 8


def test_broken_config_is_a_clear_error() -> None:
    with pytest.raises(ModelConfigError, match=r"config\.pbtxt does not parse"):
        parse_pbtxt("backend: python\nmax_batch_size: [")


def test_config_is_current_uses_the_repository_index_for_versions() -> None:
    wanted = to_json(
        effective_config(parse_pbtxt(SLEEPY_CONFIG), "sleepy", ModelConfigOverrides(max_batch_size=4), [3])
    )
    # Triton reports int64 fields as numbers and keeps an old version_policy after a version-only reload.
    loaded = {
        "max_batch_size": 4,
        "version_policy": {"specific": {"versions": [2, 3]}},
        "dynamic_batching": {"max_queue_delay_microseconds": 1000, "preserve_ordering": False},
        "instance_group": [{"name": "sleepy_0", "kind": "KIND_CPU", "count": 1}],
    }
    assert config_is_current(loaded, [3], wanted, 3)
    assert not config_is_current(loaded, [2, 3], wanted, 3)
    assert not config_is_current({**loaded, "max_batch_size": 8}, [3], wanted, 3)
    assert config_is_current(loaded, [3], None, None)
    assert not config_is_current(loaded, [], None, None)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (None, None),
        ({"maxBatchSize": 4}, None),
        ({"dynamicBatching": {"preferredBatchSizes": [4, 8]}}, None),
        ({"dynamicBatching": {"preferredBatchSizes": [4, 16]}}, "16 larger than max_batch_size 8 from the repository"),
        ({"maxBatchSize": 32, "dynamicBatching": {"preferredBatchSizes": [16]}}, None),
        (
            {"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSizes": [8]}},
            "8 larger than max_batch_size 4 from spec.model.config.maxBatchSize",
        ),
        ({"maxBatchSize": 0, "dynamicBatching": {"preferredBatchSizes": [2]}}, "does not batch"),
    ],
)
def test_override_problems_admission_cannot_see(overrides: dict[str, object] | None, problem: str | None) -> None:
    """The repository's max_batch_size (8 for sleepy) is only known to the operator."""
    parsed = ModelConfigOverrides.model_validate(overrides) if overrides is not None else None
    found = override_problem(parse_pbtxt(SLEEPY_CONFIG), parsed)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "spec.model.config.dynamicBatching" in found


SEEN = ("10", "11", "-", "-", "12")
NOTHING = Observed(None, None, None, [])
SETTLED_MD = md(autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetLatencyMs": 100})
AT_100 = Settled(SEEN, 2, 100.0, SETTLED_MD, NOTHING)  # a full reconcile at t=100 that set 2 replicas


@pytest.mark.parametrize(
    ("case", "settled", "seen", "replicas", "nothing_to_report", "now", "want"),
    [
        ("nothing changed: only the autoscaler runs", AT_100, SEEN, 2, True, 110.0, True),
        ("no full reconcile settled yet", None, SEEN, 2, True, 110.0, False),
        ("a pod changed", AT_100, ("10", "11", "-", "-", "13"), 2, True, 110.0, False),
        ("a pod came", AT_100, (*SEEN, "14"), 2, True, 110.0, False),
        ("the decision changes the replicas", AT_100, SEEN, 3, True, 110.0, False),
        ("the measurement is due in status", AT_100, SEEN, 2, False, 110.0, False),
        ("a resync period since the last full one", AT_100, SEEN, 2, True, 130.0, False),
    ],
)
def test_quiet_reconcile_only_when_nothing_but_the_autoscaler_has_work(
    case: str,
    settled: Settled | None,
    seen: tuple[str, ...],
    replicas: int,
    nothing_to_report: bool,
    now: float,
    want: bool,
) -> None:
    assert quiet(settled, seen, replicas, nothing_to_report, now, resync=30.0) is want, case


def test_fingerprint_is_the_resource_versions_read() -> None:
    def obj(version: str) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": version}}

    observed = Observed(obj("2"), None, obj("3"), [obj("4"), obj("5")])
    assert fingerprint(obj("1"), observed) == ("1", "2", "-", "3", "4", "5")


def test_a_settled_object_is_not_parsed_again_until_its_resource_version_moves() -> None:
    body = {
        "metadata": {"name": "m", "namespace": "n", "uid": "u", "resourceVersion": "10"},
        "spec": {"model": {"repository": "file:///r"}, "replicas": 3},
        "status": {"desiredReplicas": 3},
    }
    # No request is made: the client only has to exist.
    state = OperatorState(kube=KubeClient(Credentials("https://127.0.0.1:1", ssl.create_default_context(), None, None)))
    fresh = parse(state.memory, body)
    assert fresh.spec.replicas == 3 and fresh.status.desired_replicas == 3
    left = fresh.model_copy(update={"status": ModelDeploymentStatus(desiredReplicas=3, readySummary="3/3")})
    state.memory.of(fresh).settled = Settled(("10", "-"), 3, 0.0, left, NOTHING)
    assert parse(state.memory, body) is left  # the same resourceVersion: what the reconcile left
    moved = {**body, "metadata": {**body["metadata"], "resourceVersion": "11"}, "spec": {**body["spec"], "replicas": 1}}
    assert parse(state.memory, moved).spec.replicas == 1  # someone wrote: parsed afresh
    other = {**body, "metadata": {**body["metadata"], "uid": "v"}}
    assert parse(state.memory, other) is not left


def test_observe_reuses_the_previous_pods_only_while_the_cache_shows_no_change() -> None:
    cache = ObjectCache()
    cache.primed.update(CACHED_KINDS)
    model = md(replicas=2)
    labels = {"app.kubernetes.io/name": "tritonserver", "app.kubernetes.io/instance": "m"}
    labels["app.kubernetes.io/managed-by"] = "tritonop"

    def pod(name: str, rv: int) -> dict[str, Any]:
        return {"metadata": {"namespace": "n", "name": name, "labels": labels, "resourceVersion": str(rv)}}

    cache.store("Pod", pod("m-1", 1))
    events = EventRecorder(logging.LoggerAdapter(logging.getLogger("test")), "n/m")
    kube = KubeClient(Credentials("https://127.0.0.1:1", ssl.create_default_context(), None, None))
    owned = Owned(kube, cache, OwnedMemory(), model, events)
    first = asyncio.run(owned.observe())
    assert [p["metadata"]["name"] for p in first.pods] == ["m-1"] and first.pod_revision
    again = asyncio.run(owned.observe(first))
    assert again.pods is first.pods  # nothing changed: the same list, not selected again
    cache.store("Pod", pod("m-2", 2))
    after = asyncio.run(owned.observe(first))
    assert [p["metadata"]["name"] for p in after.pods] == ["m-1", "m-2"]
    cache.store("Pod", pod("m-2", 3))  # a pod's status changed
    assert asyncio.run(owned.observe(after)).pods[1]["metadata"]["resourceVersion"] == "3"
