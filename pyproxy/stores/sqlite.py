"""SQLite connections set up for several processes sharing one data directory."""

from __future__ import annotations

import sqlite3
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
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")  # a committed upload survives power loss
    connection.execute("PRAGMA foreign_keys = ON")
    # one transaction, so processes starting together never see half a schema
    connection.executescript(f"BEGIN IMMEDIATE;\n{schema};\nCOMMIT;")
    return connection


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
