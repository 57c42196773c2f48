"""Versioned schema migrations, safe when several nodes start at once.

Each migration is (version, name, SQL), applied in order, each in its own transaction, under a
transaction-level advisory lock: a second node starting at the same moment waits, then finds the
versions applied and does nothing. A version once released is never edited; a change is a new
version. Stores register theirs in `MIGRATIONS` as their modules are imported; `migrate` imports
every such module (SCHEMA_MODULES) first and applies by version, so a node migrates to the whole
schema in one order whichever stores it has opened (a private-only node opens no cache).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import psycopg

from pyproxy.stores.outages import SchemaTooNew as SchemaTooNew

# the modules that register migrations (tests/stores/pg/test_migrations.py checks the list)
SCHEMA_MODULES = ("blobindex", "first_seen", "lists", "pages", "private_schema", "users")

# pg_advisory_xact_lock key for schema changes: any fixed 64-bit number unique to this purpose
_LOCK_KEY = 0x7079_7072_6F78_7901  # "pyproxy" + 1


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: list[Migration] = [
    Migration(1, "schema versions", """
        CREATE TABLE IF NOT EXISTS schema_versions (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
    """),
]


def register(migration: Migration) -> None:
    """Add a store's migration; versions are unique and kept in order."""
    if any(m.version == migration.version for m in MIGRATIONS):
        raise ValueError(f"migration {migration.version} is registered twice")
    MIGRATIONS.append(migration)
    MIGRATIONS.sort(key=lambda m: m.version)


def applied(conn: psycopg.Connection[tuple[object, ...]]) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_versions') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {int(row[0]) for row in conn.execute("SELECT version FROM schema_versions")}  # type: ignore[call-overload]


def registered() -> list[Migration]:
    """Every migration of every store, by version."""
    for module in SCHEMA_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return sorted(MIGRATIONS, key=lambda migration: migration.version)


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """Apply what is missing; the versions applied now (none when another node did them)."""
    done: list[int] = []
    every = registered()
    known = {m.version for m in every}
    for migration in every:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            have = applied(conn)
            newer = have - known
            if newer:
                raise SchemaTooNew(
                    f"the database has schema version {max(newer)}, newer than this pyproxy "
                    f"knows ({max(known)}): upgrade pyproxy on this node"
                )
            if migration.version in have:
                continue
            conn.execute(migration.sql.encode())  # our own constant SQL
            conn.execute(
                "INSERT INTO schema_versions (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            done.append(migration.version)
    return done
