"""One download of one key as a process sees it (its own, or another process's), and the
readers that follow its file as far as it has been written: the blob cache's single flight."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pyproxy.model import Unavailable
from pyproxy.stores.space import is_disk_full

__all__ = ["CHUNK_SIZE", "Flight", "HashMismatch", "State", "Tail", "in_thread"]

CHUNK_SIZE = 256 * 1024  # what a follower reads from disk at a time

_T = TypeVar("_T")


class HashMismatch(Unavailable):
    """Upstream sent a body whose size or sha256 is not the one its index announced (or, with no
    sha256 announced, a body that is not a well-formed file of its kind)."""


class TooLarge(HashMismatch):
    """Upstream sent more than a file of its kind can be (a `.metadata`, a provenance object)."""


class FileGone(Unavailable):
    """Upstream answered that it has no such file (404, 410): not a failure of the moment, so
    what a page offers may be had another way (a `.metadata` from its wheel)."""


class NothingAsked(Unavailable):
    """An opener that refused to download, asking upstream nothing: no verdict on the file, so
    the processes following the download try themselves."""


State = Literal["running", "ok", "failed", "cached"]


class Flight:
    """One download of one key, as this process sees it: its own, or another process's."""

    def __init__(self, key: str, part: Path, fd: int, *, remote: bool) -> None:
        self.key = key
        self.part = part
        # the holder's locked file, or a follower's handle on another process's; readers pread()
        # it, so after a success it stays open until the last of them lets go of the flight
        self.fd = fd
        self.remote = remote
        self.written = 0  # bytes on disk that a reader may read
        self.reading = 0  # pread()s in progress in threads (the fd must outlive them)
        self.state: State = "running"
        # all of it written and checked, the cache's commit (fsync, index) still to come: a
        # network client may have its last byte, the cache's own readers wait for the end
        self.verified = False
        # its holder's `ask` chose not to download (stores.blobcache.BlobCache.fetch_first):
        # it ended "cached", so that whoever joined it looks the key up again
        self.declined = False
        # another process's download that ended with no verdict (its process died, or was
        # stopped): unlike a failure it noted, another attempt may take the download over
        self.abandoned = False
        # the failure's class and words only: the exception's traceback holds the frames that
        # hold this flight, a cycle that would keep the fd (and an unlinked file) until a gc
        self.failure: tuple[type[Unavailable], str] | None = None
        self._changed = asyncio.Event()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()

    async def settled(self) -> None:
        """Until there is a first byte to read, or the flight has ended."""
        while self.state == "running" and self.written == 0:
            await self.changed()

    async def ended(self) -> None:
        while self.state == "running":
            await self.changed()

    def mark_verified(self) -> None:
        self.verified = True
        self.notify()

    def finish(self, state: State, error: BaseException | None = None) -> None:
        self.state = state
        if error is not None:
            self.failure = _failure_of(self.key, error)
        self.notify()

    def let_go(self) -> None:
        """Close the fd of a flight nobody will read again (failed, or cached meanwhile)."""
        if self.state in ("failed", "cached") and self.reading == 0:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    def span(self, start: int, stop: int, *, verified: bool) -> Tail:
        """A model.Download: bytes [start, stop) as they are written (see Tail)."""
        return Tail(self, start, stop, verified=verified)

    def consumer_error(self) -> Unavailable:
        kind, message = self.failure or (Unavailable, f"upstream download of {self.key!r} failed")
        return kind(message)


def _failure_of(key: str, error: BaseException) -> tuple[type[Unavailable], str]:
    if isinstance(error, (HashMismatch, FileGone)):
        return type(error), str(error)  # which one, for the `.metadata` made instead
    if isinstance(error, Unavailable):
        return Unavailable, str(error)
    if is_disk_full(error):
        return Unavailable, "the index's disk is full: it cannot fetch files it has not cached"
    return Unavailable, f"upstream download of {key!r} failed: {error!r}"


class Tail:
    """Follows a flight's file from `start` (to `stop`, else to its end), as far as it has been
    written (with `verified`: once all of it is written and verified)."""

    def __init__(
        self, flight: Flight, start: int = 0, stop: int | None = None, *, verified: bool = False
    ) -> None:
        self._flight: Flight | None = flight
        self._offset = start
        self._stop = stop
        self._verified = verified

    def __aiter__(self) -> Tail:
        return self

    @property
    def position(self) -> int:
        """Where the next byte comes from: the bytes sent so far, past `start`."""
        return self._offset

    async def __anext__(self) -> bytes:
        n = await self._ready()
        if n == 0:
            raise StopAsyncIteration
        data = await self._with_fd(
            lambda fd: in_thread(os.pread, fd, min(CHUNK_SIZE, n), self._offset)
        )
        self._advance(len(data))
        return data

    async def send_to(self, send: Callable[[int, int, int], Awaitable[int]]) -> None:
        """The rest, zero-copy: `send(fd, offset, count)` sends bytes of the file from its
        descriptor (the kernel's sendfile) and says how many, as they become readable. For a
        network client: it ends once the bytes are verified, not after the cache's commit."""
        while n := await self._ready(until_verified=True):
            self._advance(await self._with_fd(lambda fd: send(fd, self._offset, n)))

    async def _ready(self, *, until_verified: bool = False) -> int:
        """Until there are bytes to read past the offset: how many (0: the end)."""
        while (flight := self._flight) is not None:
            if flight.state in ("failed", "cached"):  # its fd is closed or about to be
                self._flight = None
                raise flight.consumer_error()
            # the last byte waits for the hash check, so a client never receives a complete
            # body that turns out to be wrong (it sees an aborted download instead)
            complete = flight.state == "ok" or flight.verified
            if complete:
                readable = flight.written
            elif self._verified:
                readable = 0
            else:
                readable = flight.written - 1
            if self._stop is not None:
                if self._offset >= self._stop:
                    break
                if complete and self._stop > flight.written:
                    self._flight = None
                    raise Unavailable(f"the file for {flight.key!r} ends before the range")
                readable = min(readable, self._stop)
            available = readable - self._offset
            if available > 0:
                return available
            if flight.state == "ok" or (until_verified and flight.verified):
                break
            await flight.changed()
        self._flight = None
        return 0

    async def _with_fd(self, use: Callable[[int], Awaitable[_T]]) -> _T:
        """`use(fd)` with the flight's fd kept open meanwhile (it may end during the use)."""
        flight = self._flight
        assert flight is not None  # _ready said there are bytes to read
        flight.reading += 1
        try:
            return await use(flight.fd)
        finally:
            flight.reading -= 1
            flight.let_go()

    def _advance(self, n: int) -> None:
        if not n:
            assert self._flight is not None
            key, self._flight = self._flight.key, None
            raise Unavailable(f"the file for {key!r} is shorter than written")
        self._offset += n

    async def aclose(self) -> None:
        self._flight = None


async def in_thread(func: Callable[..., _T], *args: Any) -> _T:
    """Run blocking work in a thread; if cancelled, still wait for it (it may use our fds)."""
    future = asyncio.get_running_loop().run_in_executor(None, func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise
