"""devcluster.cluster.stop_pid: stops a process whether or not it leads its own process group,
SIGKILLs what ignores SIGTERM, stops what of a group outlives its leader, and reaps our child."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import pid_alive, stop_pid

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def exists(pid: int) -> bool:
    """Any process with this pid, zombies included."""
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, SIGKILLed afterwards if the test left them running."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_process_in_its_starters_group_is_stopped_and_reaped(started: list[subprocess.Popen[str]]) -> None:
    """The MinIO case: started without start_new_session, so killpg(pid) reaches nothing."""
    process = subprocess.Popen(["sleep", "60"], text=True)
    started.append(process)
    stop_pid(process.pid, grace=5)
    assert not pid_alive(process.pid)
    assert not exists(process.pid), "left as a zombie"


def test_what_ignores_sigterm_is_killed_after_the_grace_period(started: list[subprocess.Popen[str]]) -> None:
    process = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    started.append(process)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    began = time.monotonic()
    stop_pid(process.pid, grace=0.5)
    assert 0.5 <= time.monotonic() - began < 10
    assert not exists(process.pid)


def test_a_group_member_that_outlives_its_leader_is_stopped(started: list[subprocess.Popen[str]]) -> None:
    """A leader that exits on SIGTERM, its child that ignores it: the group is stopped, not only
    the leader (a tritonserver's backend stub, a shell's background job)."""
    leader = subprocess.Popen(
        ["sh", "-c", f'{sys.executable} -c "{IGNORES_SIGTERM}" & wait'],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started.append(leader)
    assert leader.stdout is not None and leader.stdout.readline() == "ready\n"
    children = Path(f"/proc/{leader.pid}/task/{leader.pid}/children").read_text().split()
    assert len(children) == 1
    child = int(children[0])
    stop_pid(leader.pid, grace=0.5)
    assert not exists(leader.pid)
    deadline = time.monotonic() + 5  # the orphan's zombie is reaped by init, asynchronously
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


def test_a_pid_that_is_gone_is_no_error() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    stop_pid(process.pid)
