"""Pure parts of the dev cluster's Triton pod runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.podrunner import (
    Probe,
    TritonInstall,
    drop_flags,
    expand_k8s_vars,
    is_triton_container,
    map_path,
    on_fake_node,
    triton_argv,
)

INSTALL = TritonInstall(
    binary=Path("/venv/pytriton/tritonserver/bin/tritonserver"),
    backends=Path("/state/triton/backends"),
    caches=Path("/venv/pytriton/tritonserver/caches"),
    env={},
)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"command": ["tritonserver"], "args": ["--model-repository=/m"]}, True),
        ({"command": ["/opt/tritonserver/bin/tritonserver"]}, True),
        ({"args": ["tritonserver", "--model-repository=/m"]}, True),
        ({"command": ["python", "-m", "tritonserver"]}, False),
        ({"image": "nvcr.io/nvidia/tritonserver:25.10-py3"}, False),
    ],
)
def test_is_triton_container(container: dict[str, object], expected: bool) -> None:
    assert is_triton_container(container) is expected


def test_expand_k8s_vars_follows_kubernetes_rules() -> None:
    env = {"KEY": "s3cret", "PORT": "8000"}
    assert expand_k8s_vars("--http-restricted-api=model-repository:k=$(KEY)", env) == (
        "--http-restricted-api=model-repository:k=s3cret"
    )
    assert expand_k8s_vars("$$(KEY) $(MISSING) $(PORT)", env) == "$(KEY) $(MISSING) 8000"


def test_map_path_rewrites_mounted_prefixes_only() -> None:
    mounts = {"/models": Path("/data/repo"), "/models/extra": Path("/data/extra"), "/cfg/": Path("/tmp/cfg")}
    assert map_path("--model-repository=/models/vision", mounts) == "--model-repository=/data/repo/vision"
    assert map_path("/models/extra/x", mounts) == "/data/extra/x"
    assert map_path("/models", mounts) == "/data/repo"
    assert map_path("/modelsX", mounts) == "/modelsX"
    assert map_path("/cfg/a.json", mounts) == "/tmp/cfg/a.json"
    assert map_path("--strict-readiness=true", mounts) == "--strict-readiness=true"


def test_drop_flags_handles_both_forms() -> None:
    argv = ["--http-address=0.0.0.0", "--grpc-address", "0.0.0.0", "--http-port=8000", "--log-verbose=1"]
    assert drop_flags(argv, ("--http-address", "--grpc-address")) == ["--http-port=8000", "--log-verbose=1"]


def test_triton_argv_binds_the_pod_ip_and_uses_the_wheels_backends() -> None:
    container = {
        "command": ["tritonserver"],
        "args": [
            "--model-repository=/models",
            "--http-address=0.0.0.0",
            "--backend-directory=/opt/tritonserver/backends",
            "--http-restricted-api=model-repository:x-key=$(KEY)",
        ],
    }
    argv = triton_argv(container, {"KEY": "k1"}, {"/models": Path("/srv/models")}, "127.1.0.7", INSTALL)
    assert argv == [
        "/venv/pytriton/tritonserver/bin/tritonserver",
        "--model-repository=/srv/models",
        "--http-restricted-api=model-repository:x-key=k1",
        "--http-address=127.1.0.7",
        "--grpc-address=127.1.0.7",
        "--metrics-address=127.1.0.7",
        "--backend-directory=/state/triton/backends",
        "--cache-directory=/venv/pytriton/tritonserver/caches",
    ]


def test_probe_thresholds_like_a_kubelet() -> None:
    probe = Probe(spec={"successThreshold": 2, "failureThreshold": 3, "periodSeconds": 5}, started=0.0)
    assert probe.due(0.0)
    probe.last_run = 0.0
    assert not probe.due(4.9)
    assert probe.record(True) is None
    assert probe.record(True) is True
    assert probe.record(False) is None
    assert probe.record(False) is None
    assert probe.record(False) is False
    assert probe.record(False) is None  # reported once, not on every failure


def test_probe_waits_for_initial_delay_and_period() -> None:
    probe = Probe(spec={"initialDelaySeconds": 3, "periodSeconds": 2}, started=100.0)
    assert not probe.due(102.0)
    assert probe.due(103.0)
    probe.last_run = 103.0
    assert not probe.due(104.5)
    assert probe.due(105.0)


def test_a_deleted_pod_keeps_serving_through_its_prestop_sleep(tmp_path: Path) -> None:
    """Like a kubelet: deletion starts the preStop sleep; SIGTERM comes when it is over (a real
    child process stands in for tritonserver; no API is called)."""
    import subprocess
    import time

    from devcluster.cluster import pid_alive, wait_until
    from devcluster.podrunner import PodProcess, PodRunner, prestop_sleep_seconds

    assert prestop_sleep_seconds({"lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}) == 5
    assert prestop_sleep_seconds({"lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}) == 0
    runner = PodRunner(core=None, pods_dir=tmp_path, install=INSTALL)  # type: ignore[arg-type]
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    runner.pods["u1"] = PodProcess(
        uid="u1", namespace="n", name="p", pod_ip="127.0.0.9", container="triton", argv=None, env={},
        work_dir=tmp_path, log_path=tmp_path / "p.log", pid_path=tmp_path / "p.pid", probe=None,
        process=process, prestop_seconds=1.0,
    )  # fmt: skip
    deleted_at = time.monotonic()
    runner.handle("DELETED", {"metadata": {"uid": "u1"}})
    runner.tick()
    assert pid_alive(process.pid), "SIGTERM before the preStop sleep was over"

    def stopped() -> bool:
        runner.tick()
        return not pid_alive(process.pid)

    wait_until("the process stopped after the preStop sleep", stopped, timeout=10, interval=0.05)
    assert time.monotonic() - deleted_at >= 1.0
    assert "u1" not in runner.pods


def test_a_running_container_reports_when_its_process_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like a kubelet: state.running.startedAt is the process's start, not the time of the status
    write (Ready comes later; the operator's start-up phases read startedAt)."""
    import itertools

    from devcluster import podrunner
    from devcluster.cluster import pid_alive
    from devcluster.podrunner import PodProcess, PodRunner

    clock = (f"2026-01-01T00:00:{second:02d}Z" for second in itertools.count())
    monkeypatch.setattr(podrunner, "now_rfc3339", lambda: next(clock))
    runner = PodRunner(core=None, pods_dir=tmp_path, install=INSTALL)  # type: ignore[arg-type]
    pod = runner.pods["u1"] = PodProcess(
        uid="u1", namespace="n", name="p", pod_ip="127.0.0.9", container="tritonserver", argv=["sleep", "60"],
        env={}, work_dir=tmp_path, log_path=tmp_path / "p.log", pid_path=tmp_path / "p.pid", probe=None,
    )  # fmt: skip
    runner.supervise(pod, 0.0)
    try:
        assert pod.process is not None and pod.started_at == "2026-01-01T00:00:00Z"
        for _ in range(2):  # later status writes (Ready, not Ready) keep it
            assert runner.container_status(pod, True)["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    finally:
        runner.stop_pod("u1", "test over")
    assert not pid_alive(pod.process.pid)


def test_only_pods_of_fake_nodes_are_run_and_probed() -> None:
    # kwok's pod IPs are loopback addresses; a real node's (devcluster/realnode.py) are 198.18.x,
    # and its kubelet, not the pod runner, runs and probes them.
    assert on_fake_node("127.5.0.3")
    assert not on_fake_node("198.18.1.7")
    assert not on_fake_node("not an address")
