"""What one process knows of the blob cache's index without asking it, so that a hit never writes.

`KnownPaths` holds the blobs this process looked up (key -> LocalFile, the most recent few
thousand) and trusts them while the cache's removal counter (a stores.changes.ChangeCounter,
read from memory) still has the value read before the lookup. Every process bumps that counter
before it removes a blob file (eviction, prune, verify, a replaced entry), after the index row
is gone. A path handed out may still be removed before it is opened; since the counter moves
before the file goes, the caller that then fails to open it finds it moved when it asks again.

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

from pyproxy.lru import BoundedLRU
from pyproxy.model import LocalFile
from pyproxy.stores.changes import ChangeCounter

__all__ = ["FLUSH_INTERVAL", "KnownPaths", "Uses"]

log = logging.getLogger("pyproxy.blobcache")

FLUSH_INTERVAL = 30.0  # seconds a use may wait in memory before it is written
_KNOWN_MAX = 10_000  # paths a process remembers (a few MB)


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
