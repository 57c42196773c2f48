"""Session-level advisory locks, each held on a dedicated PostgreSQL connection for as long as
the work it guards (a download, an eviction run) takes.

`pg_try_advisory_lock(hashtextextended(name, 0))`: one holder per name in the whole cluster,
never waiting. The lock lives as long as its connection's session, so a node that dies (even by
SIGKILL) frees its locks the moment the server sees the connection close, and TCP keepalives
(stores.pg.connect) bound how long a vanished host holds them. A released lock's connection is
kept for the next one (a few idle at most): taking a lock is then one round trip, no connect.

Blocking: call from a thread. Errors reaching the server are DatabaseUnavailable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import LiteralString

import psycopg

from pyproxy.stores.pg.connect import DatabaseUnavailable, connect, describe

__all__ = ["AdvisoryLocks", "HeldLock"]

log = logging.getLogger("pyproxy.locks")

_IDLE = 4  # released connections kept for the next lock
Conn = psycopg.Connection[tuple[object, ...]]
Params = Sequence[object] | Mapping[str, object]


class HeldLock:
    """A lock this process holds: released by `AdvisoryLocks.release` or with its connection."""

    __slots__ = ("conn", "name")

    def __init__(self, name: str, conn: Conn) -> None:
        self.name = name
        self.conn = conn


class AdvisoryLocks:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._idle: list[Conn] = []
        self._guard = threading.Lock()
        self._closed = False
        self._refilling = False

    def warm(self, name: str, query: LiteralString, params: Params, *, connections: int) -> None:
        """Open `connections` idle connections now and run `query` (a try_lock_with query) on
        each, in a transaction rolled back (nothing it writes stays), letting go of `name`'s
        lock if it took it: the first locks then cost neither a connect (with one to spare,
        the first lock taken starts no refill) nor a server session's first run of the query."""
        for _ in range(connections):
            conn = self._connect()
            try:
                with conn.transaction(force_rollback=True):
                    row = conn.execute(query, params).fetchone()
                if row is not None and row[0] is True:
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))
            except psycopg.Error as exc:
                conn.close()
                raise DatabaseUnavailable(
                    f"the cluster database cannot lock: {describe(exc)}"
                ) from None
            self._put_back(conn)

    def try_lock(self, name: str) -> HeldLock | None:
        """Hold `name`'s lock, or None if another session holds it."""
        return self.try_lock_with(
            name, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)
        )[0]

    def try_lock_with(
        self, name: str, query: LiteralString, params: Params
    ) -> tuple[HeldLock | None, tuple[object, ...]]:
        """Run `query`, one row whose first column says whether it took `name`'s lock
        (`pg_try_advisory_lock`, or NULL where it did not try), in one round trip: the lock
        if taken, and the row's other columns."""
        for attempt in (1, 2):
            try:
                conn = self._take()
            except DatabaseUnavailable as exc:
                raise DatabaseUnavailable(f"the cluster database cannot lock: {exc}") from None
            try:
                row = conn.execute(query, params).fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                conn.close()
                if attempt == 1:  # broken by a server restart, as the other idle ones then:
                    self._drop_idle()  # once more, on a new connection
                    continue
                raise DatabaseUnavailable(
                    f"the cluster database cannot lock: {describe(exc)}"
                ) from None
            assert row is not None, "a lock query returns one row"
            if row[0] is True:
                return HeldLock(name, conn), row[1:]
            self._put_back(conn)
            return None, row[1:]
        raise AssertionError("unreachable")

    def release(self, lock: HeldLock) -> None:
        """Unlock (a broken connection has lost the lock already: it is closed)."""
        try:
            lock.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock.name,))
        except psycopg.Error as exc:
            log.debug("releasing %s on a broken connection: %s", lock.name, describe(exc))
            lock.conn.close()
            return
        self._put_back(lock.conn)

    def close(self) -> None:
        with self._guard:
            self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        with self._guard:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _connect(self) -> Conn:
        return connect(self._dsn, autocommit=True)

    def _take(self) -> Conn:
        with self._guard:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    self._refill_if_empty()
                    return conn
        return self._connect()

    def _refill_if_empty(self) -> None:
        """(Under the guard.) The last idle connection left, maybe with a lock held for a whole
        download: open the next one in the background, so that the next lock (the next cold
        file's claim) costs a round trip, not a connect."""
        if self._idle or self._refilling or self._closed:
            return
        self._refilling = True
        threading.Thread(target=self._refill, name="lock connection", daemon=True).start()

    def _refill(self) -> None:
        try:
            self._put_back(self._connect())
        except DatabaseUnavailable as exc:
            log.debug("no spare lock connection: %s", exc)
        finally:
            with self._guard:
                self._refilling = False

    def _put_back(self, conn: Conn) -> None:
        with self._guard:
            if not self._closed and len(self._idle) < _IDLE and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()
