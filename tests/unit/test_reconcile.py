"""reconcile() end to end against in-memory fakes (tests/unit/fakes.py): the Kubernetes API, the
Triton servers at the pod IPs, and the clock. The test plays the kubelet (it starts the pods the
Deployment asks for). The same behaviour on the real control plane and real Triton is covered by
tests/integration; these run in milliseconds and reach the edge cases those cannot stage."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.unit.fakes import BASE_PBTXT, FakeApiServer, FakeClock, FakeTriton, FakeTritons, make_pod, started_pod
from tritonop.api.spec import ModelDeployment
from tritonop.controller import Next
from tritonop.names import ANNOTATION_ROLLOUT_HASH, MODEL_READY_GATE
from tritonop.reconcile import reconcile
from tritonop.render.objects import selector_labels
from tritonop.state import OperatorState


class Cluster:
    """One ModelDeployment `m` in namespace `n`, its API server, its servers and the clock."""

    def __init__(self, repository: Path, version: int, replicas: int = 2) -> None:
        self.clock = FakeClock()
        self.api = FakeApiServer(self.clock)
        self.tritons = FakeTritons()
        self.state = OperatorState(kube=self.api, clock=self.clock, triton=self.tritons.connect)
        self.api.put(
            {
                "apiVersion": "tritonop.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "m", "namespace": "n", "uid": "uid-m", "generation": 1},
                "spec": {
                    "model": {"repository": f"file://{repository}", "version": version},
                    "replicas": replicas,
                },
            }
        )

    @property
    def body(self) -> dict[str, Any]:
        found = self.api.object("ModelDeployment", "n", "m")
        assert found is not None
        return found

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status", {}))

    def condition(self, kind: str) -> tuple[str, str]:
        found = next(c for c in self.status["conditions"] if c["type"] == kind)
        return found["status"], found["reason"]

    def edit_spec(self, **model: Any) -> None:
        body = self.body
        body["spec"]["model"].update(model)
        body["metadata"]["generation"] += 1
        self.api.put(body)

    def reconcile(self) -> Next:
        return asyncio.run(reconcile(self.state, copy.deepcopy(self.body)))

    def start_pods(self) -> list[FakeTriton]:
        """The Deployment controller and the kubelet: a pod per replica (those running stay), its
        Triton live with nothing loaded (the operator loads the version: model control mode explicit)."""
        deployment = self.api.object("Deployment", "n", "m")
        assert deployment is not None
        replicas = deployment["spec"]["replicas"]
        self.api.put({**deployment, "status": {"replicas": replicas, "updatedReplicas": replicas}})
        template = deployment["spec"]["template"]["metadata"]
        md = ModelDeployment.from_body(self.body)
        servers = []
        for index in range(deployment["spec"]["replicas"]):
            ip = f"10.0.0.{index + 1}"
            if ("n", f"m-{index}") in self.api.pods:
                servers.append(self.tritons.servers[ip])
                continue
            pod = make_pod(
                f"m-{index}",
                ip,
                gate=None,
                rollout_hash=template.get("annotations", {}).get(ANNOTATION_ROLLOUT_HASH, ""),
            )
            pod["metadata"]["labels"] = {**template["labels"], **selector_labels(md)}
            self.api.put(pod)
            servers.append(self.tritons.servers.setdefault(ip, FakeTriton(model="m", repository=(1, 2, 3))))
        return servers


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A model repository with versions 1-3 of model m, as the operator reads it (file://)."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.pbtxt").write_text(BASE_PBTXT)
    for version in (1, 2, 3):
        (model / str(version)).mkdir()
        (model / str(version) / "model.py").write_text("# a python backend model\n")
    return tmp_path


def serving(cluster: Cluster, version: int) -> None:
    """Create the objects, start the pods, load `version`, open the gates: Ready."""
    cluster.reconcile()
    cluster.start_pods()
    for _ in range(3):
        cluster.reconcile()
    assert cluster.condition("Ready") == ("True", "Serving"), cluster.status["conditions"]
    assert cluster.status["activeVersion"] == version


def test_a_new_model_deployment_creates_its_objects_then_serves_once_its_pods_load(repository: Path) -> None:
    cluster = Cluster(repository, version=2)
    first = cluster.reconcile()
    assert {kind for kind, _, _ in cluster.api.objects} == {
        "ModelDeployment",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    assert cluster.api.object("Deployment", "n", "m")["spec"]["replicas"] == 2  # type: ignore[index]
    assert cluster.condition("Ready")[0] == "False" and first == Next()  # no pods: nothing to poll
    assert ("Normal", "Created") in {(kind, reason) for kind, reason, _ in cluster.api.events}

    servers = cluster.start_pods()
    again = cluster.reconcile()
    assert [server.ready for server in servers] == [{2}, {2}]  # loaded alone: nothing served before
    assert cluster.api.condition("m-0", "Ready") == "True"  # the gate opened once v2 served
    assert again == Next(1.0)  # the pods are not Ready in what it observed: look again soon
    cluster.reconcile()
    assert cluster.condition("Ready") == ("True", "Serving")
    assert cluster.status["readySummary"] == "2/2" and cluster.status["activeVersion"] == 2
    assert len(cluster.tritons.keys) == 1  # every server got the object's control key


def test_a_server_container_that_just_started_is_looked_at_again_within_a_fifth_of_a_second(
    repository: Path,
) -> None:
    """Its load (and so the pod's Ready) begins as soon as Triton answers, not at the next
    ordinary look; a server still silent 30 s after its start is looked at every second."""
    cluster = Cluster(repository, version=2, replicas=1)
    cluster.reconcile()
    (server,) = cluster.start_pods()
    server.live = False
    started_pod(cluster.api.pods[("n", "m-0")], cluster.clock, created=2, scheduled=2, container=0.5)
    assert cluster.reconcile() == Next(0.2)
    cluster.clock.advance(30)
    assert cluster.reconcile() == Next(1.0)
    server.live = True
    cluster.reconcile()
    assert server.ready == {2}


def test_an_idle_reconcile_makes_no_write_and_posts_no_event(repository: Path) -> None:
    cluster = Cluster(repository, version=2)
    serving(cluster, 2)
    writes, events = cluster.api.writes(), len(cluster.api.events)
    assert cluster.reconcile() == Next()
    assert cluster.api.writes() == writes and len(cluster.api.events) == events


def test_a_version_change_switches_inside_the_running_servers(repository: Path) -> None:
    cluster = Cluster(repository, version=2)
    serving(cluster, 2)
    servers = list(cluster.tritons.servers.values())
    cluster.edit_spec(version=3)
    cluster.reconcile()
    assert [server.calls[-1:] for server in servers] == [["load [3]"]] * 2  # one load: 2 serves until 3 is READY
    assert [server.loads for server in servers] == [[2, 3]] * 2  # 3 loaded once, 2 never reloaded
    assert cluster.condition("Ready") == ("True", "Serving")
    assert (cluster.status["activeVersion"], cluster.status["previousVersion"]) == (3, 2)
    assert cluster.api.condition("m-0", "Ready") == "True"  # no pod left service during the switch


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(repository: Path) -> None:
    cluster = Cluster(repository, version=2)
    serving(cluster, 2)
    for server in cluster.tritons.servers.values():
        server.broken[3] = "failed to load 'm' version 3: ModuleNotFoundError: no module named 'torchvision'"
    cluster.edit_spec(version=3)
    after = cluster.reconcile()
    assert [server.ready for server in cluster.tritons.servers.values()] == [{2}, {2}]
    assert cluster.condition("ModelLoaded") == ("False", "LoadFailed")
    assert cluster.status["activeVersion"] == 2 and cluster.api.condition("m-0", "Ready") == "True"
    assert any(reason == "LoadFailed" and "torchvision" in message for _, reason, message in cluster.api.events)
    # A failed load is not progress: no polling; the resync (or a pod event) brings it back.
    assert after == Next()

    tries = sum(server.calls.count("load [3]") for server in cluster.tritons.servers.values())
    cluster.reconcile()  # within the back-off: not tried again
    assert sum(server.calls.count("load [3]") for server in cluster.tritons.servers.values()) == tries
    cluster.clock.advance(60)
    for server in cluster.tritons.servers.values():
        server.broken.clear()  # the fix reached the repository
    cluster.reconcile()
    cluster.reconcile()
    assert cluster.condition("Ready") == ("True", "Serving") and cluster.status["activeVersion"] == 3


def test_a_deleted_model_deployment_releases_its_whole_record(repository: Path) -> None:
    cluster = Cluster(repository, version=2)
    serving(cluster, 2)
    assert cluster.state.entries()["objects"] == 1 and cluster.state.entries()["control_keys"] == 1
    asyncio.run(cluster.state.release(("n", "m"), "uid-m"))
    assert cluster.state.memory == {}


def startup_count(phase: str) -> float | None:
    """Observations of tritonop_pod_startup_seconds for m's pods in one phase (None: no series)."""
    labels = {"namespace": "n", "name": "m", "phase": phase}
    return REGISTRY.get_sample_value("tritonop_pod_startup_seconds_count", labels)


def start_one(cluster: Cluster, pod: str, created: float, scheduled: float, triton: float, load: float) -> None:
    """The kubelet starts `pod`'s container now: created, scheduled that many seconds ago; Triton
    answers `triton` seconds later, its load takes `load` s; the kubelet's Ready follows the gate
    2 s after it opens (its readiness probe). Reconciled all along, as pod events would."""
    servers = cluster.start_pods()
    server = servers[int(pod.split("-")[1])]
    started_pod(cluster.api.pods[("n", pod)], cluster.clock, created, scheduled, 0)
    server.live, server.clock, server.load_seconds = False, cluster.clock, load
    cluster.reconcile()  # Triton starting: not live
    cluster.clock.advance(triton)
    server.live, cluster.api.kubelet = True, False
    cluster.reconcile()  # loads and opens the gate
    assert cluster.api.condition(pod, MODEL_READY_GATE) == "True" and cluster.api.condition(pod, "Ready") == "False"
    cluster.clock.advance(2)
    cluster.api.kubelet_ready(pod)
    cluster.api.kubelet = True
    cluster.reconcile()


def test_a_new_pods_start_is_measured_once_by_phase_and_forgotten_with_its_object(repository: Path) -> None:
    cluster = Cluster(repository, version=2, replicas=1)
    cluster.reconcile()
    cluster.clock.advance(12)
    start_one(cluster, "m-0", created=11, scheduled=8, triton=8, load=7)
    startup = cluster.status["startup"]
    # created T-11, scheduled T-8, container started T, load T+8..T+15, Ready T+17
    assert startup == {
        "pod": "m-0",
        "readyAt": startup["readyAt"],
        "totalSeconds": 28.0,
        "schedulingSeconds": 3.0,
        "containerSeconds": 8.0,
        "serverSeconds": 8.0,
        "loadSeconds": 7.0,
        "readySeconds": 2.0,
        "recentTotalSeconds": [28.0],
    }
    assert cluster.condition("Ready") == ("True", "Serving")
    ready = next(c for c in cluster.api.pods[("n", "m-0")]["status"]["conditions"] if c["type"] == "Ready")
    assert startup["readyAt"] == ready["lastTransitionTime"]
    for _ in range(3):
        cluster.reconcile()
    phases = ("scheduling", "container", "server", "load", "ready", "total")
    assert {phase: startup_count(phase) for phase in phases} == dict.fromkeys(phases, 1.0)  # once, not per reconcile
    assert startup_count("staging") is None  # no node cache: not measured
    assert cluster.state.entries()["pod_starts"] == 1

    # Scale-up: the new pod's start is measured too; the first pod's is not again.
    body = cluster.body
    body["spec"]["replicas"] = 2
    body["metadata"]["generation"] += 1
    cluster.api.put(body)
    cluster.reconcile()
    start_one(cluster, "m-1", created=4, scheduled=4, triton=3, load=5)
    assert cluster.status["startup"]["pod"] == "m-1" and cluster.status["startup"]["totalSeconds"] == 14.0
    assert cluster.status["startup"]["recentTotalSeconds"] == [28.0, 14.0]
    assert {phase: startup_count(phase) for phase in phases} == dict.fromkeys(phases, 2.0)
    load_sum = REGISTRY.get_sample_value(
        "tritonop_pod_startup_seconds_sum", {"namespace": "n", "name": "m", "phase": "load"}
    )
    assert load_sum == 12.0

    # A pod that goes is forgotten; the object that goes takes its series with it.
    del cluster.api.pods[("n", "m-1")]
    cluster.reconcile()
    assert cluster.state.entries()["pod_starts"] == 1
    asyncio.run(cluster.state.release(("n", "m"), "uid-m"))
    assert {phase: startup_count(phase) for phase in phases} == dict.fromkeys(phases)
    assert cluster.state.entries()["pod_starts"] == 0
