"""SQLite connections set up for several processes sharing one data directory."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Long enough that a burst of parallel CI uploads queues instead of failing with "locked".
BUSY_TIMEOUT_MS = 60_000


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer) with the schema applied."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    connection.row_factory = sqlite3.Row
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _into_wal(connection)
    connection.execute("PRAGMA synchronous = FULL")  # a committed upload survives power loss
    connection.execute("PRAGMA foreign_keys = ON")
    # one transaction, so processes starting together never see half a schema
    connection.executescript(f"BEGIN IMMEDIATE;\n{schema};\nCOMMIT;")
    return connection


def _into_wal(connection: sqlite3.Connection) -> None:
    """Switching a new database to WAL takes an exclusive lock for which SQLite does not call
    the busy handler: processes opening a fresh data directory together get "database is
    locked" at once. So the switch is retried, up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front, so a transaction never has to upgrade
    a read lock (the usual source of "database is locked" under concurrency)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    else:
        connection.execute("COMMIT")
