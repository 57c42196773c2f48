"""Upstream files on disk: stream while caching, verify, single flight, LRU size bound.

Layout under `directory` (nothing outside it is ever written or removed):

    blobs/, removals   the committed files and their index (stores.blobindex)
    partial/<h>.part   the download in progress for key hash <h>, flock'd LOCK_EX by its writer
    partial/<h>.*.new  a writer's fresh file, not yet published as <h>.part

Single flight. Within a process, every request for a key shares one `Flight` (stores/flight.py,
with the `Tail` its readers follow), woken by an asyncio.Event. Across processes the key's
`<h>.part` decides (stores/part_files.py): its writer holds it locked; whoever finds it locked
follows it (polls its size and its lock, a few ms apart) and reads the writer's verdict from its
mode once unlocked. A writer links the verified file into the index (the commit) before it
removes `<h>.part`, and removes `<h>.part` before it unlocks. So a newcomer either finds the
`.part`, or finds the key committed. A writer whose download failed notes why in the file, and
its followers fail with that, asking upstream nothing: one request however many processes ask.
Only a writer that left no verdict (killed mid-download) is taken over by a follower's retry.

Small kinds (`.metadata`, `.provenance`) are cut off past their kind's limit (as stores.proof
bounds them), and served only once whole and verified: a wrong one is a 503, never a 200
aborted part-way.

A hit never writes, and one this process has seen since the last removal costs no thread hop
and no system call (stores.blobindex).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from pyproxy.lru import BoundedLRU
from pyproxy.model import FileSource, LocalFile, StreamedFile, Unavailable
from pyproxy.stores import proof
from pyproxy.stores.blobindex import BlobEntry, BlobIndex
from pyproxy.stores.blobuses import FLUSH_INTERVAL
from pyproxy.stores.flight import (
    CHUNK_SIZE,
    FileGone,
    Flight,
    HashMismatch,
    NothingAsked,
    State,
    Tail,
    TooLarge,
    in_thread,
)
from pyproxy.stores.part_files import (
    PartFiles,
    ended,
    mark_cached,
    mark_done,
    mark_failed,
    noted_failure,
    same_file,
    written,
)

__all__ = [
    "CHUNK_SIZE",
    "Ask",
    "BlobCache",
    "HashMismatch",
    "OpenUpstream",
]

log = logging.getLogger("pyproxy.blobcache")

OpenUpstream = Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]
# what the one who would download asks first: the body to download, or None for none
Ask = Callable[[], Awaitable[OpenUpstream | None]]

_POLL_MIN = 0.002  # seconds between looks at another process's download
_POLL_MAX = 0.01  # a cold install waits on this chain of looks: at most 10 ms late
_ATTEMPTS = 3  # a fetch retries when another process's download died before serving it
_MISMATCHES = 1024  # keys remembered whose download failed its hash check
# the most a body of these kinds (stores.proof.kind_of) can be; the rest of upstream's is not read
_LIMITS = {
    "metadata": (proof.MAX_METADATA_BYTES, "a core metadata file"),
    "provenance": (proof.MAX_PROVENANCE_BYTES, "a provenance object"),
}


# the failures a writer notes for its followers by kind (any other is "unavailable")
_NOTED: dict[type[Unavailable], str] = {
    HashMismatch: "mismatch", TooLarge: "too large", FileGone: "gone",
}
_NOTED_KINDS = {word: kind for kind, word in _NOTED.items()}


def _limit_of(filename: str | None) -> tuple[int, str] | None:
    kind = proof.kind_of(filename) if filename is not None else None
    return _LIMITS.get(kind) if kind is not None else None


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
        self.index = BlobIndex(self.directory, max_size, flush_interval=flush_interval)
        self._parts = PartFiles(self.directory / "partial")
        self._flights: dict[str, Flight] = {}
        self._mismatched: BoundedLRU[str, bool] = BoundedLRU(_MISMATCHES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._parts.sweep()

    @property
    def max_size(self) -> int:
        return self.index.max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        self.index.max_size = value

    # -- the interface --------------------------------------------------------------------------

    def lookup(self, key: str) -> LocalFile | None:
        """A complete, verified blob, or None. Counts as a use for the LRU order (recorded in
        memory, see flush_uses). May read the index: call it in a thread."""
        return self.index.lookup(key)

    async def cached(self, key: str, *, filename: str | None = None) -> FileSource | None:
        """The committed blob or None, never downloading (offline mode). A use."""
        return await asyncio.to_thread(self.index.lookup, key)

    def flush_uses(self) -> int:
        """Blocking: write this process's uses not yet written (one transaction, none if there
        are none); how many. The server does it on its own every `flush_interval` seconds."""
        return self.index.flush_uses()

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
        it is never good. A key whose download failed its check in this process (`mismatched`)
        is streamed only once verified whole.
        """
        fetched = await self._fetch(key, sha256, size, filename, open_upstream, None)
        assert fetched is not None  # only an `ask` declines
        return fetched

    async def fetch_first(
        self,
        key: str,
        *,
        sha256: str | None,
        size: int | None,
        ask: Ask,
        filename: str | None = None,
    ) -> FileSource | None:
        """As fetch, where the one who would download asks first: `ask()` (awaited only then,
        inside the single flight, across processes too) gives the body to download, or None for
        no download after all. Then None is returned, nothing is cached, and whoever joined or
        followed meanwhile looks the key up again (and downloads it, if it wants it). A hit, or
        another's download of the key here or in another process, is returned as fetch returns
        it, and `ask` is not called: so a request whose answer may be the whole file (a range
        from a host that ignores ranges) is never a second download of it."""
        return await self._fetch(key, sha256, size, filename, None, ask)

    async def _fetch(
        self,
        key: str,
        sha256: str | None,
        size: int | None,
        filename: str | None,
        open_upstream: OpenUpstream | None,
        ask: Ask | None,
    ) -> FileSource | None:
        sha256 = sha256.lower() if sha256 else None
        for attempt in range(_ATTEMPTS):
            hit = await self.hit(key, sha256=sha256, size=size)
            if hit is not None:
                return hit
            joined = self._flights.get(key)
            flight = joined or self._start(key, sha256, size, filename, open_upstream, ask)
            if _limit_of(filename) is None:
                await flight.settled()
            else:  # a few KB: sent once checked, so a bad one fails here, a clean 503
                await flight.ended()
            if flight.state == "cached":
                if flight.declined and joined is None:
                    return None  # our own `ask` said no
                continue
            if flight.state == "failed":
                if flight.abandoned and attempt + 1 < _ATTEMPTS:
                    continue  # another process's download died before it could serve us
                raise flight.consumer_error()
            if size is None and flight.state == "ok":
                size = flight.written
            outcome = "coalesced" if joined is not None or flight.remote else "miss"
            # after a body that failed its check here, nothing goes out before verification
            chunks = Tail(flight, verified=self.mismatched(key))
            return StreamedFile(
                chunks=chunks, size=size, sha256=sha256, cache=outcome, download=flight
            )
        raise Unavailable(f"could not obtain {key!r}")

    async def hit(self, key: str, *, sha256: str | None, size: int | None) -> LocalFile | None:
        """The cached blob if it is the file announced (one that is not is deleted), a use for
        the LRU order; starts nothing."""
        sha256 = sha256.lower() if sha256 else None
        index = self.index
        index.attach(asyncio.get_running_loop())
        hit = index.known(key)
        if hit is None:
            if (flight := self._flights.get(key)) is not None and flight.verified:
                await flight.ended()  # its client has had the bytes; the commit is a moment away
            hit = await asyncio.to_thread(index.indexed, key)
        if hit is None:
            return None
        if (sha256 is None or hit.sha256 == sha256) and (size is None or hit.size == size):
            index.note_use(key)
            return hit
        log.warning("cached %r is not the file now announced; fetching it again", key)
        await asyncio.to_thread(index.delete, key)
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
        self.index.close()

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
        await self.index.aclose()

    # -- for stats, prune, verify (the index's) --------------------------------------------------

    def volume(self) -> int:
        """Bytes the cache holds: blobs plus its index (what `max_size` bounds)."""
        return self.index.volume()

    def entries(self) -> list[BlobEntry]:
        """Every committed blob, least recently used first."""
        return self.index.entries()

    def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` are committed blobs (not a use for the LRU)."""
        return set(self.index.digests(keys))

    def digests(self, keys: list[str]) -> dict[str, str]:
        """The sha256 of each of `keys` that is a committed blob (not a use)."""
        return self.index.digests(keys)

    def sizes(self, keys: list[str]) -> dict[str, int]:
        """The byte length of each of `keys` that is a committed blob: verified (not a use)."""
        return self.index.sizes(keys)

    def delete(self, key: str) -> bool:
        return self.index.delete(key)

    def free_body(self, entry: BlobEntry) -> None:
        self.index.free_body(entry)

    def shrink_to(self, limit: int) -> list[tuple[str, int]]:
        """Evict least recently used blobs until the cache holds at most `limit` bytes."""
        return self.index.evict(limit=limit)

    # -- single flight ---------------------------------------------------------------------------

    def _start(
        self,
        key: str,
        sha256: str | None,
        size: int | None,
        filename: str | None,
        open_upstream: OpenUpstream | None,
        ask: Ask | None,
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
            job = self._download(flight, sha256, size, filename, open_upstream, ask)
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
        filename: str | None,
        open_upstream: OpenUpstream | None,
        ask: Ask | None,
    ) -> None:
        key = flight.key
        try:
            # another process may have committed the key between our lookup and our claim
            if await in_thread(self.index.indexed, key) is not None:
                mark_cached(flight.fd)
                self._end(flight, "cached")
                return
            if ask is not None:
                open_upstream = await ask()
                if open_upstream is None:  # no download after all: followers look again
                    flight.declined = True
                    mark_cached(flight.fd)
                    self._end(flight, "cached")
                    return
            assert open_upstream is not None
            limit = _limit_of(filename)
            digest = hashlib.sha256()
            async with open_upstream() as body:
                async for chunk in body:
                    if not chunk:
                        continue
                    if limit is not None and flight.written + len(chunk) > limit[0]:
                        raise TooLarge(
                            f"{filename}: upstream sent more than {limit[0]} bytes, more than"
                            f" {limit[1]} can be: download aborted"
                        )
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
            if not isinstance(exc, NothingAsked):
                self._note_failure(flight)
        finally:
            self._parts.release(flight.fd, flight.part)
            flight.let_go()

    @staticmethod
    def _note_failure(flight: Flight) -> None:
        """The failure, for the other processes following the download (before it unlocks):
        they fail with the same words rather than each ask upstream again."""
        kind, problem = flight.failure or (Unavailable, "")
        try:
            mark_failed(flight.fd, _NOTED.get(kind, "unavailable"), problem)
        except OSError as exc:  # then they take it for a writer that died, and try themselves
            log.debug("cannot note the failure of %r: %s", flight.key, exc)

    def _commit(self, flight: Flight, sha256: str) -> None:
        """In a thread. Afterwards the flight's bytes are final, whatever became of the index."""
        os.fsync(flight.fd)
        mark_done(flight.fd)
        size = flight.written
        index = self.index
        try:
            if not index.has_room(size):
                log.warning(
                    "%r has %d bytes, more than the cache holds (%d): served, not cached",
                    flight.key,
                    size,
                    index.max_size,
                )
                return
            if not same_file(flight.fd, flight.part):
                log.error("%s was removed during the download of %r", flight.part, flight.key)
                return
            index.add(flight.key, flight.part, size, sha256)
            os.unlink(flight.part)
            log.debug("cached %r (%d bytes)", flight.key, size)
            index.evict(protect=flight.key)
        except Exception:
            log.exception("could not add %r to the cache index", flight.key)

    async def _follow_remote(self, flight: Flight) -> None:
        """Watch another process's download: its size as it grows, its lock until it ends."""
        delay = _POLL_MIN
        try:
            while True:
                grown = written(flight.fd)
                if grown is not None and grown > flight.written:
                    flight.written = grown
                    flight.notify()
                    delay = _POLL_MIN
                if (end := ended(flight.fd)) is not None:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
            outcome, flight.written = end
            if outcome in ("ok", "cached"):
                self._end(flight, outcome)
            elif outcome == "error" and (noted := noted_failure(flight.fd)) is not None:
                kind, problem = noted
                # its writer logged it: one line, however many processes followed
                log.debug("the download of %r in another process failed: %s", flight.key, problem)
                error = _NOTED_KINDS.get(kind, Unavailable)(problem)
                self._end(flight, "failed", error)
            else:
                flight.abandoned = True
                log.warning(
                    "the download of %r in another process ended without a verdict", flight.key
                )
                self._end(flight, "failed", Unavailable("the download in another worker failed"))
        except asyncio.CancelledError:
            self._end(flight, "failed", Unavailable("the cache was closed"))
            raise
        except Exception as exc:
            log.exception("lost track of the download of %r in another process", flight.key)
            self._end(flight, "failed", exc)
        finally:
            flight.let_go()
