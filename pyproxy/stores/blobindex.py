"""The blob cache's committed files: diskcache's index and its files, looked up without a write,
uses recorded in memory, evicted in least-recently-used order.

Layout under `directory` (the cache's; stores.blobcache adds `partial/`):

    blobs/             a diskcache.Cache: cache.db (the index) and xx/yy/<random>.val (the blobs)
    removals           a counter every process maps, bumped before a blob file is removed

A hit never writes. The index is opened without an eviction policy (diskcache's LRU policy
updates the row in a write transaction on every get), so a lookup is one read; a process keeps
the paths it looked up and asks the index again only after some process removed a blob
(`KnownPaths`); and it records uses in memory, written in batches (stores.blobuses). A hit this
process has seen since the last removal costs no thread hop and no system call.

`KnownPaths` holds the blobs this process looked up (key -> LocalFile, the most recent few
thousand) and trusts them while the removal counter (a stores.changes.ChangeCounter, read from
memory) still has the value read before the lookup. Every process bumps that counter before it
removes a blob file (eviction, prune, verify, a replaced entry), after the index row is gone. A
path handed out may still be removed before it is opened; since the counter moves before the
file goes, the caller that then fails to open it finds it moved when it asks again.

The cache may be deleted by hand at any time, a blob file or all of `directory`, with no counter
moving. A reader that then fails to open a path it was handed reports it (`vanished`): the row
that names it is deleted and the counter bumped, as for any removal, so every process looks the
key up again and misses. An index whose database file is gone is made anew on the next miss
(`_renew_if_gone`). Neither costs a hit anything: the failed open is the only sign needed.

Eviction is diskcache's own path (Cache.delete -> Disk.remove); we choose the victims ourselves
in least-recently-used order of the recorded uses, because diskcache's built-in cull drops ten
rows at a time, which can include the file just stored and does not guarantee the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sqlite3
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, UNKNOWN

from pyproxy import metrics
from pyproxy.lru import BoundedLRU
from pyproxy.model import LocalFile
from pyproxy.stores.blobuses import FLUSH_INTERVAL, Uses, sqlite_writer
from pyproxy.stores.changes import ChangeCounter
from pyproxy.stores.write_turns import WriteTurns

__all__ = ["BlobEntry", "BlobIndex", "KnownPaths", "vanished"]

log = logging.getLogger("pyproxy.blobcache")

_KNOWN_MAX = 10_000  # paths a process remembers (a few MB)

# the indexes open in this process, for `vanished`: a reader holds a path, not its index
_OPEN: weakref.WeakSet[BlobIndex] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def vanished(path: Path) -> bool:
    """Blocking: a reader could not open `path` (ENOENT), a blob's file a lookup handed out;
    whether an index of this process holds it (then see BlobIndex.vanished)."""
    with _OPEN_LOCK:
        indexes = list(_OPEN)
    for index in indexes:
        if index.holds(path):
            index.vanished(path)
            return True
    return False


@dataclass(frozen=True, slots=True)
class BlobEntry:
    key: str
    size: int
    sha256: str
    path: Path
    stored: float  # unix time
    accessed: float  # unix time, last use written to the index (or the store)


class _Blob:
    """A verified file that `_BlobDisk.store` links into diskcache's layout."""

    __slots__ = ("path", "size")

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size


class _BlobDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache ships no types
    """A Disk that takes a finished file by hard link instead of copying it, and bumps the
    removal counter before it removes one (every removal of a blob file comes through here)."""

    removals: ChangeCounter | None = None

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, _Blob):
            stored: tuple[int, int, str | None, Any] = super().store(value, read, key=key)
            return stored
        filename, full_path = self.filename(key, value)
        for attempt in range(10):  # another process may remove the empty sub-directory meanwhile
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            try:
                os.link(value.path, full_path)
                break
            except FileNotFoundError:
                if attempt == 9 or not value.path.exists():
                    raise
        return value.size, MODE_BINARY, filename, None

    def remove(self, file_path: str) -> None:
        # the row is gone; before the file goes: whoever then fails to open it finds the
        # counter moved when it looks the key up again
        if self.removals is not None:
            self.removals.bump()
        super().remove(file_path)


