"""Uses of the blob cache's entries, recorded in memory and written in batches, so that a hit
never writes.

`Uses` records each use in memory (key -> unix time) and writes them to the index in one
transaction (`UPDATE Cache SET access_time`, never backwards), `interval` seconds after the first
use not yet written, and whenever eviction or a listing needs them. Eviction and `cache prune`
order by what has been written: recency on disk lags by at most `interval` (and a worker killed
with SIGKILL loses its last batch), which is all a least-recently-used bound needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["FLUSH_INTERVAL", "Uses"]

log = logging.getLogger("pyproxy.blobcache")

FLUSH_INTERVAL = 30.0  # seconds a use may wait in memory before it is written


class Uses:
    """Uses of blobs, in memory until written in one transaction."""

    def __init__(self, db: Path, interval: float = FLUSH_INTERVAL) -> None:
        self._db = db
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._armed = False  # a timer will write what is pending
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose timer writes uses recorded in this process (from any thread)."""
        self._loop = loop

    def note(self, key: str) -> None:
        with self._lock:
            self._pending[key] = time.time()
            if self._armed:
                return
            self._armed = True
        self._arm()

    def _arm(self) -> None:
        loop = self._loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no loop")
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._timer = loop.call_later(self.interval, self._write_soon)
            else:  # a lookup in a thread
                loop.call_soon_threadsafe(self._arm)
        except RuntimeError:  # no loop (a command, or shutting down): written by flush()
            with self._lock:
                self._armed = False

    def _write_soon(self) -> None:
        self._timer = None
        with self._lock:
            self._armed = False
        with contextlib.suppress(RuntimeError):  # the executor is shut down
            self._writing = asyncio.get_running_loop().run_in_executor(None, self.flush)

    def flush(self) -> int:
        """Blocking: write the pending uses (no transaction when there are none); how many."""
        with self._lock:
            uses, self._pending = self._pending, {}
        if not uses:
            return 0
        try:
            _write(self._db, uses)
        except sqlite3.Error as exc:
            log.warning("could not record the use of %d cached files: %s", len(uses), exc)
            with self._lock:  # keep them for the next try, newer uses winning
                for key, when in uses.items():
                    self._pending[key] = max(when, self._pending.get(key, 0.0))
            return 0
        return len(uses)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        await asyncio.to_thread(self.flush)


def _write(db: Path, uses: dict[str, float]) -> None:
    rows = [(when, key, when) for key, when in uses.items()]
    with contextlib.closing(sqlite3.connect(db, timeout=60, isolation_level=None)) as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            # diskcache stores a str key as itself with raw = 1; another process may have
            # written a later use of the same key already
            con.executemany(
                "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1 AND access_time < ?",
                rows,
            )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
