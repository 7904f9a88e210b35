"""Integrity of a model version: its SHA256SUMS.json manifest checked against the files, read in
chunks, and a cache of verdicts by file identity so a version is hashed once per change of its
files, not once per reconcile (models are gigabytes)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from prometheus_client import Counter

if TYPE_CHECKING:
    from tritonop.repository.s3 import S3Path

Tree: TypeAlias = "Path | S3Path"  # a folder, or a key prefix in S3

MANIFEST_NAME = "SHA256SUMS.json"
HASH_CHUNK_BYTES = 1 << 20  # sha256_file reads this much at a time: memory stays bounded for any file size
HASHED_BYTES = Counter(
    "tritonop_repository_hashed_bytes_total",
    "Bytes of model files the operator read to verify manifests (stays flat while nothing changes).",
)


def sha256_file(path: Tree) -> str:
    """The file's sha256 as hex, read in chunks of HASH_CHUNK_BYTES (model files can be many GiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            HASHED_BYTES.inc(len(chunk))
    return digest.hexdigest()


# What a file's bytes are taken to be unchanged by: size, inode, modification and change time.
# ctime cannot be set from user space, so rewriting a file and restoring its mtime still shows.
FileIdentity = tuple[str, int, int, int, int] | tuple[str]


def _identity(path: Path, relative: str) -> FileIdentity:
    try:
        info = os.stat(path)
    except OSError:
        return (relative,)  # missing: part of the identity too (it may appear later)
    return (relative, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


class ManifestCache:
    """Verdicts of verified version folders, so that a model is hashed once per change, not on
    every reconcile (model files are gigabytes; reconciles come every second while converging).

    An entry is keyed by the version folder and holds the identity (see FileIdentity) of the
    manifest and of every file it lists, with the verdict; a lookup stats those files (cheap,
    no reads) and hashes again only when one of them changed. Entries remember which
    ModelDeployments (uids) use them and go when the last one is forgotten; at most
    `max_entries` are kept (least recently used first out). Shared by every reconcile of the
    process, which runs it in worker threads.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Path, tuple[tuple[FileIdentity, ...], str | None]] = OrderedDict()
        self._users: dict[str, set[Path]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, version_dir: Path, identity: tuple[FileIdentity, ...], user: str | None = None
    ) -> tuple[bool, str | None]:
        with self._lock:
            if user is not None:
                self._users.setdefault(user, set()).add(version_dir)
            entry = self._entries.get(version_dir)
            if entry is None or entry[0] != identity:
                return False, None
            self._entries.move_to_end(version_dir)
            return True, entry[1]

    def store(self, version_dir: Path, identity: tuple[FileIdentity, ...], verdict: str | None) -> None:
        with self._lock:
            self._entries[version_dir] = (identity, verdict)
            self._entries.move_to_end(version_dir)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, user: str) -> None:
        """A ModelDeployment is gone: drop the entries no other one uses."""
        with self._lock:
            released = self._users.pop(user, set())
            still_used = set().union(*self._users.values()) if self._users else set()
            for version_dir in released - still_used:
                self._entries.pop(version_dir, None)


def verify_manifest(version_dir: Tree, cache: ManifestCache | None = None, user: str | None = None) -> str | None:
    """None when the version has no manifest or every file matches it; else what is wrong.

    With a cache, files whose identity is unchanged since they were verified are not read again
    (user: the ModelDeployment asking, so that its entries go with it).
    """
    manifest_path = version_dir / MANIFEST_NAME
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        listed = sorted(files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{manifest_path}: unreadable manifest ({error})"
    if cache is None or not isinstance(version_dir, Path):
        return _check_files(version_dir, listed)
    identity = (
        _identity(version_dir / MANIFEST_NAME, MANIFEST_NAME),
        *(_identity(version_dir / r, r) for r, _ in listed),
    )
    known, verdict = cache.lookup(version_dir, identity, user)
    if known:
        return verdict
    verdict = _check_files(version_dir, listed)
    cache.store(version_dir, identity, verdict)
    return verdict


def _check_files(version_dir: Tree, listed: list[tuple[str, object]]) -> str | None:
    for relative, expected in listed:
        path = version_dir / relative
        if not path.is_file():
            return f"{path}: listed in {MANIFEST_NAME} but missing"
        digest = sha256_file(path)
        if digest != expected:
            return f"{path}: sha256 {digest[:12]}… does not match the manifest's {str(expected)[:12]}…"
    return None