class BlobIndex:
    """The committed blobs under `directory`, at most `max_size` bytes with the index."""

    def __init__(
        self, directory: Path, max_size: int, *, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self.max_size = max_size
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._blobs = directory / "blobs"
        self._removals_path = directory / "removals"
        self._removals = ChangeCounter(self._removals_path)
        self._removals_id = _identity(self._removals_path)
        self._closed = False
        self._db = self._blobs / diskcache.core.DBNAME  # read directly by _query
        self._renewing = threading.Lock()
        self._cache, self._db_id = self._open_cache()
        self._known = KnownPaths(self._removals)
        self._turns = WriteTurns(self._db)
        self._uses = Uses(
            sqlite_writer(self._db, self._turns), flush_interval, failures=(sqlite3.Error,)
        )
        with contextlib.suppress(RuntimeError):  # made inside a server's loop: its timer writes
            self._uses.attach(asyncio.get_running_loop())
        self._order_by_use()
        with _OPEN_LOCK:
            _OPEN.add(self)

    def _open_cache(self) -> tuple[diskcache.Cache, tuple[int, int] | None]:
        """diskcache's Cache on `blobs/` (made, with its index, if missing), and the identity of
        its index file."""
        cache = diskcache.Cache(
            str(self._blobs),
            disk=_BlobDisk,
            size_limit=self.max_size,
            eviction_policy="none",  # a get writes nothing; recency is ours, see _uses
            statistics=0,  # hit counters would write on every get too
            cull_limit=0,  # eviction is ours, see evict
        )
        disk = cache.disk
        assert isinstance(disk, _BlobDisk)
        disk.removals = self._removals
        return cache, _identity(self._db)

    # -- lookups and uses ------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose timer writes the uses recorded in this process."""
        self._uses.attach(loop)

    def known(self, key: str) -> LocalFile | None:
        """A blob this process has looked up since the last removal: no thread, no system call.
        Not a use."""
        return self._known.get(key)

    def lookup(self, key: str) -> LocalFile | None:
        """A complete, verified blob, or None; a use. May read the index: call it in a thread."""
        hit = self._known.get(key) or self.indexed(key)
        if hit is not None:
            self._uses.note(key)
        return hit

    def indexed(self, key: str) -> LocalFile | None:
        """Blocking: what the index says (one read, no write), remembered in memory unless a
        blob was removed meanwhile. Not a use."""
        token = self._known.token()
        try:
            handle, sha256 = self._cache.get(key, read=True, tag=True, retry=True)
        except (diskcache.Timeout, sqlite3.Error) as exc:
            log.warning("cache index unavailable for %r: %s", key, exc)
            self._renew_if_gone()
            return None
        if handle is None:  # not there, or removed between the index's answer and the open
            # a miss: one stat (a download follows anyway) for an index deleted by hand
            self._renew_if_gone()
            return None
        if not isinstance(handle, io.BufferedReader) or not isinstance(sha256, str):
            return None  # not one of ours
        with handle:
            size = os.fstat(handle.fileno()).st_size
        hit = LocalFile(path=Path(handle.name), size=size, sha256=sha256, cache="hit")
        self._known.remember(key, hit, token)
        return hit

    def note_use(self, key: str) -> None:
        self._uses.note(key)

    def holds(self, path: Path) -> bool:
        """Whether `path` is where this index keeps its blobs' files."""
        return path.is_relative_to(self._blobs)

    def vanished(self, path: Path) -> None:
        """Blocking: the blob file at `path`, handed out by a lookup, could not be opened: it
        was deleted by something other than pyproxy (an operator, a disk cleaner), which moved
        no counter. Its row goes, if it still names that file (another process may have fetched
        the key anew meanwhile), and the counter moves, as for any removal: every process then
        asks the index again, misses, and fetches the file anew."""
        filename = str(path.relative_to(self._blobs))
        try:
            with self._turns.turn(), contextlib.closing(
                sqlite3.connect(self._db, timeout=60, isolation_level=None)
            ) as db:
                # the triggers diskcache made keep its count and size right
                deleted = db.execute("DELETE FROM Cache WHERE filename = ?", (filename,)).rowcount
        except sqlite3.Error as exc:  # the index itself may be gone: renewed below
            log.warning("could not forget %s in the cache index: %s", filename, exc)
            deleted = -1
        if deleted > 0:
            log.warning("cached file %s was deleted outside pyproxy: fetching it anew", filename)
        # as for any removal; if pyproxy removed it, it bumped already: once more costs every
        # process one more look at the index per key, never a stale path
        self._removals.bump()
        self._renew_if_gone()

    def _renew_if_gone(self) -> None:
        """Blocking: when the index file was deleted (`rm -rf` of the cache, by hand), start an
        empty one (or open the one another process started), with its directory and counter."""
        if _identity(self._db) == self._db_id:
            return
        with self._renewing:
            if _identity(self._db) == self._db_id:
                return  # another thread did
            log.warning("the cache index %s is gone: starting it anew", self._db)
            try:
                self._blobs.mkdir(parents=True, exist_ok=True)
                if _identity(self._removals_path) != self._removals_id:
                    # the old one stays open: a thread may be reading it (one descriptor)
                    self._removals = ChangeCounter(self._removals_path)
                    self._removals_id = _identity(self._removals_path)
                old = self._cache
                self._cache, self._db_id = self._open_cache()
                self._order_by_use()
            except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
                log.error("cannot start the cache index %s anew: %s", self._db, exc)
                return
            self._known = KnownPaths(self._removals)  # what the old index said is void
            self._turns.close()  # its lock file went too: the next turn opens the new one
            old.close()  # this thread's connection; the others' go with the object

    def flush_uses(self) -> int:
        """Blocking: write this process's uses not yet written (one transaction, none if there
        are none); how many. The server does it on its own every `flush_interval` seconds."""
        return self._uses.flush()

    # -- adding and removing ---------------------------------------------------------------------

    def has_room(self, size: int) -> bool:
        """Whether a blob of `size` bytes fits within `max_size` beside the index itself."""
        overhead = self._cache.volume() - self._cache.reset("size")
        return bool(size + overhead <= self.max_size)

    def add(self, key: str, path: Path, size: int, sha256: str) -> None:
        """Blocking: commit the verified file at `path` (linked, not copied) as `key`."""
        with self._turns.turn():
            self._cache.set(key, _Blob(path, size), tag=sha256, retry=True)

    def delete(self, key: str) -> bool:
        """Blocking: remove `key`; whether it was there."""
        self._known.forget(key)
        with self._turns.turn():
            return bool(self._cache.delete(key, retry=True))

    def free_body(self, entry: BlobEntry) -> None:
        """Remove a blob's file ahead of its row, so that a full disk has room to delete the
        row: the removal counter moves first, as for every removal of a blob file."""
        self._removals.bump()
        entry.path.unlink(missing_ok=True)

    def evict(self, protect: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        """Delete least recently used blobs (never `protect`) until the volume is within
        `limit` (max_size)."""
        limit = self.max_size if limit is None else limit
        removed: list[tuple[str, int]] = []
        if self._cache.volume() > limit:
            self.flush_uses()  # the order is what the index holds: ours in it first
        while (excess := self._cache.volume() - limit) > 0:
            victims = self._query(
                "SELECT key, size FROM Cache WHERE key != ? ORDER BY access_time LIMIT 64",
                (protect or "",),
            )
            if not victims:
                break
            for key, size in victims:
                with self._turns.turn():
                    deleted = self._cache.delete(key, retry=True)
                if deleted:
                    log.debug("evicted %r (%d bytes)", key, size)
                    metrics.CACHE_EVICTIONS.inc()
                    metrics.CACHE_EVICTED_BYTES.inc(size)
                    removed.append((key, size))
                    excess -= size
                if excess <= 0:
                    break
        return removed

    # -- for stats, prune, verify ----------------------------------------------------------------

    def volume(self) -> int:
        """Bytes the cache holds: blobs plus its index (what `max_size` bounds)."""
        return int(self._cache.volume())

    def entries(self) -> list[BlobEntry]:
        """Every committed blob, least recently used first (as far as uses have been written:
        this process's are written first)."""
        self.flush_uses()
        rows = self._query(
            "SELECT key, size, tag, filename, store_time, access_time FROM Cache"
            " WHERE filename IS NOT NULL ORDER BY access_time"
        )
        return [
            BlobEntry(key, size, tag, self._blobs / filename, stored, accessed)
            for key, size, tag, filename, stored, accessed in rows
            if isinstance(key, str) and isinstance(tag, str)
        ]

    def digests(self, keys: list[str]) -> dict[str, str]:
        """The sha256 of each of `keys` that is a committed blob (not a use)."""
        return {key: tag for key, tag in self._of(keys, "tag") if isinstance(tag, str)}

    def sizes(self, keys: list[str]) -> dict[str, int]:
        """The byte length of each of `keys` that is a committed blob (not a use)."""
        return {key: size for key, size in self._of(keys, "size") if isinstance(size, int)}

    def _of(self, keys: list[str], column: str) -> list[tuple[Any, ...]]:
        """(key, `column`) of each of `keys` that is a committed blob: one connection, one
        query per 500 keys."""
        rows: list[tuple[Any, ...]] = []
        if not keys:
            return rows
        with contextlib.closing(sqlite3.connect(self._db, timeout=60)) as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += db.execute(
                    f"SELECT key, {column} FROM Cache"
                    f" WHERE filename IS NOT NULL AND key IN ({marks})",
                    tuple(chunk),
                ).fetchall()
        return rows

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Write the recorded uses, and close."""
        self._uses.close()
        self._close()

    async def aclose(self) -> None:
        await self._uses.aclose()
        self._close()

    def _close(self) -> None:
        with _OPEN_LOCK:
            _OPEN.discard(self)
        self._cache.close()
        self._turns.close()
        if not self._closed:
            self._closed = True
            self._removals.close()

    def _order_by_use(self) -> None:
        """The index on access_time that eviction orders by (diskcache makes it only for its
        own LRU policy; a cache made by an earlier pyproxy has it already)."""
        with contextlib.closing(sqlite3.connect(self._db, timeout=60)) as db:
            db.execute("CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read of diskcache's Cache table, for what its API does not offer (order by use)."""
        with contextlib.closing(sqlite3.connect(self._db, timeout=60)) as db:
            return db.execute(sql, args).fetchall()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:  # gone (or unreadable: then renewing fails, and says why)
        return None
    return found.st_dev, found.st_ino


class KnownPaths:
    """Blobs this process has looked up, trusted until the removal counter moves."""

    def __init__(self, removals: ChangeCounter, limit: int = _KNOWN_MAX) -> None:
        self._removals = removals
        self._lock = threading.Lock()  # lookups run on the loop and in threads
        self._paths: BoundedLRU[str, LocalFile] = BoundedLRU(limit)
        self._seen = removals.value

    def token(self) -> int:
        """Read before asking the index, handed back to `remember`."""
        return self._removals.value

    def get(self, key: str) -> LocalFile | None:
        now = self._removals.value
        with self._lock:
            if now != self._seen:
                self._paths.clear()
                self._seen = now
                return None
            return self._paths.get(key)

    def remember(self, key: str, hit: LocalFile, token: int) -> None:
        """Keep what the index said, unless a blob was removed since `token` was read."""
        with self._lock:
            now = self._removals.value
            if now != token:
                return
            if now != self._seen:
                self._paths.clear()
                self._seen = now
            self._paths.put(key, hit)

    def forget(self, key: str) -> None:
        with self._lock:
            self._paths.pop(key)
