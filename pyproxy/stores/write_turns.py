"""One writer at a time per SQLite database across the processes of one machine, queued on
flock(2) instead of in SQLite's busy handler.

SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries for the write lock, so
a writer that meets another sleeps for milliseconds where the other needed a fraction of one,
and longer at every miss: during one cold `uv pip install` of the benchmark set (two workers
saving pages and committing files at once) threads slept 40 times, 228 ms in all. A writer
that takes its turn here waits in the kernel and is woken as soon as the one before is done.
The threads of one process queue on a lock first: flock excludes open file descriptions, not
threads sharing one.

SQLite still guards correctness, the turn only orders those who take it: a writer that does not
(another program, an older pyproxy) meets the busy handler as before, and when the turn file
cannot be opened (a read-only directory, a full disk) the writer goes on without one. Nobody
waits for a turn while holding SQLite's write lock, so the two cannot deadlock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WriteTurns"]

log = logging.getLogger("pyproxy.stores")

SUFFIX = "-writers"  # beside the database, as SQLite's own -wal and -shm


class WriteTurns:
    """Turns at writing the database at `database`; blocking, so taken in a worker thread."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}{SUFFIX}")
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0  # whose descriptor: a forked child must open its own

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._threads:
            fd = self._locked()
            try:
                yield
            finally:
                if fd is not None:
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def _locked(self) -> int | None:
        """The descriptor, flock'd; None: the write goes on without a turn."""
        pid = os.getpid()
        try:
            if self._fd is None or self._pid != pid:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._pid = pid
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.debug("writing %s without a turn: %s", self.path, exc)
            return None
        return self._fd
