"""Connections to the cluster's PostgreSQL: a pool for the stores (called from threads, as the
SQLite stores are), opened with one clear line when the DSN is bad or the server is not there.

Passwords come from where libpq looks (PGPASSWORD, ~/.pgpass) or the DSN itself; no message,
log line or metric ever shows the DSN's password (`redact_dsn`).
"""

from __future__ import annotations

import re

import psycopg
from psycopg_pool import ConnectionPool

from pyproxy.stores.outages import DatabaseUnavailable as DatabaseUnavailable

CONNECT_TIMEOUT_S = 5
# TCP keepalives: a node that vanishes without closing its connection frees its locks in seconds
_KEEPALIVE = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
}


# a URL's user:password@, and libpq's password parameters, in a URL's query
# (`?password=…&…`) or a key=value string (`password=… ` or quoted `password='…'`)
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@")
_PARAMETER_PASSWORD = re.compile(r"(?i)\b((?:ssl)?password)\s*=\s*('(?:[^'\\]|\\.)*'?|[^&\s]*)")


def redact_dsn(dsn: str) -> str:
    """The DSN without its passwords, for messages."""
    return _PARAMETER_PASSWORD.sub(r"\1=***", _URL_PASSWORD.sub(r"\1:***@", dsn))


def describe(exc: BaseException) -> str:
    """One line of what psycopg said, without the DSN's secrets."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact_dsn(text)


def connection_options() -> dict[str, object]:
    return {"connect_timeout": CONNECT_TIMEOUT_S, **_KEEPALIVE}


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """One connection (for the listener or a lock holder); DatabaseUnavailable if none."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **connection_options())  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {describe(exc)}"
        ) from None


def open_pool(dsn: str, *, max_size: int = 8, check: bool = True) -> ConnectionPool:
    """A pool of up to `max_size` connections, its first one checked now. With `check`, each
    connection is checked as it is handed out (one round trip), so after a server restart the
    dead ones are replaced instead of failing one request each."""
    connect(dsn).close()  # a server that is not there: one line now, not a pool retrying
    pool: ConnectionPool = ConnectionPool(
        dsn, min_size=1, max_size=max_size, kwargs=connection_options(), open=False,
        name="pyproxy", timeout=CONNECT_TIMEOUT_S,
        check=ConnectionPool.check_connection if check else None,
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S + 1)
    except Exception as exc:  # psycopg_pool.PoolTimeout hides the cause: ask once directly
        pool.close()
        connect(dsn).close()  # raises DatabaseUnavailable with the server's reason
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {describe(exc)}"
        ) from None
    return pool
