"""`pyproxy cache` on a cluster: the shared cache, not a node's local copies.

The cached upstream files are the PostgreSQL index (stores.pg.blobindex) and their objects
`cache/<key>` in the bucket (stores.clustershare); the pages are rows in PostgreSQL
(stores.pg.pages). A `SharedCache` is them as an ops.cacheops `Cache`, and it is as safe beside
running nodes as the nodes are with each other: a prune holds the lock the nodes' eviction
takes (`cache:evict`), so one evicts at a time, and removes object before row as they do (a
node that read the row finds the object gone and fetches the file anew); verify reads each
object in one streaming GET. Private bodies live under `private/` and are not in the index:
nothing here touches them. The nodes write the uses of their files in batches, so the least
recently used order a prune follows is the one written so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import BinaryIO

from pyproxy.model import Unavailable
from pyproxy.ops import cacheops
from pyproxy.settings import Settings
from pyproxy.stores.blobcache import OpenUpstream
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.blobuses import FLUSH_INTERVAL, Uses
from pyproxy.stores.clustershare import EVICTOR, SharedFiles, object_key
from pyproxy.stores.object_file import open_object
from pyproxy.stores.objects import Bucket, BucketUnavailable
from pyproxy.stores.pg.blobindex import PgBlobIndex
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.lists import LIST_PREFIX
from pyproxy.stores.pg.locks import AdvisoryLocks
from pyproxy.stores.pg.pages import all_pages, page_totals

__all__ = ["EvictionBusy", "SharedCache", "open_shared"]

EVICTION_PATIENCE_S = 60.0  # a node's eviction run is seconds; longer means something is wrong
_POLL_S = 0.1


class EvictionBusy(Exception):
    """Another node held the eviction lock for all of EVICTION_PATIENCE_S."""


class SharedCache:
    where = "in the bucket"

    def __init__(self, db: Database, bucket: Bucket, locks: AdvisoryLocks, max_size: int) -> None:
        self.max_size = max_size
        self._db = db
        self._locks = locks
        self._index = PgBlobIndex(db)
        self._bucket = bucket
        # a command notes no uses: this is only what SharedFiles flushes before it evicts
        uses = Uses(self._index.touch, FLUSH_INTERVAL, failures=(DatabaseUnavailable,))
        self._shared = SharedFiles(self._index, locks, bucket, uses, max_size)

    # -- cacheops.Cache --------------------------------------------------------------------------

    def entries(self) -> list[BlobEntry]:
        """Every file the cluster holds, least recently used first; `path` is its object."""
        return self._shared.entries()

    def volume(self) -> int:
        return self._index.volume()

    def delete(self, key: str) -> bool:
        return self._shared.delete(key)

    def free_body(self, entry: BlobEntry) -> None:
        self._bucket.delete(object_key(entry.key))

    def pages(self) -> tuple[int, int | None]:
        return page_totals(self._db)

    def lists(self) -> int | None:
        """The raw lists in the bucket (each node renders its own copy locally); None while
        the bucket does not answer (the rest of the stats are PostgreSQL's)."""
        try:
            return sum(size for _key, size in self._bucket.keys(LIST_PREFIX))
        except BucketUnavailable:
            return None

    def describe(self, keys: set[str]) -> dict[str, str]:
        return cacheops.names_in(all_pages(self._db), keys) if keys else {}

    def open_body(self, entry: BlobEntry) -> BinaryIO:
        return open_object(self._bucket, object_key(entry.key), entry.size)

    def lost(self, entry: BlobEntry) -> bool:
        return self._index.get(entry.key) is not None  # else evicted meanwhile

    # -- import (ops.transfer.SharedImport) ------------------------------------------------------

    async def add(self, key: str, open_body: OpenUpstream, *, sha256: str, size: int) -> bool:
        """Put a file into the shared cache as a node shares its download (checked, a
        conditional create, then the row); False if the cluster holds it already."""
        try:
            if await asyncio.to_thread(self._index.get, key) is not None:
                return False
            async with open_body() as chunks:
                digest, length = await self._shared.upload(key, chunks, sha256=sha256, size=size)
            await asyncio.to_thread(self._index.add, key, digest, length)
        except (BucketUnavailable, DatabaseUnavailable) as exc:
            raise Unavailable(str(exc)) from None
        return True

    def bound(self) -> None:
        """Evict down to max_size, as the one node evicting now (a node busy evicting does it)."""
        self._shared.evict(self.max_size)

    # -- prune -----------------------------------------------------------------------------------

    def prune(self, *, max_size: int | None, older_than_days: float | None
              ) -> cacheops.PruneResult:
        """cacheops.prune, cluster-wide, as the one node evicting now."""
        with self._evicting():
            return cacheops.prune(self, max_size=max_size, older_than_days=older_than_days)

    @contextlib.contextmanager
    def _evicting(self) -> Iterator[None]:
        deadline = time.monotonic() + EVICTION_PATIENCE_S
        while (lock := self._locks.try_lock(EVICTOR)) is None:
            if time.monotonic() > deadline:
                raise EvictionBusy(f"another node has been evicting from the shared cache for"
                                   f" {EVICTION_PATIENCE_S:g} s: try again later")
            time.sleep(_POLL_S)
        try:
            yield
        finally:
            self._locks.release(lock)

    def close(self) -> None:
        self._locks.close()
        self._db.close()


def open_shared(settings: Settings) -> SharedCache:
    """The cluster's shared cache ([storage] set): DatabaseUnavailable or BucketUnavailable,
    one line each, when they cannot be reached (the bucket is asked only when read)."""
    bucket = Bucket(settings.storage_objects, endpoint=settings.storage_s3_endpoint)
    db = Database(settings.storage_database, max_size=2)  # migrated, as every command does
    return SharedCache(db, bucket, AdvisoryLocks(settings.storage_database),
                       settings.cache_max_size)
