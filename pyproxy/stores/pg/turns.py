"""One node at a time per key, across the cluster: the page cache's `turn(key)` on PostgreSQL.

The turn is a session-level advisory lock, `pg_try_advisory_lock(hashtextextended(name, 0))`,
held on a dedicated connection (never one of the pool's) for as long as the refresh takes. A
node that dies frees it when the server sees the connection close (TCP keepalives bound a
vanished host: stores/pg/connect.py). Waiting is polling (5 ms, backing off to 50 ms) from a
worker thread one round trip at a time, so a waiter holds no thread for long, as with
stores/keylock.py's flock'd files.

A holder whose try failed writes the problem into `page_failures` before it unlocks, stamped with
the server's clock; a waiter that then gets the lock takes that failure (noted since it began to
wait, by the same clock, so nodes' clocks need not agree) instead of trying upstream again and
waiting out the same outage. When the database cannot be reached, or the lock not within the
patience given, the caller goes on without it: at worst a second request goes upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from pyproxy.stores.keylock import Turn
from pyproxy.stores.pg.connect import DatabaseUnavailable, connect, describe

__all__ = ["ClusterTurn", "Turns"]

log = logging.getLogger("pyproxy.keylock")

_POLL_MIN = 0.005
_POLL_MAX = 0.05
_IDLE = 4  # released connections kept for the next turn (one round trip, no connect)
_NOTE_CHARS = 1024
Conn = psycopg.Connection[tuple[object, ...]]


class ClusterTurn(Turn):
    """A turn held (or gone on without) on PostgreSQL; `fail()` is written when it ends."""

    def __init__(self, held: bool, failure: str | None) -> None:
        super().__init__(None, failure)
        self._held = held
        self.problem: str | None = None

    @property
    def locked(self) -> bool:
        return self._held

    def fail(self, problem: str) -> None:
        if self._held:
            self.problem = " ".join(problem.split())[:_NOTE_CHARS]


class Turns:
    """Turns at keys of one namespace (`scope`, e.g. "page:<upstream>")."""

    def __init__(self, dsn: str, scope: str) -> None:
        self._dsn = dsn
        self._scope = scope
        self._idle: list[Conn] = []
        self._guard = threading.Lock()
        self._closed = False
        self._warned = False

    def close(self) -> None:
        with self._guard:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    @asynccontextmanager
    async def turn(self, key: str, *, patience: float) -> AsyncIterator[ClusterTurn]:
        """Hold `key`'s lock for the block, after waiting up to `patience` seconds for it."""
        name = f"{self._scope}:{key}"
        try:
            conn, asked = await asyncio.to_thread(self._take)
        except DatabaseUnavailable as exc:
            self._going_on(key, str(exc))
            yield ClusterTurn(False, None)
            return
        try:
            held = await self._acquire(conn, name, patience)
            failure = None
            if held:
                failure = await asyncio.to_thread(self._failure_since, conn, name, asked)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # the lock's connection broke (a lock it had is gone with it): on without it
            self._going_on(key, describe(exc))
            conn.close()
            yield ClusterTurn(False, None)
            return
        except BaseException:  # cancelled while waiting: the connection may be mid-query
            conn.close()
            raise
        if not held:
            self._put_back(conn)
            yield ClusterTurn(False, None)
            return
        turn = ClusterTurn(True, failure)
        try:
            yield turn
        finally:
            await asyncio.to_thread(self._release, conn, name, turn.problem)

    # ---- blocking parts (in a thread) ----

    def _take(self) -> tuple[Conn, float]:
        """An idle (or new) autocommit connection and the server's clock now."""
        for attempt in (1, 2):
            conn = self._idle_conn() or connect(self._dsn, autocommit=True)
            try:
                row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                conn.close()
                if attempt == 1:  # an idle connection broken by a server restart: once more
                    continue
                raise DatabaseUnavailable(f"cannot lock: {describe(exc)}") from None
            assert row is not None
            return conn, float(row[0])  # type: ignore[arg-type]
        raise AssertionError("unreachable")

    def _try_lock(self, conn: Conn, name: str) -> bool:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)
        ).fetchone()
        return row is not None and row[0] is True

    def _failure_since(self, conn: Conn, name: str, since: float) -> str | None:
        row = conn.execute(
            "SELECT problem FROM page_failures WHERE name = %s AND failed_at >= %s",
            (name, since),
        ).fetchone()
        return str(row[0]) if row is not None else None

    def _release(self, conn: Conn, name: str, problem: str | None) -> None:
        try:
            if problem is not None:
                conn.execute(
                    "INSERT INTO page_failures (name, failed_at, problem)"
                    " VALUES (%s, extract(epoch FROM clock_timestamp()), %s)"
                    " ON CONFLICT (name) DO UPDATE"
                    " SET failed_at = excluded.failed_at, problem = excluded.problem",
                    (name, problem),
                )
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))
        except psycopg.Error as exc:  # a broken connection has lost the lock already
            log.debug("releasing %s on a broken connection: %s", name, describe(exc))
            conn.close()
            return
        self._put_back(conn)

    async def _acquire(self, conn: Conn, name: str, patience: float) -> bool:
        give_up = time.monotonic() + patience
        delay = _POLL_MIN
        while not await asyncio.to_thread(self._try_lock, conn, name):
            if time.monotonic() >= give_up:
                log.warning("%r stayed locked for %g s, going on without the lock", name, patience)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
        return True

    def _going_on(self, key: str, why: str) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(level, "no lock for %r, going on without one: %s", key, why)

    def _idle_conn(self) -> Conn | None:
        with self._guard:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return None

    def _put_back(self, conn: Conn) -> None:
        with self._guard:
            if not self._closed and len(self._idle) < _IDLE and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()
