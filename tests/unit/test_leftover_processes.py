"""tests/leftover_processes.py: which of the project's processes a test session left running."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devcluster.cluster import stop_pid, wait_until
from tests import leftover_processes as lp


def fake_process(
    proc: Path, pid: int, argv: list[str], *, ppid: int = 1, start: int = 1000, state: str = "S", comm: str = "x"
) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    # Fields after comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime vsize ...
    rest = [state, str(ppid), str(pid), str(pid), "0", "-1", "0", *["0"] * 8, "20", "0", "1", "0", str(start), "0"]
    (folder / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
    (folder / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    (folder / "environ").write_bytes(b"HOME=/root\0" + (b"TRITONOP_TEST_SESSION=s1\0" if pid % 2 else b""))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/root/.cache/tritonop/bin/minio-v1/minio", "server", "/tmp/d"], True),
        (["/opt/tritonserver/bin/tritonserver", "--model-repository=/m"], True),
        (["/usr/bin/prometheus", "--config.file=p.yml"], True),
        (["/c/kubernetes-v1.37.2/kube-apiserver", "--v=1"], True),
        (["/c/etcd-v3.6.16/etcd", "--name=devcluster"], True),
        (["/c/kwok-v0.8.0/kwok", "--kubeconfig=k"], True),
        (["/work/.venv/bin/python", "-m", "tritonop", "run"], True),
        (["python3", "-u", "-m", "devcluster.podrunner", "--pods-dir=p"], True),
        (["python3", "-X", "dev", "-m", "examples.demo_load", "autoscale"], True),
        (["python3", "-mloadgen"], True),
        (["/work/.venv/bin/python", "/work/.venv/bin/tritonop", "run"], True),
        (["/work/.venv/bin/python", "-m", "pytest", "tests"], False),
        (["python3", "-c", "import tritonop"], False),
        (["python3", "bench/soak.py"], False),
        (["/usr/bin/kubectl", "get", "pods"], False),
        (["bash", "-c", "minio server"], False),
        ([], False),
    ],
)
def test_project_processes_are_recognised_by_their_command_line(argv: list[str], expected: bool) -> None:
    assert lp.is_project_process(tuple(argv)) is expected


def test_only_new_live_processes_of_the_session_are_leftovers(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(proc, 11, ["/b/etcd"], start=500, comm="etcd")  # there before: a dev cluster
    fake_process(proc, 20, ["/usr/bin/python3", "-m", "pytest"], start=600, comm="pytest")
    before = lp.snapshot(proc)
    fake_process(proc, 21, ["/b/minio", "server"], ppid=20, start=700, comm="min) io")  # comm with ") "
    fake_process(proc, 23, ["/b/kube-apiserver"], ppid=1, start=710)  # orphaned, carries the mark
    fake_process(proc, 24, ["/b/kwok"], ppid=1, start=720)  # not ours: no mark, not a descendant
    fake_process(proc, 25, ["/b/prometheus"], ppid=20, start=730, state="Z")  # exited, not reaped
    fake_process(proc, 27, ["/usr/bin/sleep", "60"], ppid=20, start=740)  # not a project process
    fake_process(proc, 31, ["/b/tritonserver"], ppid=33, start=760)  # below the cluster kept running
    fake_process(proc, 33, ["python3", "-m", "devcluster.podrunner"], ppid=20, start=755)
    shutil.rmtree(proc / "11")
    fake_process(proc, 11, ["/b/etcd"], ppid=20, start=800)  # pid 11 reused: a new process
    now = lp.snapshot(proc)
    assert now[21].argv == ("/b/minio", "server") and now[21].state == "S" and now[21].start_ticks == 700

    def ours(info: lp.ProcessInfo) -> bool:
        return lp.descends_from(info.pid, {20}, now) or lp.has_environment(info.pid, lp.SESSION_VARIABLE, "s1", proc)

    left = lp.leftovers(before, now, ours)
    assert [info.pid for info in left] == [11, 21, 23, 31, 33]
    assert [info.pid for info in lp.leftovers(before, now, ours, keep={33, 11})] == [21, 23]
    assert [info.pid for info in lp.leftovers(now, now, ours)] == []
    assert "pid 21 (parent 20): /b/minio server" in lp.describe(left)


def test_a_process_tree_loop_or_a_missing_parent_ends_the_walk() -> None:
    processes = {
        5: lp.ProcessInfo(5, 6, "S", 1, ("a",)),
        6: lp.ProcessInfo(6, 5, "S", 1, ("b",)),
        7: lp.ProcessInfo(7, 99, "S", 1, ("c",)),
    }
    assert not lp.descends_from(5, {1}, processes)
    assert lp.descends_from(5, {6}, processes)
    assert not lp.descends_from(7, {1}, processes)


def test_a_real_child_named_like_minio_is_found_until_it_is_stopped(tmp_path: Path) -> None:
    before = lp.snapshot()
    sleep = shutil.which("sleep")
    assert sleep is not None
    env = {**os.environ, lp.SESSION_VARIABLE: "unit-test"}
    # argv[0] says minio; the program is sleep.
    process = subprocess.Popen([str(tmp_path / "minio"), "60"], executable=sleep, env=env)
    try:
        argv = (str(tmp_path / "minio"), "60")

        def execed() -> bool:  # between fork and exec the command line is python's, or empty
            found = lp.read_process(process.pid)
            return found is not None and found.argv == argv

        wait_until("the child's command line", execed, timeout=10, interval=0.01)
        info = lp.read_process(process.pid)
        assert info is not None and info.ppid == os.getpid()
        assert lp.has_environment(process.pid, lp.SESSION_VARIABLE, "unit-test")
        assert not lp.has_environment(process.pid, lp.SESSION_VARIABLE, "another-session")
        now = lp.snapshot()

        def ours(found: lp.ProcessInfo) -> bool:
            return lp.descends_from(found.pid, {os.getpid()}, now)

        assert process.pid in [found.pid for found in lp.leftovers(before, now, ours)]
    finally:
        stop_pid(process.pid, grace=2)
    now = lp.snapshot()
    assert process.pid not in [found.pid for found in lp.leftovers(before, now, lambda _: True)]
    assert lp.read_process(process.pid) is None, "stopped and reaped: not even a zombie is left"
