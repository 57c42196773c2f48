"""The cluster's shared copy of upstream files: objects `cache/<key>` in the bucket, listed in
the PostgreSQL index (stores.pg.blobindex), bounded by [cache] max_size.

An object is written once, as a conditional create, from bytes whose size and sha256 matched
(the last chunk is held back until they did, so a body that turns out wrong is never completed
in the bucket); it is listed only afterwards. Eviction runs on one node at a time (the
advisory lock `cache:evict`), least recently used first, object before row: a node that still
read the row finds the object gone and fetches the file anew. Private bodies live under
`private/` and are not in this index, so nothing here ever touches them.

A read from the bucket is checked against its row (`checked`): an object damaged there (same
key, other bytes: bit rot, a bad restore) is removed with its row (`forget_damaged`), object
first, so that the file is fetched and committed anew rather than served wrong forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from pyproxy import metrics
from pyproxy.model import Unavailable
from pyproxy.stores.blobcache import HashMismatch
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.blobuses import Uses
from pyproxy.stores.objects import Bucket, BucketUnavailable, ObjectMissing
from pyproxy.stores.pg.blobindex import PgBlobIndex
from pyproxy.stores.pg.claims import download_lock
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.locks import AdvisoryLocks

__all__ = ["EVICTOR", "DamagedObject", "SharedFiles", "checked", "object_key"]

log = logging.getLogger("pyproxy.clusterblobs")

EVICTOR = "cache:evict"  # the advisory lock of the one node that evicts at a time


def object_key(key: str) -> str:
    return "cache/" + key


class DamagedObject(Unavailable):
    """An object in the bucket that is not the file its index row lists (size or sha256)."""


async def checked(
    chunks: AsyncIterator[bytes], name: str, sha256: str, size: int
) -> AsyncGenerator[bytes, None]:
    """An object's bytes, checked against the size and sha256 its row lists: DamagedObject
    where they differ. The chunk that completes `size` goes on only once the sha256 matched, so
    an object read in one chunk (up to 1 MiB: stores.objects' chunks) is caught before any of
    it is handed on; in a longer one the chunks before the last have gone on by then."""
    digest, count = hashlib.sha256(), 0
    async for chunk in chunks:
        count += len(chunk)
        if count > size:
            raise DamagedObject(f"{name} holds more than the {size} bytes its row lists")
        await asyncio.to_thread(digest.update, chunk)  # off the loop: hashing releases the GIL
        if count == size and (actual := digest.hexdigest()) != sha256:
            raise DamagedObject(f"{name} has sha256 {actual}, its row lists {sha256}")
        yield chunk
    if count != size:
        raise DamagedObject(f"{name} holds {count} bytes, its row lists {size}")
    if not size and digest.hexdigest() != sha256:  # no chunk to check above
        raise DamagedObject(f"{name} is empty, its row lists sha256 {sha256}")


class SharedFiles:
    def __init__(
        self, index: PgBlobIndex, locks: AdvisoryLocks, bucket: Bucket, uses: Uses,
        max_size: int,
    ) -> None:
        self.index = index
        self.bucket = bucket
        self.max_size = max_size
        self._locks = locks
        self._uses = uses
        self._volume = 0  # the last volume read, for gauges while the database is down

    async def upload(
        self, key: str, chunks: AsyncIterator[bytes], *, sha256: str | None, size: int | None
    ) -> tuple[str, int]:
        """Write `key`'s object from `chunks` unless it exists: (sha256, size) of what it now
        holds. HashMismatch (nothing written) if the body is not the announced one."""
        digest, count = hashlib.sha256(), 0

        async def checked() -> AsyncIterator[bytes]:
            nonlocal count
            held: bytes | None = None  # the last chunk goes once the whole body matched
            async for chunk in chunks:
                if held is not None:
                    yield held
                digest.update(chunk)
                count += len(chunk)
                held = chunk
            if (size is not None and count != size) or (
                sha256 is not None and digest.hexdigest() != sha256
            ):
                raise HashMismatch(f"{key!r}: the body to share is not the one announced")
            if held is not None:
                yield held

        name = object_key(key)
        if not await self.bucket.put_stream_async(name, checked()):
            existing = await asyncio.to_thread(self.bucket.size, name)  # another node won
            if existing != count:  # not these bytes: the index must not vouch for it
                raise HashMismatch(f"{name} exists with {existing} bytes, not {count}")
        return digest.hexdigest(), count

    # -- listing ---------------------------------------------------------------------------------

    def volume(self) -> int:
        """Bytes the shared cache holds (what max_size bounds); the last known if the database
        cannot be reached."""
        try:
            self._volume = self.index.volume()
        except DatabaseUnavailable as exc:
            log.debug("cache volume unknown: %s", exc)
        return self._volume

    def entries(self) -> list[BlobEntry]:
        """Least recently used first; `path` is the object's key in the bucket."""
        return [
            BlobEntry(b.key, b.size, b.sha256, Path(object_key(b.key)), b.created, b.last_used)
            for b in self.index.entries()
        ]

    def delete(self, key: str) -> bool:
        self.bucket.delete(object_key(key))
        return self.index.forget(key) is not None

    async def forget_damaged(self, key: str, sha256: str, size: int) -> bool:
        """Remove `key`'s object, which a read found damaged (not the `sha256` and `size` its
        row listed), and then its row; True if this call did. Only under the key's lock, so no
        node is committing the key meanwhile, and only if the row still lists that file (or
        none) and the object in the bucket still is not it: another node that found the damage
        first may have removed it and committed the file again (If-None-Match: *), and its
        good object and row must stay. False when another node holds the lock: it downloads
        the file anew, or removes the damage itself. BucketUnavailable, DatabaseUnavailable."""
        name = object_key(key)
        lock = await asyncio.to_thread(self._locks.try_lock, download_lock(key))
        if lock is None:
            return False
        try:
            row = await asyncio.to_thread(self.index.get, key)
            if row is not None and (row.sha256, row.size) != (sha256, size):
                return False  # the index lists another file under the key now: not ours
            try:
                async for _ in checked(self.bucket.stream(name), name, sha256, size):
                    pass
                return False  # whole again: re-committed since the damaged read
            except DamagedObject:
                pass
            except ObjectMissing:
                if row is None:
                    return False  # both gone already
            # object before row: if this stops between them, the row names a missing object,
            # which a read forgets; never a row vouching for the damaged bytes (nor a leader's
            # conditional create that finds them there and takes them for its own)
            await self.bucket.delete_async(name)
            if row is not None:
                await asyncio.to_thread(self.index.forget, key)
            return True
        finally:
            await asyncio.to_thread(self._locks.release, lock)  # runs on if we are cancelled

    # -- eviction --------------------------------------------------------------------------------

    def evict(self, limit: int, protect: str = "") -> list[tuple[str, int]]:
        """Blocking: least recently used files out of the bucket and the index until the
        shared cache holds at most `limit` bytes; [] if another node is evicting now."""
        volume = self._volume = self.index.volume()
        if volume <= limit:
            return []
        lock = self._locks.try_lock(EVICTOR)
        if lock is None:
            return []
        removed: list[tuple[str, int]] = []
        try:
            self._uses.flush()  # the order is what the index holds: this node's uses in it
            volume = self.index.volume()
            while volume > limit:
                victims = self.index.least_used(64, protect)
                if not victims:
                    break
                for key, size in victims:
                    if volume <= limit:
                        break
                    self.bucket.delete(object_key(key))
                    if self.index.forget(key) is not None:
                        removed.append((key, size))
                        volume -= size
                        metrics.CACHE_EVICTIONS.inc()
                        metrics.CACHE_EVICTED_BYTES.inc(size)
        except (BucketUnavailable, DatabaseUnavailable) as exc:
            log.warning("eviction stopped after %d files: %s", len(removed), exc)
        finally:
            self._locks.release(lock)
            self._volume = volume
        if removed:
            log.info("evicted %d files (%d bytes) from the shared cache", len(removed),
                     sum(size for _, size in removed))
        return removed
