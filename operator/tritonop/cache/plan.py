"""The node cache's decisions, free of I/O so that each is tested by a table: the content key,
which entries to evict, whether a cached copy was changed after staging, and which of an
owner's version links go."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LiveOwners:
    """The node cache's owners (NAMESPACE.NAME of ModelDeployments with spec.model.cache) that
    exist in `scope` (a namespace, or "*": every namespace), as listed at `listed_at` (epoch s).
    A staging run releases the pins of the other owners there written before then."""

    names: frozenset[str]
    scope: str
    listed_at: float


def cache_key(model: str, version: int | str, manifest: bytes) -> str:
    """Content-addressed: owners whose version has identical manifest bytes share one entry (the
    manifest names every file's sha256, so equal manifests mean equal files)."""
    return f"{model}-{version}-{hashlib.sha256(manifest).hexdigest()[:16]}"


@dataclass(frozen=True)
class FileRecord:
    """One staged file as it was left: (size, mtime_ns, ino) make the cheap tamper check (a stat,
    no read); etag is the source object's when the repository is s3."""

    path: str  # relative to the version folder
    size: int
    mtime_ns: int
    ino: int
    etag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "ino": self.ino}
        if self.etag is not None:
            data["etag"] = self.etag
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRecord:
        etag = data.get("etag")
        return cls(str(data["path"]), int(data["size"]), int(data["mtime_ns"]), int(data["ino"]), etag)


@dataclass(frozen=True)
class Entry:
    """entries/<key>.json: what was staged, from where, and when it was last used (for LRU)."""

    key: str
    source: str  # the version's URI, with the display root (what an operator's user recognises)
    model: str
    version: str
    manifest_sha256: str
    bytes: int
    staged_at: float
    last_used: float
    files: tuple[FileRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.source,
            "model": self.model,
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "bytes": self.bytes,
            "staged_at": self.staged_at,
            "last_used": self.last_used,
            "files": [record.to_dict() for record in self.files],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        return cls(
            key=str(data["key"]),
            source=str(data["source"]),
            model=str(data["model"]),
            version=str(data["version"]),
            manifest_sha256=str(data["manifest_sha256"]),
            bytes=int(data["bytes"]),
            staged_at=float(data["staged_at"]),
            last_used=float(data["last_used"]),
            files=tuple(FileRecord.from_dict(record) for record in data["files"]),
        )


@dataclass(frozen=True)
class NoRoom:
    """Why a version cannot be given a shared entry; the pods get a scratch copy instead."""

    reason: str  # BudgetTooSmall: the version alone exceeds the budget; NoRoom: pinned entries fill it
    budget: int
    used: int
    pinned: int
    size: int

    @property
    def message(self) -> str:
        if self.reason == "BudgetTooSmall":
            return f"the version needs {self.size} bytes, more than the node cache's budget of {self.budget} bytes"
        return (
            f"the version needs {self.size} bytes; the node cache's budget is {self.budget} bytes, {self.used} "
            f"are used and {self.pinned} of them are pinned by versions pods on this node serve"
        )


def plan_eviction(entries: Iterable[Entry], pinned: Collection[str], budget: int, size: int) -> list[str] | NoRoom:
    """The keys to evict, least recently used first, so that a new entry of `size` bytes fits in
    `budget`; NoRoom when the version is larger than the budget or when evicting every unpinned
    entry would not be enough (then nothing is evicted: a partial eviction would only lose entries).
    Pinned entries (versions some owner's pods on this node serve or are about to) are never evicted."""
    listed = list(entries)
    used = sum(entry.bytes for entry in listed)
    pinned_bytes = sum(entry.bytes for entry in listed if entry.key in pinned)
    if size > budget:
        return NoRoom("BudgetTooSmall", budget, used, pinned_bytes, size)
    evict: list[str] = []
    for entry in sorted((e for e in listed if e.key not in pinned), key=lambda e: (e.last_used, e.key)):
        if used + size <= budget:
            break
        evict.append(entry.key)
        used -= entry.bytes
    if used + size > budget:
        return NoRoom("NoRoom", budget, sum(entry.bytes for entry in listed), pinned_bytes, size)
    return evict


Observed = tuple[int, int, int] | None  # (size, mtime_ns, ino) of a cached file now; None: gone


def first_change(files: Sequence[FileRecord], observed: Mapping[str, Observed]) -> str | None:
    """The first cached file whose (size, mtime_ns, ino) differs from when it was staged, or that is
    gone; None when all are as staged. A stat per file, no read: a hit must not cost a hash of
    gigabytes (the bytes were verified when staged, and are read-only since)."""
    for record in files:
        if observed.get(record.path) != (record.size, record.mtime_ns, record.ino):
            return record.path
    return None


def changed_objects(files: Sequence[FileRecord], etags: Mapping[str, str | None]) -> list[str]:
    """s3: the staged files whose object's ETag in a fresh listing differs from the staged one
    (overwritten or removed in the store after staging; the cached bytes stay the verified ones)."""
    return [record.path for record in files if record.etag is not None and etags.get(record.path) != record.etag]


def stale_versions(linked: Iterable[str], staged: str, keep: Collection[str]) -> list[str]:
    """An owner's version links that go: neither the version staged now nor one the node's pods
    still serve (--keep)."""
    return sorted(name for name in linked if name != staged and name not in keep)
