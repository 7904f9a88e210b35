"""The node cache's stager (tritonop.cache): real files under tmp_path, real subprocesses for the
concurrent and killed stagers, a real tmpfs for a full disk; the pure decisions by tables."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonop.cache.plan import (
    Entry,
    FileRecord,
    NoRoom,
    cache_key,
    changed_objects,
    first_change,
    plan_eviction,
    stale_versions,
)
from tritonop.cache.stage import Request, stage
from tritonop.cache.verdict import Verdict
from tritonop.repository.manifests import MANIFEST_NAME

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
OWNER = "ns.md"


# -- helpers ---------------------------------------------------------------------------------
def write_version(repo: Path, model: str, version: int, files: dict[str, bytes]) -> Path:
    """A version folder with its manifest, and the model's config.pbtxt."""
    folder = repo / model / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (repo / model / "config.pbtxt").write_text(f'name: "{model}"\nbackend: "python"\n')
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    digests = {relative: hashlib.sha256(data).hexdigest() for relative, data in files.items()}
    (folder / MANIFEST_NAME).write_text(json.dumps({"algorithm": "sha256", "files": digests}))
    return folder


def size_of(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def run(
    repo: Path,
    root: Path,
    model: str = "m",
    version: int = 1,
    owner: str = OWNER,
    budget: int = 1 << 30,
    keep: tuple[int, ...] | list[int] = (),
    display_root: str | None = None,
) -> Verdict:
    """One stage run in this process; its verdict survives the JSON round trip the operator makes."""
    request = Request(str(repo), model, version, root, owner, budget, frozenset(map(str, keep)), display_root)
    verdict = stage(request, environ={})
    assert Verdict.from_json(verdict.to_json()) == verdict
    return verdict


def same_tree(a: Path, b: Path) -> bool:
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    return files(a) == files(b)


def cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(OPERATOR)}
    command = [sys.executable, "-m", "tritonop", "cache", "stage", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stage_args(repo: Path, root: Path, version: int = 1, owner: str = OWNER, budget: int = 1 << 30) -> list[str]:
    return [str(repo), "m", "--version", str(version), "--cache-root", str(root), "--owner", owner,
            "--budget-bytes", str(budget)]  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repository = tmp_path / "repo"
    write_version(repository, "m", 1, {"model.py": b"one" * 100, "weights/w.bin": b"\x01" * 1000})
    return repository


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# -- pure decisions --------------------------------------------------------------------------
def entry(key: str, size: int, last_used: float) -> Entry:
    return Entry(key, "file:///r", "m", "1", "0" * 64, size, 0.0, last_used, ())


@pytest.mark.parametrize(
    ("entries", "pinned", "budget", "size", "want"),
    [
        ([], set(), 100, 50, []),
        ([entry("a", 40, 1)], set(), 100, 50, []),
        ([entry("a", 40, 2), entry("b", 40, 1)], set(), 100, 50, ["b"]),  # least recently used first
        ([entry("a", 40, 1), entry("b", 40, 2)], set(), 100, 100, ["a", "b"]),
        ([entry("a", 40, 1), entry("b", 40, 2)], {"a"}, 100, 50, ["b"]),  # pinned skipped, newer goes
        ([entry("a", 60, 1), entry("b", 30, 2)], {"a"}, 100, 50, NoRoom("NoRoom", 100, 90, 60, 50)),
        ([entry("a", 10, 1)], set(), 100, 101, NoRoom("BudgetTooSmall", 100, 10, 0, 101)),
        ([entry("a", 50, 1), entry("b", 50, 1)], set(), 100, 50, ["a"]),  # ties: by key
    ],
)
def test_plan_eviction(
    entries: list[Entry], pinned: set[str], budget: int, size: int, want: list[str] | NoRoom
) -> None:
    assert plan_eviction(entries, pinned, budget, size) == want


def test_no_room_messages_name_the_numbers() -> None:
    assert "budget of 100 bytes" in NoRoom("BudgetTooSmall", 100, 0, 0, 101).message
    message = NoRoom("NoRoom", 100, 90, 60, 50).message
    assert all(str(n) in message for n in (100, 90, 60, 50))


def test_cache_key_is_content_addressed() -> None:
    assert cache_key("m", 1, b"x") == cache_key("m", 1, b"x") == f"m-1-{hashlib.sha256(b'x').hexdigest()[:16]}"
    assert cache_key("m", 1, b"x") != cache_key("m", 1, b"y")


@pytest.mark.parametrize(
    ("observed", "want"),
    [
        ({"a": (1, 2, 3), "b": (4, 5, 6)}, None),
        ({"a": (1, 2, 3), "b": (4, 9, 6)}, "b"),  # rewritten (mtime)
        ({"a": (1, 2, 7), "b": (4, 5, 6)}, "a"),  # replaced (inode)
        ({"a": (1, 2, 3), "b": None}, "b"),  # removed
    ],
)
def test_first_change(observed: dict[str, tuple[int, int, int] | None], want: str | None) -> None:
    files = (FileRecord("a", 1, 2, 3), FileRecord("b", 4, 5, 6))
    assert first_change(files, observed) == want


def test_changed_objects_and_stale_versions() -> None:
    files = (FileRecord("a", 1, 2, 3, "e1"), FileRecord("b", 1, 2, 3, "e2"), FileRecord("c", 1, 2, 3))
    assert changed_objects(files, {"a": "e1", "b": "e2"}) == []
    assert changed_objects(files, {"a": "x", "b": None}) == ["a", "b"]
    assert stale_versions(["1", "2", "3", "4"], "3", {"1"}) == ["2", "4"]


def test_verdict_stays_under_4_kib() -> None:
    verdict = Verdict("staged", None, "x" * 10000, "k", evicted=[f"model-{i}-{'0' * 16}" for i in range(500)])
    assert len(verdict.to_json().encode()) <= 4000
    assert Verdict.from_json(verdict.to_json()).result == "staged"
    with pytest.raises(ValueError, match="not a cache verdict"):
        Verdict.from_json("Traceback (most recent call last):")


# -- staging ---------------------------------------------------------------------------------
def test_cold_stage_then_hit_reads_no_source_bytes(repo: Path, root: Path) -> None:
    first = run(repo, root, display_root="pvc://models/repo")
    assert first.result == "staged" and first.reason is None
    key = first.key
    assert key is not None and key.startswith("m-1-")
    assert first.bytes == size_of(repo / "m" / "1") == first.usedBytes
    assert same_tree(root / "versions" / key, repo / "m" / "1")
    link = root / "repos" / OWNER / "m" / "1"
    assert os.readlink(link) == f"../../../versions/{key}"  # relative: the folder is mounted elsewhere too
    assert same_tree(link, repo / "m" / "1")
    assert (root / "repos" / OWNER / "m" / "config.pbtxt").read_bytes() == (repo / "m" / "config.pbtxt").read_bytes()
    recorded = json.loads((root / "entries" / f"{key}.json").read_text())
    assert recorded["source"] == "pvc://models/repo/m/1"
    assert {f["path"] for f in recorded["files"]} == {"model.py", "weights/w.bin", MANIFEST_NAME}
    assert json.loads((root / "pins" / f"{OWNER}.json").read_text())["keys"] == [key]
    assert list((root / "tmp").iterdir()) == []

    # the data files become FIFOs without a writer: a stager that opened one would block, so a hit
    # that returns proves no source bytes were read (chmod 000 would not stop root)
    for path in list((repo / "m" / "1").rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            path.unlink()
            os.mkfifo(path)
    used_before = recorded["last_used"]
    verdict_file = root.parent / "verdict"
    process = cli(*stage_args(repo, root), "--verdict-file", str(verdict_file))
    try:
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert verdict_file.read_text() == out.strip()
    second = Verdict.from_json(out)
    assert (second.result, second.key, second.seconds, second.evicted) == ("hit", key, 0.0, [])
    assert json.loads((root / "entries" / f"{key}.json").read_text())["last_used"] > used_before


def test_cli_exit_status_and_verdict_file_on_failure(repo: Path, root: Path, tmp_path: Path) -> None:
    verdict_file = tmp_path / "verdict"
    process = cli(*stage_args(repo, root, version=9), "--verdict-file", str(verdict_file), "--display-root", "pvc://r")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    verdict = Verdict.from_json(verdict_file.read_text())
    assert verdict == Verdict.from_json(out)
    assert (verdict.result, verdict.reason, verdict.key) == ("failed", "VersionNotFound", None)
    assert verdict.message == "version 9 not in pvc://r/m"


def test_two_owners_share_one_entry(repo: Path, root: Path) -> None:
    a = run(repo, root, owner="a.x")
    b = run(repo, root, owner="b.y")
    assert (a.result, b.result, a.key) == ("staged", "hit", b.key)
    assert [p.name for p in (root / "versions").iterdir()] == [a.key]
    assert os.readlink(root / "repos" / "b.y" / "m" / "1") == f"../../../versions/{a.key}"


def test_lru_eviction_order(tmp_path: Path, root: Path) -> None:
    """Unpinned entries go least recently used first; an owner's own previous version is unpinned
    once it moves on (its pins are recomputed by the run, not read from its old pins file)."""
    repo = tmp_path / "repo"
    for version in (1, 2, 3, 4):
        write_version(repo, "m", version, {"w.bin": bytes([version]) * 1000})
    budget = 3 * size_of(repo / "m" / "1")

    def at(version: int, owner: str) -> Verdict:
        time.sleep(0.01)  # distinct last_used
        return run(repo, root, version=version, owner=owner, budget=budget)

    keys = {version: at(version, "o.o").key for version in (1, 2, 3)}  # o ends on 3: 1 and 2 unpinned
    assert at(1, "p.p").result == "hit"  # 1 used after 2
    assert at(3, "p.p").result == "hit"  # p moves on to 3: pins only 3
    fourth = at(4, "o.o")
    assert (fourth.result, fourth.evicted, fourth.usedBytes) == ("staged", [keys[2]], budget)
    again = at(2, "o.o")  # o moves from 4 to 2: 1 (used before 4) goes, 3 stays pinned by p
    assert (again.result, again.evicted) == ("staged", [keys[1]])
    assert sorted(p.name for p in (root / "versions").iterdir()) == sorted(
        str(k) for k in (keys[3], fourth.key, again.key)
    )
    assert not (root / "repos" / "o.o" / "m" / "4").exists()  # not kept: its link went


def test_a_pinned_entry_is_never_evicted_the_owner_gets_a_scratch_copy(tmp_path: Path, root: Path) -> None:
    repo = tmp_path / "repo"
    for version in (1, 2):
        write_version(repo, "m", version, {"w.bin": bytes([version]) * 1000})
    budget = size_of(repo / "m" / "1") + 10
    first = run(repo, root, version=1, owner="a.a", budget=budget)  # a's pods serve 1: pinned
    second = run(repo, root, version=2, owner="b.b", budget=budget)
    assert (second.result, second.reason, second.evicted) == ("no-room", "NoRoom", [])
    assert str(budget) in second.message and "pinned" in second.message
    assert [p.name for p in (root / "versions").iterdir()] == [first.key]
    scratch = root / "scratch" / "b.b" / "m-2"
    assert os.readlink(root / "repos" / "b.b" / "m" / "2") == "../../../scratch/b.b/m-2"
    assert same_tree(scratch, repo / "m" / "2")
    assert second.usedBytes == first.bytes  # scratch is not counted
    assert json.loads((root / "pins" / "b.b.json").read_text())["keys"] == []
    again = run(repo, root, version=2, owner="b.b", budget=budget)  # an unchanged scratch copy is reused
    assert (again.result, again.seconds) == ("no-room", 0.0)
    # a keeps serving 1 while it stages 2: still pinned, so 2 cannot take its place
    kept = run(repo, root, version=2, owner="a.a", budget=budget, keep=[1])
    assert (kept.result, kept.evicted) == ("no-room", [])
    assert (root / "versions" / str(first.key)).is_dir()
    # once a's pods no longer serve 1, it is evicted (a's own pins are recomputed, not read), and b hits
    moved = run(repo, root, version=2, owner="a.a", budget=budget)
    assert (moved.result, moved.evicted) == ("staged", [first.key])
    assert run(repo, root, version=2, owner="b.b", budget=budget).result == "hit"
    assert os.readlink(root / "repos" / "b.b" / "m" / "2") == f"../../../versions/{moved.key}"
    assert (root / "scratch" / "b.b" / "m-2").is_dir()  # kept until 2 is neither staged nor kept by b


def test_a_deleted_owners_pins_are_released_so_its_version_can_be_evicted(tmp_path: Path, root: Path) -> None:
    """Through the CLI, as the staging Job runs it: owners the operator's LIST did not find, in its
    scope, pinned before it listed, lose their pins, links and scratch copies; newer pins, owners
    outside the scope, and runs without a list release nothing."""
    repo = tmp_path / "repo"
    for version in (1, 2):
        write_version(repo, "m", version, {"w.bin": bytes([version]) * 1000})
    budget = size_of(repo / "m" / "1") + 10
    gone = run(repo, root, version=1, owner="a.gone", budget=budget)
    run(repo, root, version=1, owner="b.other", budget=budget)  # another namespace's owner pins 1 too
    run(repo, root, version=2, owner="a.full", budget=1)  # a scratch copy, for a.full
    pinned_at = json.loads((root / "pins" / "a.gone.json").read_text())["written_at"]

    def stage_with(listed_at: float, scope: str, live: str, owner: str = "a.new") -> Verdict:
        args = [*stage_args(repo, root, version=2, owner=owner, budget=budget), "--live-owners", live]
        process = cli(*args, "--owners-scope", scope, "--owners-listed-at", str(listed_at))
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        return Verdict.from_json(out)

    # Listed before the pins were written: an owner newer than the list keeps them.
    assert "released" not in stage_with(pinned_at - 1, "a", "a.new").message
    assert (root / "pins" / "a.gone.json").is_file()
    # Scope "a": b.other is not judged and still pins 1, so 2 gets a scratch copy.
    verdict = stage_with(pinned_at + 1, "a", "a.new")
    assert verdict.result == "no-room"
    assert "released the pins of deleted a.full, a.gone" in verdict.message
    for leftover in ("pins/a.gone.json", "repos/a.gone", "pins/a.full.json", "repos/a.full", "scratch/a.full"):
        assert not (root / leftover).exists(), leftover
    assert (root / "pins" / "b.other.json").is_file()
    # Every namespace, b.other gone too: nothing pins 1 any more, so it is evicted for 2.
    verdict = stage_with(pinned_at + 1, "*", "a.new", owner="a.new2")
    assert (verdict.result, verdict.evicted) == ("staged", [gone.key])
    assert sorted(p.name for p in (root / "pins").iterdir()) == ["a.new.json", "a.new2.json"]  # a.new: listed


def test_budget_smaller_than_the_version_uses_a_verified_scratch_copy(repo: Path, root: Path) -> None:
    verdict = run(repo, root, budget=100)
    assert (verdict.result, verdict.reason, verdict.usedBytes) == ("no-room", "BudgetTooSmall", 0)
    assert "100 bytes" in verdict.message and str(verdict.bytes) in verdict.message
    assert list((root / "versions").iterdir()) == []
    assert same_tree(root / "repos" / OWNER / "m" / "1", repo / "m" / "1")
    assert (root / "scratch" / OWNER / "m-1.json").is_file()


def test_a_corrupted_source_file_fails_and_nothing_is_staged_or_linked(repo: Path, root: Path) -> None:
    (repo / "m" / "1" / "weights" / "w.bin").write_bytes(b"\x02" * 1000)  # same size, other bytes
    verdict = run(repo, root, display_root="pvc://models/repo")
    assert (verdict.result, verdict.reason) == ("failed", "IntegrityMismatch")
    assert "pvc://models/repo/m/1/weights/w.bin" in verdict.message
    assert list((root / "versions").iterdir()) == list((root / "tmp").iterdir()) == []
    assert list((root / "entries").iterdir()) == []
    assert not (root / "repos" / OWNER).exists()
    # also for the scratch copy (budget too small): verified too
    assert run(repo, root, budget=10).reason == "IntegrityMismatch"
    assert not (root / "repos" / OWNER).exists()


def test_a_tampered_cached_copy_is_restaged(repo: Path, root: Path) -> None:
    key = run(repo, root).key
    cached = root / "versions" / str(key) / "weights" / "w.bin"
    cached.chmod(0o644)
    cached.write_bytes(b"\x09" * 1000)  # same size; a new mtime
    verdict = run(repo, root)
    assert (verdict.result, verdict.key) == ("staged", key)
    assert verdict.restagedBecause == "the cached copy of weights/w.bin changed after staging"
    assert "restaged" in verdict.message
    assert same_tree(root / "versions" / str(key), repo / "m" / "1")
    digests = json.loads((repo / "m" / "1" / MANIFEST_NAME).read_text())["files"]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digests["weights/w.bin"]
    (root / "versions" / str(key) / "model.py").unlink()  # a removed file too
    assert run(repo, root).restagedBecause == "the cached copy of model.py changed after staging"


@pytest.mark.parametrize(
    ("model", "version", "remove", "reason", "named"),
    [
        ("nope", 1, None, "ModelNotFound", "pvc://models/repo"),
        ("m", 7, None, "VersionNotFound", "pvc://models/repo/m"),
        ("m", 1, MANIFEST_NAME, "NoManifest", f"pvc://models/repo/m/1/{MANIFEST_NAME}"),
        ("m", 1, "model.py", "IntegrityMismatch", "pvc://models/repo/m/1/model.py"),
    ],
)
def test_failures_name_the_path_with_the_display_root(
    repo: Path, root: Path, model: str, version: int, remove: str | None, reason: str, named: str
) -> None:
    if remove:
        (repo / "m" / "1" / remove).unlink()
    verdict = run(repo, root, model=model, version=version, display_root="pvc://models/repo")
    assert (verdict.result, verdict.reason) == ("failed", reason)
    assert named in verdict.message and str(repo) not in verdict.message


def test_stale_links_and_scratch_of_an_owner_go_when_not_kept(tmp_path: Path, root: Path) -> None:
    repo = tmp_path / "repo"
    for version in (1, 2, 3):
        write_version(repo, "m", version, {"w.bin": bytes([version]) * 1000})
    small = 100  # everything goes to scratch
    run(repo, root, version=1, budget=small)
    run(repo, root, version=2, budget=small, keep=[1])
    owner = root / "repos" / OWNER / "m"
    assert sorted(p.name for p in owner.iterdir()) == ["1", "2", "config.pbtxt"]
    assert sorted(p.name for p in (root / "scratch" / OWNER).iterdir()) == ["m-1", "m-1.json", "m-2", "m-2.json"]
    verdict = run(repo, root, version=3, keep=[2])  # room now: 3 is shared
    assert verdict.result == "staged"
    assert sorted(p.name for p in owner.iterdir()) == ["2", "3", "config.pbtxt"]
    assert sorted(p.name for p in (root / "scratch" / OWNER).iterdir()) == ["m-2", "m-2.json"]
    assert json.loads((root / "pins" / f"{OWNER}.json").read_text())["keys"] == [verdict.key]
    run(repo, root, version=3)
    assert sorted(p.name for p in owner.iterdir()) == ["3", "config.pbtxt"]
    assert list((root / "scratch" / OWNER).iterdir()) == []


def test_two_concurrent_stagers_one_stages_the_other_hits(repo: Path, root: Path) -> None:
    processes = [cli(*stage_args(repo, root, owner=owner)) for owner in ("a.a", "b.b")]
    verdicts = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        verdicts.append(Verdict.from_json(out))
    assert sorted(v.result for v in verdicts) == ["hit", "staged"]
    assert verdicts[0].key == verdicts[1].key
    assert [p.name for p in (root / "versions").iterdir()] == [verdicts[0].key]
    assert [p.name for p in (root / "entries").iterdir()] == [f"{verdicts[0].key}.json"]


def test_a_stager_killed_mid_copy_leaves_nothing_visible(repo: Path, root: Path, tmp_path: Path) -> None:
    """The last file of the version is a FIFO with no writer: the stager blocks opening it, having
    copied the others into tmp/, and is killed there (SIGKILL: no clean-up of its own)."""
    real = repo / "m" / "1" / "weights" / "w.bin"
    data = real.read_bytes()
    real.unlink()
    os.mkfifo(real)
    verdict_file = tmp_path / "verdict"
    process = cli(*stage_args(repo, root), "--verdict-file", str(verdict_file))
    try:
        deadline = time.monotonic() + 30
        while not list((root / "tmp").glob("*/model.py")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the stager never started copying"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert list((root / "tmp").iterdir())  # the partial is there
    assert list((root / "versions").iterdir()) == []
    assert not (root / "repos" / OWNER).exists() and not verdict_file.exists()

    real.unlink()
    real.write_bytes(data)
    verdict = run(repo, root)  # the lock was released by the kernel with the killed process
    assert verdict.result == "staged"
    assert list((root / "tmp").iterdir()) == []
    assert same_tree(root / "repos" / OWNER / "m" / "1", repo / "m" / "1")


def test_a_half_written_version_left_by_a_killed_stager_is_never_linked(repo: Path, root: Path) -> None:
    """Killed between the rename into versions/ and the entry's write: a folder without an entry is
    removed (and staged again) by the next run; an entry without its folder is dropped."""
    key = run(repo, root).key
    (root / "entries" / f"{key}.json").unlink()
    (root / "entries" / "gone-1-0000000000000000.json").write_text("{}")
    (root / "tmp" / f"{key}.12345").mkdir()
    verdict = run(repo, root)
    assert (verdict.result, verdict.key) == ("staged", key)
    assert sorted(p.name for p in (root / "entries").iterdir()) == [f"{key}.json"]
    assert list((root / "tmp").iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root, or CAP_SYS_ADMIN)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_fails_and_leaves_no_partial(tmp_path: Path, tiny_disk: Path) -> None:
    """A real full disk: the cache root is a 1 MiB tmpfs and the version 2 MiB, with a budget that
    would admit it (the budget is not the disk: a node's disk fills for other reasons too)."""
    repo = tmp_path / "repo"
    write_version(repo, "big", 1, {"a.bin": os.urandom(1 << 20), "b.bin": os.urandom(1 << 20)})
    verdict = run(repo, tiny_disk, model="big", budget=1 << 30)
    assert (verdict.result, verdict.reason) == ("failed", "DiskFull")
    assert list((tiny_disk / "tmp").iterdir()) == list((tiny_disk / "versions").iterdir()) == []
    assert not (tiny_disk / "repos" / OWNER).exists()
