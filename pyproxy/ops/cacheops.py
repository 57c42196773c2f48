"""Operations on the upstream cache beside a running server: stats, prune (verify: cacheverify).

They work on a `Cache`: the data directory's (`LocalCache`, here) or a cluster's shared one
(ops.clustercache). On a data directory everything goes through diskcache's own transactions
(as the server's eviction does), so it is safe while workers serve: a blob removed here is one
a worker either already has open (and keeps sending) or looks up again and fetches anew.
Pruning also works on a full disk, where the index has no room to record a delete: see
`_delete`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from pyproxy.datadir import DataDir
from pyproxy.metrics import counter_values
from pyproxy.model import DistFile, ProjectPage
from pyproxy.multiproc import live_directories
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.blobkeys import (
    blob_key,
    is_metadata_key,
    made_metadata_key,
    metadata_key,
    provenance_key,
    ranged_metadata_key,
)
from pyproxy.stores.pages import PageStore
from pyproxy.stores.space import Spare, is_disk_full, with_room

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
    pages_dir = cache_dirs(data_dir)[0]
    if not keys or not pages_dir.exists():
        return {}
    pages = PageStore(pages_dir)
    try:
        return names_in(pages.pages(), keys)
    finally:
        pages.close()


def names_in(pages: Iterable[ProjectPage], keys: set[str]) -> dict[str, str]:
    """"project/filename" (or .metadata, .provenance) of those of `keys` the pages list."""
    names: dict[str, str] = {}
    if not keys:
        return names
    for page in pages:
        for dist in page.files:
            if dist.upstream_url is None:
                continue
            for key, suffix in _keys_of(dist):
                if key in keys:
                    names.setdefault(key, f"{page.name}/{dist.filename}{suffix}")
    return names


def _keys_of(dist: DistFile) -> Iterator[tuple[str, str]]:
    """The cache keys of an upstream file's bodies, with the suffix each adds to its name."""
    yield blob_key(dist), ""
    yield metadata_key(dist), ".metadata"
    if dist.filename.endswith(".whl"):
        yield made_metadata_key(dist), ".metadata"
        yield ranged_metadata_key(dist), ".metadata"
    if dist.provenance_url is not None:
        yield provenance_key(dist), ".provenance"


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


class Prunable(Protocol):
    """What prune needs of a cache (a BlobCache has it)."""

    max_size: int

    def entries(self) -> list[BlobEntry]:
        """Least recently used first."""
        ...

    def volume(self) -> int: ...

    def delete(self, key: str) -> bool: ...

    def free_body(self, entry: BlobEntry) -> None: ...


class Cache(Prunable, Protocol):
    """A cache as stats and verify see it: the data directory's, or a cluster's."""

    where: str  # where the bodies are, for messages: "on disk", "in the bucket"

    def pages(self) -> tuple[int, int | None]:
        """(upstream project pages cached, bytes they take if known)."""
        ...

    def lists(self) -> int | None:
        """Bytes the upstream project lists (/simple/) take, None if unknown: outside
        max_size, never pruned (one copy per upstream, replaced as upstream changes)."""
        ...

    def describe(self, keys: set[str]) -> dict[str, str]:
        """"project/filename" for those of `keys` the cached pages name."""
        ...

    def open_body(self, entry: BlobEntry) -> BinaryIO:
        """The body to read; FileNotFoundError (on open or first read) if it is gone."""
        ...

    def lost(self, entry: BlobEntry) -> bool:
        """Whether a body found gone is lost (the cache still lists it), not just evicted
        meanwhile; a lost one is forgotten."""
        ...

    def close(self) -> None: ...


class LocalCache:
    """The data directory's cache (its blob cache and page cache) as a `Cache`."""

    where = "on disk"

    def __init__(self, blobs: BlobCache, data_dir: Path | None = None) -> None:
        self.blobs = blobs
        self.max_size = blobs.max_size
        self._data_dir = data_dir

    def entries(self) -> list[BlobEntry]:
        return self.blobs.entries()

    def volume(self) -> int:
        return self.blobs.volume()

    def delete(self, key: str) -> bool:
        return self.blobs.delete(key)

    def free_body(self, entry: BlobEntry) -> None:
        self.blobs.free_body(entry)

    def pages(self) -> tuple[int, int | None]:
        if self._data_dir is None or not cache_dirs(self._data_dir)[0].exists():
            return 0, None
        pages = PageStore(cache_dirs(self._data_dir)[0])
        try:
            return len(pages.project_names()), None
        finally:
            pages.close()

    def lists(self) -> int:
        if self._data_dir is None:
            return 0
        layout = DataDir(self._data_dir)
        # the names' databases beside each page cache, and the rendered lists
        places = [layout.pages / "list", layout.rendered_lists,
                  *(layout.cache / "upstreams").glob("*/pages/list")]
        return sum(_bytes_under(place) for place in places)

    def describe(self, keys: set[str]) -> dict[str, str]:
        return {} if self._data_dir is None else describe(self._data_dir, keys)

    def open_body(self, entry: BlobEntry) -> BinaryIO:
        return open(entry.path, "rb")

    def lost(self, entry: BlobEntry) -> bool:
        return False  # a blob file goes only with its row (or the server replaced it)

    def close(self) -> None:
        self.blobs.close()


def _bytes_under(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:  # replaced by the server meanwhile
            continue
    return total


@dataclass(frozen=True)
class CacheStats:
    projects: int  # upstream project pages cached
    files: int  # distribution files (not counting .metadata)
    metadata_files: int
    bytes: int  # what max_size bounds: blobs plus the cache's index
    max_size: int
    oldest: BlobEntry | None  # stored longest ago
    least_recent: BlobEntry | None  # the next to be evicted
    page_bytes: int | None = None  # what the cached pages take, where known
    list_bytes: int | None = None  # what the project lists take (outside max_size)


def stats(cache: Cache) -> CacheStats:
    projects, page_bytes = cache.pages()
    entries = cache.entries()  # least recently used first
    metadata = sum(1 for entry in entries if is_metadata(entry))
    return CacheStats(
        projects=projects,
        files=len(entries) - metadata,
        metadata_files=metadata,
        bytes=cache.volume(),
        max_size=cache.max_size,
        oldest=min(entries, key=lambda e: e.stored, default=None),
        least_recent=entries[0] if entries else None,
        page_bytes=page_bytes,
        list_bytes=cache.lists(),
    )


@dataclass
class PruneResult:
    removed: list[tuple[str, int]] = field(default_factory=list)  # (key, size)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.removed)


def prune(blobs: Prunable, *, max_size: int | None, older_than_days: float | None,
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


def _delete(blobs: Prunable, entry: BlobEntry, spare: Spare | None) -> bool:
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
