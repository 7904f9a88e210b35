"""`tritonop cache stage`: copy one model version from its repository onto the node's disk,
verified against its manifest, and link it where the node's Triton pods load it.

It runs in a short Job pinned to the node, with the node's cache folder mounted at `root`:

    versions/<key>/          a staged version's files (key: model-version-sha16 of the manifest bytes)
    entries/<key>.json       what was staged, from where, last use, each file's (size, mtime_ns, ino[, etag])
    repos/<owner>/<model>/   config.pbtxt and <version> -> ../../../versions/<key> (relative links: the
                             folder is mounted at different paths in different containers)
    pins/<owner>.json        the keys the owner's pods on this node serve (never evicted)
    scratch/<owner>/         verified copies that did not fit the budget (not counted, never shared)
    tmp/                     partial copies; renamed into versions/ or scratch/ only once complete
    .lock                    flock'ed for the whole run

What is staged of a version: the files its manifest lists, and the manifest; a file in the
version folder that the manifest does not list could not be verified, so it is not copied.

Stagers on one node run one at a time, under an exclusive flock of `.lock` held for the whole
run: the simplest choice that is correct (eviction, the budget and the pins are read and
changed together, and two Jobs staging one version must not copy it twice). A stager killed
mid-copy releases the lock with its death, and leaves only a partial under tmp/, which the
next run removes (it holds the lock, so no live stager owns it). Nothing becomes visible under
versions/ or scratch/ before every byte is verified and fsync'ed, and nothing is linked
before it is visible there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from tritonop.cache.plan import (
    Entry,
    FileRecord,
    NoRoom,
    Observed,
    cache_key,
    changed_objects,
    first_change,
    plan_eviction,
    stale_versions,
)
from tritonop.cache.verdict import Result, Verdict
from tritonop.repository.manifests import HASH_CHUNK_BYTES, MANIFEST_NAME
from tritonop.repository.s3 import S3Credentials, S3Path

CONFIG_NAME = "config.pbtxt"
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # one path component, not hidden, no slash


class StageFailure(Exception):
    """A run that ends "failed": the reason (CamelCase) and a message naming the path."""

    def __init__(self, reason: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.key = reason, message, key


@dataclass(frozen=True)
class Request:
    repository: str  # a mounted folder, or s3://... (AWS_* credentials in the environment)
    model: str
    version: int
    root: Path  # the node's cache folder
    owner: str  # NS.NAME of the ModelDeployment
    budget: int  # bytes the shared entries may use
    keep: frozenset[str] = frozenset()  # versions pods on the node serve (their links stay, pinned)
    display_root: str | None = None  # the repository's URI, named instead of the mount in messages
    # Owners that exist (the operator's LIST when it made the Job), in `owners_scope` (a namespace,
    # or "*": every namespace): pins of other owners there, written before `owners_listed_at`,
    # belong to deleted ModelDeployments and are released. None: nothing is judged.
    live_owners: frozenset[str] | None = None
    owners_scope: str = "*"
    owners_listed_at: float = 0.0


# -- the source ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One version where its bytes are: its manifest (read once, small) and its files' sizes
    (from a stat or the s3 listing; no data read)."""

    uri: str  # the version folder, with the display root
    version_dir: Any  # Path | S3Path
    config: bytes
    manifest: bytes
    expected: dict[str, str]  # relative path -> sha256, the manifest itself included
    sizes: dict[str, int]
    etags: dict[str, str | None] | None  # s3 only

    def open(self, relative: str) -> BinaryIO:
        handle: BinaryIO = (self.version_dir / relative).open("rb")
        return handle


