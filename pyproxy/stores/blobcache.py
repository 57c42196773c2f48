"""Upstream files on disk: stream while caching, verify, single flight, LRU size bound.

Layout under `directory` (nothing outside it is ever written or removed):

    blobs/             a diskcache.Cache: cache.db (the index) and xx/yy/<random>.val (the blobs)
    partial/<h>.part   the download in progress for key hash <h>, flock'd LOCK_EX by its writer
    partial/<h>.*.new  a writer's fresh file, not yet published as <h>.part
    removals           a counter every process maps, bumped before a blob file is removed

Single flight. Within a process, every request for a key shares one `Flight` (stores/flight.py,
with the `Tail` its readers follow), woken by an asyncio.Event. Across processes the key's
`<h>.part` decides (stores/part_files.py): its writer holds it locked; whoever finds it locked
follows it (polls its size and its lock, a few ms apart) and reads the writer's verdict from its
mode once unlocked. A writer links the verified file into diskcache's layout (the diskcache
commit) before it removes `<h>.part`, and removes `<h>.part` before it unlocks. So a newcomer
either finds the `.part`, or finds the key committed.

A hit never writes. The index is opened without an eviction policy (diskcache's LRU policy
updates the row in a write transaction on every get), so a lookup is one read; a process keeps
the paths it looked up and asks the index again only after some process removed a blob; and it
records uses in memory, written in batches (see stores.blobuses). A hit this process has seen
since the last removal costs no thread hop and no system call here.

Eviction is diskcache's own path (Cache.delete -> Disk.remove); we choose the victims ourselves
in least-recently-used order of the recorded uses, because diskcache's built-in cull drops ten
rows at a time, which can include the file just stored and does not guarantee the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, UNKNOWN

from pyproxy import metrics
from pyproxy.lru import BoundedLRU
from pyproxy.model import FileSource, LocalFile, StreamedFile, Unavailable
from pyproxy.stores import proof
from pyproxy.stores.blobindex import KnownPaths
from pyproxy.stores.blobuses import FLUSH_INTERVAL, Uses
from pyproxy.stores.changes import ChangeCounter
from pyproxy.stores.flight import CHUNK_SIZE, Flight, HashMismatch, State, Tail, in_thread
from pyproxy.stores.part_files import PartFiles, ended, mark_cached, mark_done, same_file

__all__ = [
    "CHUNK_SIZE",
    "BlobCache",
    "BlobEntry",
    "HashMismatch",
    "OpenUpstream",
]

log = logging.getLogger("pyproxy.blobcache")

OpenUpstream = Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]

_POLL_MIN = 0.002  # seconds between looks at another process's download
_POLL_MAX = 0.01  # a cold install waits on this chain of looks: at most 10 ms late
_ATTEMPTS = 3  # a fetch retries when another process's download failed before serving it
_MISMATCHES = 1024  # keys remembered whose download failed its hash check



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


def _prove(flight: Flight, filename: str | None) -> None:
    """In a thread: a body with no sha256 to match must be a well-formed file of its kind."""
    if filename is None:
        raise HashMismatch(f"{flight.key!r}: no sha256 and no filename to check the body against")
    # a second fd on the same file: the checks seek, and writers and readers use pwrite/pread
    with open(os.dup(flight.fd), "rb") as body:
        try:
            proof.check_file(filename, body, flight.written)
        except proof.Unproven as exc:
            raise HashMismatch(
                f"{filename}: upstream lists no sha256, and the body it sent is not a"
                f" well-formed file of its kind: {exc}"
            ) from None


def _write_all(fd: int, data: bytes, offset: int, digest: Any) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
    digest.update(data)


class BlobCache:
    def __init__(
        self, directory: Path, max_size: int, *, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self.directory = Path(directory)
        self.max_size = max_size
        self._blobs = self.directory / "blobs"
        self._parts = PartFiles(self.directory / "partial")
        self._removals = ChangeCounter(self.directory / "removals")
        self._closed = False
        self._cache = diskcache.Cache(
            str(self._blobs),
            disk=_BlobDisk,
            size_limit=max_size,
            eviction_policy="none",  # a get writes nothing; recency is ours, see _uses
            statistics=0,  # hit counters would write on every get too
            cull_limit=0,  # eviction is ours, see _evict
        )
        disk = self._cache.disk
        assert isinstance(disk, _BlobDisk)
        disk.removals = self._removals
        self._db = self._blobs / diskcache.core.DBNAME  # read directly by _query
        self._known = KnownPaths(self._removals)
        self._uses = Uses(self._db, flush_interval)
        with contextlib.suppress(RuntimeError):  # made inside a server's loop: its timer writes
            self._uses.attach(asyncio.get_running_loop())
        self._flights: dict[str, Flight] = {}
        self._mismatched: BoundedLRU[str, bool] = BoundedLRU(_MISMATCHES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._order_by_use()
        self._parts.sweep()

    # -- the interface --------------------------------------------------------------------------

    def lookup(self, key: str) -> LocalFile | None:
        """A complete, verified blob, or None. Counts as a use for the LRU order (recorded in
        memory, see flush_uses). May read the index: call it in a thread."""
        hit = self._known.get(key) or self._look_up(key)
        if hit is not None:
            self._uses.note(key)
        return hit

    async def cached(self, key: str, *, filename: str | None = None) -> FileSource | None:
        """The committed blob or None, never downloading (offline mode). A use."""
        return await asyncio.to_thread(self.lookup, key)

    def flush_uses(self) -> int:
        """Blocking: write this process's uses not yet written (one transaction, none if there
        are none); how many. The server does it on its own every `flush_interval` seconds."""
        return self._uses.flush()

    async def fetch(
        self,
        key: str,
        *,
        sha256: str | None,
        size: int | None,
        open_upstream: OpenUpstream,
        filename: str | None = None,
    ) -> FileSource:
        """The cached blob, or a stream of the body as it arrives from the one upstream download.

        Raises Unavailable (HashMismatch if it is the body that is wrong) when the download fails
        before anything could be served. Once a StreamedFile is returned, a failure makes its
        iterator raise the same way, and nothing is cached. Without a `sha256`, the body is good
        only if it is a well-formed file of `filename`'s kind (see stores.proof); with neither,
        it is never good.
        """
        sha256 = sha256.lower() if sha256 else None
        for attempt in range(_ATTEMPTS):
            hit = await self.hit(key, sha256=sha256, size=size)
            if hit is not None:
                return hit
            joined = self._flights.get(key)
            flight = joined or self._start(key, sha256, size, open_upstream, filename)
            await flight.settled()
            if flight.state == "cached":
                continue
            if flight.state == "failed":
                if flight.remote and attempt + 1 < _ATTEMPTS:
                    continue  # another process's download died before it could serve us
                raise flight.consumer_error()
            if size is None and flight.state == "ok":
                size = flight.written
            outcome = "coalesced" if joined is not None or flight.remote else "miss"
            return StreamedFile(
                chunks=Tail(flight), size=size, sha256=sha256, cache=outcome, download=flight
            )
        raise Unavailable(f"could not obtain {key!r}")

    async def hit(self, key: str, *, sha256: str | None, size: int | None) -> LocalFile | None:
        """The cached blob if it is the file announced (one that is not is deleted), a use for
        the LRU order; starts nothing."""
        sha256 = sha256.lower() if sha256 else None
        self._uses.attach(asyncio.get_running_loop())
        # a blob this process has seen since the last removal: no thread, no system call
        hit = self._known.get(key)
        if hit is None:
            if (flight := self._flights.get(key)) is not None and flight.verified:
                await flight.ended()  # its client has had the bytes; the commit is a moment away
            hit = await asyncio.to_thread(self._look_up, key)
        if hit is None:
            return None
        if (sha256 is None or hit.sha256 == sha256) and (size is None or hit.size == size):
            self._uses.note(key)
            return hit
        log.warning("cached %r is not the file now announced; fetching it again", key)
        self._known.forget(key)
        await asyncio.to_thread(self._cache.delete, key, True)
        return None

    def mismatched(self, key: str) -> bool:
        """Whether a download of `key` by this process failed its hash check (lately)."""
        return self._mismatched.get(key) is not None

    def close(self) -> None:
        """Stop downloads in progress (they clean up when the loop next runs them), write the
        recorded uses, and close."""
        for task in list(self._tasks):
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                task.cancel()
        self._uses.close()
        self._cache.close()
        self._close_removals()

    async def idle(self) -> None:
        """Until this process's downloads have ended, their commits too (for tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop downloads in progress, wait for them to clean up, write the recorded uses, and
        close."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._uses.aclose()
        self._cache.close()
        self._close_removals()

    def _close_removals(self) -> None:
        if not self._closed:
            self._closed = True
            self._removals.close()

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

    def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` are committed blobs (one query per 500 keys; not a use for the LRU)."""
        return set(self.digests(keys))

    def digests(self, keys: list[str]) -> dict[str, str]:
        """The sha256 of each of `keys` that is a committed blob (as `present`)."""
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT key, tag FROM Cache WHERE filename IS NOT NULL AND key IN ({marks})",
                tuple(chunk),
            )
            found.update((key, tag) for key, tag in rows if isinstance(tag, str))
        return found

    def delete(self, key: str) -> bool:
        return bool(self._cache.delete(key, retry=True))

    def free_body(self, entry: BlobEntry) -> None:
        """Remove a blob's file ahead of its row, so that a full disk has room to delete the
        row: the removal counter moves first, as for every removal of a blob file."""
        self._removals.bump()
        entry.path.unlink(missing_ok=True)

    def shrink_to(self, limit: int) -> list[tuple[str, int]]:
        """Evict least recently used blobs until the cache holds at most `limit` bytes."""
        return self._evict(limit=limit)

    # -- the index -------------------------------------------------------------------------------

    def _look_up(self, key: str) -> LocalFile | None:
        """Blocking: what the index says (one read, no write), remembered in memory unless a
        blob was removed meanwhile. Not a use."""
        token = self._known.token()
        try:
            handle, sha256 = self._cache.get(key, read=True, tag=True, retry=True)
        except (diskcache.Timeout, sqlite3.Error) as exc:
            log.warning("cache index unavailable for %r: %s", key, exc)
            return None
        if handle is None:  # not there, or removed between the index's answer and the open
            return None
        if not isinstance(handle, io.BufferedReader) or not isinstance(sha256, str):
            return None  # not one of ours
        with handle:
            size = os.fstat(handle.fileno()).st_size
        hit = LocalFile(path=Path(handle.name), size=size, sha256=sha256, cache="hit")
        self._known.remember(key, hit, token)
        return hit

    def _order_by_use(self) -> None:
        """The index on access_time that eviction orders by (diskcache makes it only for its
        own LRU policy; a cache made by an earlier pyproxy has it already)."""
        with contextlib.closing(sqlite3.connect(self._db, timeout=60)) as db:
            db.execute("CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)")

    # -- single flight ---------------------------------------------------------------------------

    def _start(
        self,
        key: str,
        sha256: str | None,
        size: int | None,
        open_upstream: OpenUpstream,
        filename: str | None,
    ) -> Flight:
        part = self._parts.path(key)
        try:
            role, fd = self._parts.claim(part)
        except OSError as exc:
            log.error("cannot create a download file for %r: %s", key, exc)
            raise Unavailable(f"cache directory unusable: {exc}") from exc
        flight = Flight(key, part, fd, remote=role == "follow")
        self._flights[key] = flight
        if flight.remote:
            job = self._follow_remote(flight)
        else:
            job = self._download(flight, sha256, size, open_upstream, filename)
        task = asyncio.create_task(job, name=f"blobcache {role} {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    def _end(self, flight: Flight, state: State, error: BaseException | None = None) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        flight.finish(state, error)

    async def _download(
        self,
        flight: Flight,
        sha256: str | None,
        size: int | None,
        open_upstream: OpenUpstream,
        filename: str | None,
    ) -> None:
        key = flight.key
        try:
            # another process may have committed the key between our lookup and our claim
            if await in_thread(self._look_up, key) is not None:
                mark_cached(flight.fd)
                self._end(flight, "cached")
                return
            digest = hashlib.sha256()
            async with open_upstream() as body:
                async for chunk in body:
                    if not chunk:
                        continue
                    if size is not None and flight.written + len(chunk) > size:
                        raise HashMismatch(f"{key!r}: upstream sent more than {size} bytes")
                    await in_thread(_write_all, flight.fd, chunk, flight.written, digest)
                    flight.written += len(chunk)
                    flight.notify()
            if size is not None and flight.written != size:
                raise HashMismatch(
                    f"{key!r}: upstream sent {flight.written} bytes, expected {size}"
                )
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256:
                raise HashMismatch(f"{key!r}: upstream body has sha256 {actual}, expected {sha256}")
            if sha256 is None:
                await in_thread(_prove, flight, filename)
            flight.mark_verified()
            await in_thread(self._commit, flight, actual)
            self._end(flight, "ok")
        except asyncio.CancelledError:
            log.info("download of %r cancelled after %d bytes", key, flight.written)
            self._end(flight, "failed", Unavailable("the cache was closed"))
            raise
        except Exception as exc:
            log.warning(
                "download of %r failed after %d bytes, nothing cached: %s", key, flight.written, exc
            )
            if isinstance(exc, HashMismatch):
                self._mismatched.put(key, True)
            self._end(flight, "failed", exc)
        finally:
            self._parts.release(flight.fd, flight.part)
            flight.let_go()

    def _commit(self, flight: Flight, sha256: str) -> None:
        """In a thread. Afterwards the flight's bytes are final, whatever became of the index."""
        os.fsync(flight.fd)
        mark_done(flight.fd)
        size = flight.written
        try:
            overhead = self._cache.volume() - self._cache.reset("size")
            if size + overhead > self.max_size:
                log.warning(
                    "%r has %d bytes, more than the cache holds (%d): served, not cached",
                    flight.key,
                    size,
                    self.max_size,
                )
                return
            if not same_file(flight.fd, flight.part):
                log.error("%s was removed during the download of %r", flight.part, flight.key)
                return
            self._cache.set(flight.key, _Blob(flight.part, size), tag=sha256, retry=True)
            os.unlink(flight.part)
            log.debug("cached %r (%d bytes)", flight.key, size)
            self._evict(protect=flight.key)
        except Exception:
            log.exception("could not add %r to the cache index", flight.key)

    async def _follow_remote(self, flight: Flight) -> None:
        """Watch another process's download: its size as it grows, its lock until it ends."""
        delay = _POLL_MIN
        try:
            while True:
                grown = os.fstat(flight.fd).st_size
                if grown > flight.written:
                    flight.written = grown
                    flight.notify()
                    delay = _POLL_MIN
                if (end := ended(flight.fd)) is not None:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
            outcome, flight.written = end
            if outcome != "failed":
                self._end(flight, outcome)
            else:
                log.warning("the download of %r in another process failed", flight.key)
                self._end(flight, "failed", Unavailable("the download in another worker failed"))
        except asyncio.CancelledError:
            self._end(flight, "failed", Unavailable("the cache was closed"))
            raise
        except Exception as exc:
            log.exception("lost track of the download of %r in another process", flight.key)
            self._end(flight, "failed", exc)
        finally:
            flight.let_go()

    # -- housekeeping ----------------------------------------------------------------------------

    def _evict(self, protect: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        """Delete least recently used blobs until the volume is within `limit` (max_size)."""
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
                if self._cache.delete(key, retry=True):
                    log.debug("evicted %r (%d bytes)", key, size)
                    metrics.CACHE_EVICTIONS.inc()
                    metrics.CACHE_EVICTED_BYTES.inc(size)
                    removed.append((key, size))
                    excess -= size
                if excess <= 0:
                    break
        return removed

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read of diskcache's Cache table, for what its API does not offer (order by use)."""
        with contextlib.closing(sqlite3.connect(self._db, timeout=60)) as db:
            return db.execute(sql, args).fetchall()
