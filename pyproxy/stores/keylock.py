"""One process at a time per key, across the processes of one machine: a flock'd file per key.

For the page cache: of the worker processes that find a page stale at once, one asks upstream
while the others wait on its lock and then read what it saved, so one request goes upstream
however many workers there are. flock(2) is released when its holder dies, so a crashed worker
never leaves a page locked.

Layout under `directory` (created on first use): `<blake2b of the key>.lock`, one per key that
was ever refreshed, never removed (unlinking a lock file while another process has it open
would let a third lock a new file of the same name beside it). A holder whose attempt failed
writes "<unix time>\t<problem>" into the file before it unlocks, so processes that were waiting
meanwhile take that failure instead of each trying again and waiting out the same outage.

Waiting is polling with LOCK_NB (a few ms, backing off to 10 ms), never a blocking flock in a
thread, so waiters take no thread from the pool that serves files. When the lock cannot be had
at all (the directory is unwritable, the disk is full) or not within the patience given, the
caller goes on without it: at worst a second request goes upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

__all__ = ["KeyLocks", "Turn"]

log = logging.getLogger("pyproxy.keylock")

_POLL_MIN = 0.005  # seconds between looks at a held lock
_POLL_MAX = 0.01  # a cold install waits on this chain of looks: at most 10 ms late
_NOTE_BYTES = 1024  # a failure note is one line, cut to this


class Turn:
    """The caller's turn at a key: `failure` is what a holder it waited for failed with (None:
    it succeeded, or nobody held the lock); `fail()` leaves a note for those waiting now."""

    def __init__(self, fd: int | None, failure: str | None) -> None:
        self._fd = fd  # None: going on without the lock
        self.failure = failure

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def fail(self, problem: str) -> None:
        if self._fd is None:
            return
        note = f"{time.time():.6f}\t{' '.join(problem.split())}".encode()[:_NOTE_BYTES]
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, note, 0)
        except OSError as exc:  # a full disk: the others will try upstream themselves
            log.debug("cannot leave a failure note: %s", exc)


class KeyLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._warned = False  # a full disk would otherwise warn at every refresh

    def path(self, key: str) -> Path:
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return self.directory / f"{digest}.lock"

    @asynccontextmanager
    async def turn(self, key: str, *, patience: float) -> AsyncIterator[Turn]:
        """Hold `key`'s lock for the block, after waiting up to `patience` seconds for it."""
        asked = time.time()
        fd = self._open(key)
        if fd is None:
            yield Turn(None, None)
            return
        try:
            locked = await self._acquire(fd, key, patience)
            if not locked:
                os.close(fd)
                fd = None
            yield Turn(fd, _failure_since(fd, asked) if fd is not None else None)
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _open(self, key: str) -> int | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(self.path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "no lock for %r, going on without one: %s", key, exc)
            return None

    async def _acquire(self, fd: int, key: str, patience: float) -> bool:
        give_up = time.monotonic() + patience
        delay = _POLL_MIN
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            if time.monotonic() >= give_up:
                log.warning("%r stayed locked for %g s, going on without the lock", key, patience)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)


def _failure_since(fd: int, since: float) -> str | None:
    """The problem noted in the lock file, if it was noted at or after `since`."""
    try:
        note = os.pread(fd, _NOTE_BYTES, 0).decode(errors="replace")
    except OSError:
        return None
    stamp, _, problem = note.partition("\t")
    try:
        noted = float(stamp)
    except ValueError:
        return None
    return problem if problem and noted >= since else None