def open_source(request: Request, environ: dict[str, str]) -> Source:
    """The version in the repository, or StageFailure naming what is missing (with the display root)."""
    tree: Any
    if request.repository.startswith("s3://"):
        root = request.repository.rstrip("/")
        try:
            tree = S3Path.open_repository(root, S3Credentials.from_environment(environ), subtree=request.model)
        except Exception as error:  # unreachable endpoint, refused credentials, no such bucket
            raise StageFailure("RepositoryUnreadable", f"cannot list {root}: {error}") from error
    else:
        root = str(Path(request.repository).resolve())
        tree = Path(root)

    def shown(path: object) -> str:
        text = str(path)
        return text.replace(root, request.display_root.rstrip("/"), 1) if request.display_root else text

    model_dir = tree / request.model
    if not model_dir.is_dir():
        raise StageFailure("ModelNotFound", f"no model {request.model!r} in {shown(tree)}")
    version_dir = model_dir / str(request.version)
    if not version_dir.is_dir():
        raise StageFailure("VersionNotFound", f"version {request.version} not in {shown(model_dir)}")
    manifest_path = version_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise StageFailure(
            "NoManifest", f"{shown(manifest_path)} missing: the node cache stages verified versions only"
        )
    config_path = model_dir / CONFIG_NAME
    try:
        manifest = _read(manifest_path)
        listed = json.loads(manifest)["files"]
        expected = {str(relative): str(digest) for relative, digest in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StageFailure("NoManifest", f"{shown(manifest_path)}: unreadable manifest ({error})") from error
    except Exception as error:
        raise StageFailure("RepositoryUnreadable", f"cannot read {shown(manifest_path)}: {error}") from error
    for relative in expected:
        parts = Path(relative).parts
        if relative.startswith("/") or ".." in parts or not parts or relative == MANIFEST_NAME:
            raise StageFailure("NoManifest", f"{shown(manifest_path)} lists {relative!r}, not a file of the version")
    expected[MANIFEST_NAME] = hashlib.sha256(manifest).hexdigest()
    if not config_path.is_file():
        raise StageFailure("InvalidConfig", f"{shown(config_path)} missing")
    try:
        config = _read(config_path)
    except Exception as error:
        raise StageFailure("RepositoryUnreadable", f"cannot read {shown(config_path)}: {error}") from error
    sizes: dict[str, int] = {}
    etags: dict[str, str | None] | None = {} if isinstance(tree, S3Path) else None
    for relative in sorted(expected):
        path = version_dir / relative
        try:
            if isinstance(path, S3Path):
                info = path.info()
                sizes[relative] = info.size
                if etags is not None:
                    etags[relative] = info.etag
            else:
                status = os.stat(path)
                if os.path.isdir(path):
                    raise FileNotFoundError(relative)
                sizes[relative] = status.st_size
        except FileNotFoundError as error:
            message = f"{shown(path)}: listed in {MANIFEST_NAME} but missing"
            raise StageFailure("IntegrityMismatch", message) from error
    uri = shown(version_dir) if request.display_root or isinstance(tree, S3Path) else f"file://{version_dir}"
    return Source(uri, version_dir, config, manifest, expected, sizes, etags)


def _read(path: Any) -> bytes:
    with path.open("rb") as handle:
        data: bytes = handle.read()
    return data


# -- the cache folder ------------------------------------------------------------------------
class NodeCache:
    """The node's cache folder (see the module's docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions, self.entries_dir, self.repos = root / "versions", root / "entries", root / "repos"
        self.pins_dir, self.scratch, self.tmp = root / "pins", root / "scratch", root / "tmp"

    def prepare(self) -> None:
        for folder in (self.versions, self.entries_dir, self.repos, self.pins_dir, self.scratch, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The whole run, exclusively (released by the kernel when a killed stager's process dies)."""
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def clean(self) -> None:
        """Partials of killed stagers go; so do entries without their folder and folders without their
        entry (a stager killed between the rename and the entry's write: never linked)."""
        for leftover in self.tmp.iterdir():
            _remove(leftover)
        for folder in self.versions.iterdir():
            if not (self.entries_dir / f"{folder.name}.json").is_file():
                self._discard(folder)
        for path in self.entries_dir.iterdir():
            if path.name.startswith("."):  # a temp file of an interrupted atomic write
                _remove(path)
                continue
            key = path.name.removesuffix(".json")
            if not (self.versions / key).is_dir() or self.read_entry(key) is None:
                self.evict(key)

    def read_entry(self, key: str) -> Entry | None:
        try:
            return Entry.from_dict(json.loads((self.entries_dir / f"{key}.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def all_entries(self) -> list[Entry]:
        entries = (self.read_entry(path.name.removesuffix(".json")) for path in self.entries_dir.glob("*.json"))
        return sorted((entry for entry in entries if entry is not None), key=lambda entry: entry.key)

    def used(self) -> int:
        return sum(entry.bytes for entry in self.all_entries())

    def write_entry(self, entry: Entry, path: Path | None = None) -> None:
        _write_atomically(path or self.entries_dir / f"{entry.key}.json", json.dumps(entry.to_dict()).encode())

    def evict(self, key: str) -> None:
        """Out of sight first (a rename), then its entry, then the bytes."""
        self._discard(self.versions / key)
        with suppress(FileNotFoundError):
            (self.entries_dir / f"{key}.json").unlink()

    def _discard(self, folder: Path) -> None:
        if folder.exists() or folder.is_symlink():
            hidden = self.tmp / f"discard-{folder.name}.{os.getpid()}"
            os.rename(folder, hidden)
            _remove(hidden)

    def pinned(self, except_owner: str) -> set[str]:
        """Keys in every other owner's pins file (this owner's are recomputed by the run)."""
        keys: set[str] = set()
        for path in self.pins_dir.glob("*.json"):
            if path.name == f"{except_owner}.json":
                continue
            try:
                keys.update(str(key) for key in json.loads(path.read_text())["keys"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a torn pins file cannot exist (written atomically); an unreadable one pins nothing
        return keys

    def release_departed(self, request: Request) -> list[str]:
        """Pins, links and scratch copies of owners that no longer exist (request.live_owners), so
        a deleted ModelDeployment's versions become evictable. A pin written after the owners were
        listed is kept: its owner may be newer than the list."""
        if request.live_owners is None:
            return []
        released = []
        for path in sorted(self.pins_dir.glob("*.json")):
            owner = path.name.removesuffix(".json")
            in_scope = request.owners_scope == "*" or owner.split(".", 1)[0] == request.owners_scope
            if not in_scope or owner in request.live_owners or owner == request.owner:
                continue
            try:
                written_at = float(json.loads(path.read_text())["written_at"])
            except (OSError, ValueError, KeyError, TypeError):
                written_at = 0.0  # unreadable: it pins nothing (pinned()); its owner is gone all the same
            if written_at >= request.owners_listed_at:
                continue
            for leftover in (self.repos / owner, self.scratch / owner, path):
                _remove(leftover)
            released.append(owner)
        return released

    def write_pins(self, owner: str, keys: Collection[str]) -> None:
        data = {"owner": owner, "keys": sorted(keys), "written_at": time.time()}
        _write_atomically(self.pins_dir / f"{owner}.json", json.dumps(data).encode())

    def owner_dir(self, owner: str, model: str) -> Path:
        return self.repos / owner / model

    def linked_key(self, owner: str, model: str, version: str) -> str | None:
        """The entry an owner's version link points to; None when absent or pointing to scratch."""
        link = self.owner_dir(owner, model) / version
        if not link.is_symlink():
            return None
        target = Path(os.readlink(link))
        if target.parent.name == "versions" and (self.versions / target.name).is_dir():
            return target.name
        return None

    def link(self, owner: str, model: str, version: str, target: Path) -> None:
        """repos/<owner>/<model>/<version> -> target, relative, replaced atomically."""
        folder = self.owner_dir(owner, model)
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / version
        if link.exists() and not link.is_symlink():
            _remove(link)
        temporary = folder / f".{version}.{os.getpid()}.tmp"
        with suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(os.path.relpath(target, folder), temporary)
        os.replace(temporary, link)
        _fsync_dir(folder)

    def observe(self, folder: Path, files: tuple[FileRecord, ...]) -> dict[str, Observed]:
        observed: dict[str, Observed] = {}
        for record in files:
            try:
                status = os.lstat(folder / record.path)
            except OSError:
                observed[record.path] = None
            else:
                observed[record.path] = (status.st_size, status.st_mtime_ns, status.st_ino)
        return observed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old bytes or the new ones, never a torn file (temp file, fsync, rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


# -- copying ---------------------------------------------------------------------------------
def copy_verified(source: Source, partial: Path) -> tuple[FileRecord, ...]:
    """Every file of the version into `partial`, hashed while copied (one read of the source),
    checked against the manifest, fsync'ed, made read-only. StageFailure (IntegrityMismatch,
    DiskFull, RepositoryUnreadable) removes the partial."""
    try:
        partial.mkdir(parents=True)
        for relative in sorted(source.expected):
            _copy_file(source, relative, partial / relative)
        for folder in sorted({p for p in partial.rglob("*") if p.is_dir()} | {partial}, reverse=True):
            _fsync_dir(folder)
        records = []
        for relative in sorted(source.expected):
            status = os.stat(partial / relative)
            etag = source.etags.get(relative) if source.etags is not None else None
            records.append(FileRecord(relative, status.st_size, status.st_mtime_ns, status.st_ino, etag))
        return tuple(records)
    except OSError as error:
        _remove(partial)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StageFailure("DiskFull", f"the node's disk is full while staging {source.uri}: {error}") from error
        raise
    except BaseException:
        _remove(partial)
        raise


def _copy_file(source: Source, relative: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    shown = f"{source.uri}/{relative}"
    try:
        reader = source.open(relative)
    except Exception as error:
        raise StageFailure("RepositoryUnreadable", f"cannot read {shown}: {error}") from error
    with reader, open(target, "xb") as out:
        while True:
            try:
                chunk = reader.read(HASH_CHUNK_BYTES)
            except Exception as error:
                raise StageFailure("RepositoryUnreadable", f"cannot read {shown}: {error}") from error
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(target, 0o444)  # the pods only read; a changed copy is noticed by its mtime anyway
    got, want = digest.hexdigest(), source.expected[relative]
    if got != want:
        raise StageFailure(
            "IntegrityMismatch", f"{shown}: sha256 {got[:12]}… does not match the manifest's {want[:12]}…"
        )


def stage_into(cache: NodeCache, source: Source, destination: Path, name: str) -> tuple[tuple[FileRecord, ...], float]:
    """A verified copy at `destination`, appearing whole (rename from tmp/) or not at all."""
    started = time.monotonic()
    partial = cache.tmp / f"{name}.{os.getpid()}"
    records = copy_verified(source, partial)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.rename(partial, destination)
    _fsync_dir(destination.parent)
    return records, time.monotonic() - started


# -- one run ---------------------------------------------------------------------------------
def stage(request: Request, environ: dict[str, str] | None = None) -> Verdict:
    """One run: the verdict (failures included; only a bug raises). environ: where s3:// credentials
    are read (the CLI passes its environment: no operator module reads it)."""
    cache = NodeCache(request.root)
    for what, value in (("owner", request.owner), ("model", request.model)):
        if not NAME.match(value):
            return Verdict(
                "failed", "InvalidRequest", f"{what} {value!r} is not a plain name", budgetBytes=request.budget
            )
    cache.prepare()
    with cache.locked():
        cache.clean()
        try:
            return _stage_locked(cache, request, environ or {})
        except StageFailure as failure:
            reason, message, key = failure.reason, failure.message, failure.key
        except OSError as error:  # writing the cache folder: its entry, pins, config or link
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            reason, key = ("DiskFull" if full else "CacheUnwritable"), None
            message = f"cannot write the node cache at {request.root}: {error}"
        return Verdict("failed", reason, message, key, budgetBytes=request.budget, usedBytes=cache.used())


def _stage_locked(cache: NodeCache, request: Request, environ: dict[str, str]) -> Verdict:
    source = open_source(request, environ)
    key = cache_key(request.model, request.version, source.manifest)
    version = str(request.version)
    size = sum(source.sizes.values())
    kept = {v for v in request.keep if v != version}
    kept_keys = {k for v in kept if (k := cache.linked_key(request.owner, request.model, v)) is not None}
    now = time.time()
    released = cache.release_departed(request)
    evicted: list[str] = []
    result: Result
    seconds, store_changed, restaged_because = 0.0, False, None
    reason: str | None = None

    entry = cache.read_entry(key)
    if entry is not None:
        changed = first_change(entry.files, cache.observe(cache.versions / key, entry.files))
        if changed is None:
            cache.write_entry(replace(entry, last_used=now))
            result, target = "hit", cache.versions / key
            message = f"{key} is on the node (staged from {entry.source}, verified then)"
            objects = changed_objects(entry.files, source.etags) if source.etags is not None else []
            if objects:
                store_changed = True
                changed = ", ".join(objects)
                message += (
                    f"; the store's {changed} changed since (another ETag): the cached bytes are the verified ones"
                )
        else:
            restaged_because = f"the cached copy of {changed} changed after staging"
            cache.evict(key)
            entry = None
    if entry is None:
        plan = plan_eviction(cache.all_entries(), cache.pinned(request.owner) | kept_keys, request.budget, size)
        if isinstance(plan, NoRoom):
            result, reason = "no-room", plan.reason
            target, seconds = _scratch_copy(cache, request, source, key)
            message = f"{plan.message}; the pods load a verified copy in scratch/{request.owner}/{target.name}"
        else:
            for old in plan:
                cache.evict(old)
                evicted.append(old)
            target = cache.versions / key
            records, seconds = stage_into(cache, source, target, key)
            staged = Entry(
                key,
                source.uri,
                request.model,
                version,
                source.expected[MANIFEST_NAME],
                sum(r.size for r in records),
                now,
                now,
                records,
            )
            cache.write_entry(staged)
            result = "staged"
            message = f"staged {source.uri} as {key} ({size} bytes in {seconds:.1f}s)"
            if evicted:
                message += f"; evicted {', '.join(evicted)}"
        if restaged_because:
            message = f"{message}; restaged because {restaged_because}"
    if released:
        message += f"; released the pins of deleted {', '.join(released)}"

    _publish(cache, request, source, target, key if target.parent == cache.versions else None, kept_keys)
    return Verdict(
        result,
        reason,
        message,
        key,
        bytes=size,
        seconds=round(seconds, 3),
        budgetBytes=request.budget,
        usedBytes=cache.used(),
        evicted=evicted,
        storeChanged=store_changed,
        restagedBecause=restaged_because,
    )


def _scratch_copy(cache: NodeCache, request: Request, source: Source, key: str) -> tuple[Path, float]:
    """The owner's own verified copy when the budget has no room; reused while unchanged (its
    entry sits next to it), so a node that stays full does not copy it on every run."""
    name = f"{request.model}-{request.version}"
    folder = cache.scratch / request.owner / name
    sidecar = cache.scratch / request.owner / f"{name}.json"
    try:
        previous: Entry | None = Entry.from_dict(json.loads(sidecar.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    if (
        previous is not None
        and previous.key == key
        and first_change(previous.files, cache.observe(folder, previous.files)) is None
    ):
        return folder, 0.0
    with suppress(FileNotFoundError):
        sidecar.unlink()
    cache._discard(folder)
    records, seconds = stage_into(cache, source, folder, f"scratch-{request.owner}-{name}")
    now = time.time()
    entry = Entry(
        key,
        source.uri,
        request.model,
        str(request.version),
        source.expected[MANIFEST_NAME],
        sum(r.size for r in records),
        now,
        now,
        records,
    )
    cache.write_entry(entry, sidecar)
    return folder, seconds


def _publish(
    cache: NodeCache, request: Request, source: Source, target: Path, key: str | None, kept_keys: set[str]
) -> None:
    """The owner's config, version link and pins; its links and scratch copies of versions no
    longer staged nor kept go (and folders of other models the owner served before)."""
    folder = cache.owner_dir(request.owner, request.model)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / CONFIG_NAME, source.config)
    version = str(request.version)
    cache.link(request.owner, request.model, version, target)
    cache.write_pins(request.owner, kept_keys | ({key} if key else set()))
    linked = [p.name for p in folder.iterdir() if p.name != CONFIG_NAME and not p.name.startswith(".")]
    for name in stale_versions(linked, version, request.keep):
        _remove(folder / name)
    for other in (cache.repos / request.owner).iterdir():
        if other.name != request.model:
            _remove(other)
    scratch = cache.scratch / request.owner
    if scratch.is_dir():
        wanted = {f"{request.model}-{v}" for v in request.keep | {version}}
        for path in scratch.iterdir():
            if path.name.removesuffix(".json") not in wanted:
                _remove(path)
