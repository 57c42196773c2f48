"""The cluster's database as the stores use it: transactions from the pool, each failure to
reach the server turned into one `DatabaseUnavailable` line (a 503 for HTTP, exit 1 for the
CLI), never a psycopg traceback."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from pyproxy.stores.pg.connect import DatabaseUnavailable, describe, open_pool, redact_dsn
from pyproxy.stores.pg.migrations import migrate

log = logging.getLogger("pyproxy.pg")

Connection = psycopg.Connection[TupleRow]

# how long a read made on the event loop waits for a connection before it gives up (and the
# store answers from the copy it holds, or 503): a server that is gone must not stall the loop
READ_TIMEOUT_S = 1.0
WRITE_TIMEOUT_S = 5.0
DOWN_TIMEOUT_S = 0.5  # while the listener says the server is gone: a 503 soon, not in 5 s


class Database:
    """A pool on one DSN; the schema is migrated when it opens."""

    def __init__(self, dsn: str, *, max_size: int = 8, migrate_schema: bool = True) -> None:
        self.dsn = dsn
        self._max_size = max_size
        self._lock = threading.Lock()
        # whether the server is thought reachable (the process's listener is connected)
        self.reachable: Callable[[], bool] = lambda: True
        self.pool: ConnectionPool = open_pool(dsn, max_size=max_size)
        if migrate_schema:
            try:
                with self.transaction() as conn:
                    migrate(conn)  # each migration in a transaction of its own
            except BaseException:
                self.pool.close()
                raise

    def close(self) -> None:
        self.pool.close()

    def reset(self) -> None:
        """A new pool, once the server answers again (the listener is back): the old one may
        wait out its reconnect backoff (doubling without bound), far longer than the outage."""
        try:
            fresh = open_pool(self.dsn, max_size=self._max_size)
        except DatabaseUnavailable as exc:
            log.warning("keeping the old connections: %s", exc)
            return
        with self._lock:
            old, self.pool = self.pool, fresh
        old.close(timeout=0)  # connections in use are closed as they come back

    @contextmanager
    def transaction(self, *, timeout: float = WRITE_TIMEOUT_S) -> Iterator[Connection]:
        """A connection inside one transaction: committed when the block ends, rolled back if it
        raises. Connection failures are DatabaseUnavailable; other psycopg errors (constraint
        violations, bugs) pass as they are."""
        if not self.reachable():
            timeout = min(timeout, DOWN_TIMEOUT_S)
        try:
            with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise self.unavailable(exc) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self.unavailable(exc) from None

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        why = describe(exc)
        if isinstance(exc, PoolTimeout):
            why = f"no connection to {redact_dsn(self.dsn)} within the timeout"
        return DatabaseUnavailable(f"the database is unavailable: {why}")
