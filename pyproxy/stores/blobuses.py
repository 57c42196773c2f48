"""Uses of cached files, recorded in memory and written in batches, so that a hit never writes.

`Uses` records each use in memory (key -> unix time) and hands them to its writer in one batch
`interval` seconds after the first use not yet written, and whenever eviction or a listing
needs them: for the data directory's cache one SQLite transaction (`sqlite_writer`: `UPDATE
Cache SET access_time`, never backwards), for a cluster one statement on its PostgreSQL index.
Eviction and `cache prune` order by what has been written: recency there lags by at most
`interval` (and a worker killed with SIGKILL loses its last batch), which is all a
least-recently-used bound needs. A batch the store refused is kept for the next (newer uses
winning) up to `_KEEP` keys; beyond that the oldest are dropped: recency is a hint for
eviction, not a record. No timer runs while nothing waits to be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyproxy.stores.write_turns import WriteTurns

__all__ = ["FLUSH_INTERVAL", "Uses", "sqlite_writer"]

log = logging.getLogger("pyproxy.blobcache")

FLUSH_INTERVAL = 30.0  # seconds a use may wait in memory before it is written
_KEEP = 100_000

Writer = Callable[[dict[str, float]], None]  # blocking: key -> unix time


class Uses:
    """Uses of cached files, in memory until written in one batch by `write`; a batch that
    raises one of `failures` is kept for the next try."""

    def __init__(
        self, write: Writer, interval: float = FLUSH_INTERVAL, *,
        failures: tuple[type[Exception], ...],
    ) -> None:
        self._write = write
        self._failures = failures
        self.interval = interval
        self._lock = threading.Lock()  # noted from the loop and from lookups in threads
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
        """Blocking: write the pending uses (nothing when there are none); how many."""
        with self._lock:
            uses, self._pending = self._pending, {}
        if not uses:
            return 0
        try:
            self._write(uses)
        except self._failures as exc:
            log.warning("could not record the use of %d cached files: %s", len(uses), exc)
            with self._lock:  # keep them for the next try, newer uses winning
                for key, when in uses.items():
                    self._pending[key] = max(when, self._pending.get(key, 0.0))
                if len(self._pending) > _KEEP:
                    newest = sorted(self._pending.items(), key=lambda kv: kv[1])[-_KEEP:]
                    self._pending = dict(newest)
            return 0
        return len(uses)

    def close(self) -> None:
        if self._timer is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
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


def sqlite_writer(db: Path, turns: WriteTurns) -> Writer:
    """The writer of the data directory's cache index (diskcache's Cache table in `db`), in
    turn with the index's other writers."""
    return functools.partial(_write, db, turns)


def _write(db: Path, turns: WriteTurns, uses: dict[str, float]) -> None:
    rows = [(when, key, when) for key, when in uses.items()]
    with turns.turn(), contextlib.closing(
        sqlite3.connect(db, timeout=60, isolation_level=None)
    ) as con:
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
