"""Operations on the upstream cache beside a running server: stats, prune, verify.

Everything goes through diskcache's own transactions (as the server's eviction does), so it is
safe while workers serve: a blob removed here is one a worker either already has open (and keeps
sending) or looks up again and fetches anew. Pruning also works on a full disk, where the index
has no room to record a delete: see `_delete`.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyproxy.datadir import DataDir
from pyproxy.metrics import counter_values
from pyproxy.multiproc import live_directories
from pyproxy.stores import proof
from pyproxy.stores.blobcache import BlobCache, BlobEntry
from pyproxy.stores.blobkeys import (
    blob_key,
    is_metadata_key,
    is_provenance_key,
    metadata_key,
    names_its_body,
    provenance_key,
)
from pyproxy.stores.pages import PageStore
from pyproxy.stores.space import Spare, is_disk_full, with_room

_CHUNK = 1024 * 1024
_DAY = 86400.0


def cache_dirs(data_dir: Path) -> tuple[Path, Path]:
    """(page cache, file cache) under a data directory."""
    layout = DataDir(data_dir)
    return layout.pages, layout.files


def open_blobs(data_dir: Path, max_size: int) -> BlobCache:
    return BlobCache(cache_dirs(data_dir)[1], max_size)


def is_metadata(entry: BlobEntry) -> bool:
    return is_metadata_key(entry.key)


def describe(data_dir: Path, keys: set[str]) -> dict[str, str]:
    """"project/filename" for cache keys (which are hashes), read from the cached pages."""
    names: dict[str, str] = {}
    pages_dir = cache_dirs(data_dir)[0]
    if not keys or not pages_dir.exists():
        return names
    pages = PageStore(pages_dir)
    try:
        for page in pages.pages():
            for dist in page.files:
                if dist.upstream_url is None:
                    continue
                for key, suffix in ((blob_key(dist), ""), (metadata_key(dist), ".metadata"),
                                    (provenance_key(dist), ".provenance")):
                    if key in keys:
                        names.setdefault(key, f"{page.name}/{dist.filename}{suffix}")
    finally:
        pages.close()
    return names


def hit_counts(data_dir: Path) -> tuple[int, int] | None:
    """(hits, misses) of the cache since the running server started, read from its metrics
    (a request that joined a download in progress counts as a miss); None if no server runs."""
    directories = live_directories(data_dir)
    if not directories:
        return None
    hits = misses = 0.0
    for directory in directories:
        for labels, value in counter_values(directory, "pyproxy_cache_requests").items():
            if ("result", "hit") in labels:
                hits += value
            else:
                misses += value
    return int(hits), int(misses)


@dataclass(frozen=True)
class CacheStats:
    projects: int  # upstream project pages cached
    files: int  # distribution files (not counting .metadata)
    metadata_files: int
    bytes: int  # what max_size bounds: blobs plus the cache's index
    max_size: int
    oldest: BlobEntry | None  # stored longest ago
    least_recent: BlobEntry | None  # the next to be evicted


def stats(data_dir: Path, blobs: BlobCache) -> CacheStats:
    pages_dir = cache_dirs(data_dir)[0]
    projects = 0
    if pages_dir.exists():
        pages = PageStore(pages_dir)
        try:
            projects = len(pages.project_names())
        finally:
            pages.close()
    entries = blobs.entries()  # least recently used first
    metadata = sum(1 for entry in entries if is_metadata(entry))
    return CacheStats(
        projects=projects,
        files=len(entries) - metadata,
        metadata_files=metadata,
        bytes=blobs.volume(),
        max_size=blobs.max_size,
        oldest=min(entries, key=lambda e: e.stored, default=None),
        least_recent=entries[0] if entries else None,
    )


@dataclass
class PruneResult:
    removed: list[tuple[str, int]] = field(default_factory=list)  # (key, size)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.removed)


def prune(blobs: BlobCache, *, max_size: int | None, older_than_days: float | None,
          now: float | None = None, spare: Spare | None = None) -> PruneResult:
    """Remove files not used for `older_than_days`, then least recently used ones until the
    cache holds at most `max_size` bytes. Works on a full disk too (see `_delete`)."""
    result = PruneResult()
    entries = blobs.entries()  # least recently used first
    if older_than_days is not None:
        cutoff = (time.time() if now is None else now) - older_than_days * _DAY
        while entries and entries[0].accessed < cutoff:  # the rest are newer
            entry = entries.pop(0)
            if _delete(blobs, entry, spare):
                result.removed.append((entry.key, entry.size))
    if max_size is not None:
        excess = blobs.volume() - max_size
        for entry in entries:
            if excess <= 0:
                break
            if _delete(blobs, entry, spare):
                result.removed.append((entry.key, entry.size))
                excess -= entry.size
    return result


def _delete(blobs: BlobCache, entry: BlobEntry, spare: Spare | None) -> bool:
    """Delete one cached file. The index needs room to forget it, so on a full disk the file's
    own room goes first (a worker sending it keeps its open file; one looking it up now finds
    it gone and fetches it again), then, if that was not enough, the spare file's."""
    try:
        return blobs.delete(entry.key)
    except (OSError, sqlite3.Error) as exc:
        if not is_disk_full(exc):
            raise
    blobs.free_body(entry)
    if spare is None:
        return blobs.delete(entry.key)
    return with_room(spare, lambda: blobs.delete(entry.key), "prune the cache")


