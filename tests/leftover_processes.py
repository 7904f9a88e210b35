"""Which of the project's long-lived processes (MinIO, tritonserver, Prometheus, the control plane,
the operator, ...) a test session started and left running: read from /proc, no dependency.

    before = snapshot()                 # at session start
    ...                                 # tests start and (should) stop processes
    left = leftovers(before, snapshot(), ours=started_by_this_session)

A process is identified by (pid, start time), so a pid reused during the session is not taken
for one that was there before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

# Executables (the basename of argv[0]) that tests, the dev cluster and the demos run for long.
BINARIES = frozenset(
    {
        "minio",
        "tritonserver",
        "triton_python_backend_stub",
        "prometheus",
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        # a real node (devcluster/realnode.py)
        "kubelet",
        "kube-proxy",
        "containerd",
        "containerd-shim-runc-v2",
        "tritonop",  # the console script, when run directly
    }
)
# Python modules run with `python -m` that live long (the operator, the pod runner, load).
MODULES = frozenset({"tritonop", "devcluster", "devcluster.podrunner", "loadgen", "examples.demo_load"})
# Set in the environment of every process a test session starts (see tests/integration/conftest.py):
# how a process that has lost its parent (reparented to init) is still known as the session's.
SESSION_VARIABLE = "TRITONOP_TEST_SESSION"


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    state: str  # R, S, D, Z (zombie: exited, not reaped), ...
    start_ticks: int  # since boot, in clock ticks: with pid, names one process for good
    argv: tuple[str, ...]

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start_ticks

    @property
    def command_line(self) -> str:
        return " ".join(self.argv)


def read_process(pid: int, proc: Path = Path("/proc")) -> ProcessInfo | None:
    """One process from /proc, or None if it is gone (or not readable)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # comm (the 2nd field) is in parentheses and may hold spaces or parentheses itself.
    fields = stat.rpartition(")")[2].split()
    try:
        state, ppid, start_ticks = fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None
    argv = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return ProcessInfo(pid, ppid, state, start_ticks, argv)


def snapshot(proc: Path = Path("/proc")) -> dict[int, ProcessInfo]:
    """Every process now, by pid."""
    processes = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return {}
    for entry in entries:
        if entry.isdigit():
            info = read_process(int(entry), proc)
            if info is not None:
                processes[info.pid] = info
    return processes


def is_project_process(argv: tuple[str, ...]) -> bool:
    """Whether a command line is one of the project's long-lived binaries or Python modules."""
    if not argv:
        return False  # a kernel thread, or a zombie
    program = os.path.basename(argv[0])
    if program in BINARIES:
        return True
    if not program.startswith("python"):
        return False
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None) in MODULES
        if arg.startswith("-m"):
            return arg[2:] in MODULES
        if arg in ("-c", "-") or arg.startswith("-c"):
            return False
        if arg in ("-X", "-W"):  # options with a separate value
            next(args, None)
        elif not arg.startswith("-"):  # a script: the console script `tritonop`, run by its python
            return os.path.basename(arg) in BINARIES
    return False


def descends_from(pid: int, roots: Collection[int], processes: Mapping[int, ProcessInfo]) -> bool:
    """Whether pid is one of roots or below one of them in the process tree."""
    seen: set[int] = set()
    while pid not in seen and pid > 0:
        if pid in roots:
            return True
        seen.add(pid)
        info = processes.get(pid)
        if info is None:
            return False
        pid = info.ppid
    return False


def has_environment(pid: int, variable: str, value: str, proc: Path = Path("/proc")) -> bool:
    """Whether the process's environment (as it started) holds variable=value."""
    try:
        environ = (proc / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or another user's
        return False
    return f"{variable}={value}".encode() in environ.split(b"\0")


def leftovers(
    before: Mapping[int, ProcessInfo],
    now: Mapping[int, ProcessInfo],
    ours: Callable[[ProcessInfo], bool],
    keep: Collection[int] = (),
) -> list[ProcessInfo]:
    """The project's processes alive now that were not there before, that `ours` claims, and that
    are not one of `keep` or below it (what the session leaves running on purpose)."""
    known = {info.key for info in before.values()}
    return sorted(
        (
            info
            for info in now.values()
            if info.state not in ("Z", "X")
            and info.key not in known
            and is_project_process(info.argv)
            and not descends_from(info.pid, keep, now)
            and ours(info)
        ),
        key=lambda info: info.pid,
    )


def describe(processes: list[ProcessInfo]) -> str:
    return "\n".join(f"  pid {info.pid} (parent {info.ppid}): {info.command_line[:300]}" for info in processes)