@dataclass(frozen=True)
class Damaged:
    entry: BlobEntry
    reason: str


@dataclass
class VerifyResult:
    checked: int = 0
    bytes: int = 0
    damaged: list[Damaged] = field(default_factory=list)


def _sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _hash_in_key(entry: BlobEntry) -> bool:
    """Whether upstream listed the body's sha256 (the key then names it). Other entries (keyed
    by their URL, or a `.metadata` by its file's sha256) were cached on proof of their kind."""
    return names_its_body(entry.key, entry.sha256)


def _kind_problem(entry: BlobEntry, label: str | None) -> str | None:
    """Why a body cached without a listed sha256 is not a well-formed file of its kind."""
    filename = label.rpartition("/")[2] if label else None
    try:
        with open(entry.path, "rb") as body:
            if filename is not None:
                proof.check_file(filename, body, entry.size)
            elif is_metadata(entry):
                proof.check_kind("metadata", body, entry.size)
            elif is_provenance_key(entry.key):
                proof.check_kind("provenance", body, entry.size)
            else:  # its page is no longer cached: any archive will do
                proof.check_any_archive(body, entry.size)
    except proof.Unproven as exc:
        return f"upstream lists no sha256, and it is not a well-formed file of its kind: {exc}"
    return None


def verify(
    blobs: BlobCache,
    progress: Callable[[BlobEntry], None] | None = None,
    *,
    data_dir: Path | None = None,
) -> VerifyResult:
    """Re-hash every cached file, and re-check the kind of those cached without a listed sha256
    (named from the pages cached under `data_dir`); remove (and report) the bad ones."""
    result = VerifyResult()
    entries = blobs.entries()
    unproven = {entry.key for entry in entries if not _hash_in_key(entry)}
    names = describe(data_dir, unproven) if data_dir is not None else {}
    for entry in entries:
        try:
            actual, size = _sha256_of(entry.path)
            reason = None
            if size != entry.size:
                reason = f"{size} bytes on disk, {entry.size} when cached"
            elif actual != entry.sha256:
                reason = f"sha256 {actual}, {entry.sha256} when cached"
            elif entry.key in unproven:
                reason = _kind_problem(entry, names.get(entry.key))
        except FileNotFoundError:
            if progress:
                progress(entry)
            continue  # evicted or replaced by the server meanwhile
        if reason is not None:
            blobs.delete(entry.key)
            result.damaged.append(Damaged(entry, reason))
        result.checked += 1
        result.bytes += size
        if progress:
            progress(entry)
    return result
