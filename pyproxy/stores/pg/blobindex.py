"""The cluster's index of cached upstream files, in PostgreSQL: which keys are committed to the
bucket (under `cache/<key>`), their sha256 and size, when each was last used, and which node is
downloading a key right now.

`cache_blobs` is what `volume`, `entries` and eviction read cluster-wide; `last_used` is unix
seconds as far as the nodes have written their uses (batched, never per hit). `cache_inflight`
names the node that leads a download (written by the holder of the key's advisory lock, so a row
left by a killed node is simply overwritten by the next leader). `cluster_secret` is a random
value every node reads at start: nodes prove to each other that they are nodes with it (see
stores.peers). Private files are not in this index, so eviction never touches them.

Every method is blocking (call it in a thread) and raises DatabaseUnavailable, one line without
secrets, when PostgreSQL cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from pyproxy.stores.pg.connect import DatabaseUnavailable, describe
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.migrations import Migration, register

__all__ = ["IndexedBlob", "PgBlobIndex"]

NOTIFY_CHANNEL = "pyproxy"  # the one channel the nodes listen on ("blob:<key>" here)

register(Migration(20, "cluster blob cache", """
    CREATE TABLE cache_blobs (
        key text PRIMARY KEY,
        sha256 text NOT NULL,
        size bigint NOT NULL CHECK (size >= 0),
        last_used bigint NOT NULL,
        created timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX cache_blobs_last_used ON cache_blobs (last_used);
    CREATE TABLE cache_inflight (
        key text PRIMARY KEY,
        node_url text NOT NULL,
        started timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE cluster_secret (
        id integer PRIMARY KEY CHECK (id = 1),
        secret text NOT NULL
    );
    -- gen_random_uuid() draws from pg_strong_random(): 244 random bits
    INSERT INTO cluster_secret (id, secret)
    VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
"""))
# whole seconds made every file used within one second equal for eviction (ties went by key)
register(Migration(32, "cache_blobs.last_used in fractional seconds", """
    ALTER TABLE cache_blobs ALTER COLUMN last_used TYPE double precision
"""))
# each node's [cache] max_size, so that a node whose bound differs from the others' says so
register(Migration(35, "cache_bounds: each node's [cache] max_size", """
    CREATE TABLE cache_bounds (
        node_url text PRIMARY KEY,
        max_size bigint NOT NULL,
        seen_at timestamptz NOT NULL DEFAULT now()
    )
"""))
# a download's claim in one round trip (stores.pg.claims): each statement of a volatile
# function reads a fresh snapshot, so the look after the lock sees a commit made before it
register(Migration(34, "cache_claim: a download's claim in one statement", """
    CREATE FUNCTION cache_claim(
        k text, want text, lock_name text, node text,
        OUT got boolean, OUT o_sha256 text, OUT o_size bigint, OUT o_leader text,
        OUT o_other text
    ) LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        got := false;
        SELECT b.sha256, b.size INTO o_sha256, o_size FROM cache_blobs AS b WHERE b.key = k;
        IF FOUND AND (want IS NULL OR o_sha256 = want) THEN
            RETURN;  -- committed
        END IF;
        o_other := o_sha256;  -- an index row with another sha256: not used
        o_sha256 := NULL;
        o_size := NULL;
        IF NOT pg_try_advisory_lock(hashtextextended(lock_name, 0)) THEN
            SELECT i.node_url INTO o_leader FROM cache_inflight AS i WHERE i.key = k;
            RETURN;  -- another node leads (or is about to be named)
        END IF;
        -- committed between the first look and the lock (the last leader, letting go)
        SELECT b.sha256, b.size INTO o_sha256, o_size FROM cache_blobs AS b
        WHERE b.key = k AND (want IS NULL OR b.sha256 = want);
        IF FOUND THEN
            PERFORM pg_advisory_unlock(hashtextextended(lock_name, 0));
            RETURN;
        END IF;
        INSERT INTO cache_inflight AS i (key, node_url) VALUES (k, node)
        ON CONFLICT (key) DO UPDATE SET node_url = excluded.node_url, started = now();
        got := true;
    END $$
"""))

_T = TypeVar("_T")
_WAIT_S = 2.0  # for a pooled connection: a server that is down answers 503 after this
Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class IndexedBlob:
    key: str
    sha256: str
    size: int
    last_used: float  # unix time
    created: float  # unix time


def _blob(row: tuple[object, ...]) -> IndexedBlob:
    key, sha256, size, last_used, created = row
    assert isinstance(key, str) and isinstance(sha256, str) and isinstance(size, int)
    assert isinstance(last_used, float)
    return IndexedBlob(key, sha256, size, last_used, float(str(created)))


_COLUMNS = "key, sha256, size, last_used, extract(epoch FROM created)"


class PgBlobIndex:
    """On a Database of its own, so that once the server is back after an outage its pool is
    renewed with the others (Database.reset), not left waiting out its reconnect backoff."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _one(self, doing: str, query: Callable[[Conn], _T]) -> _T:
        """Run `query` in one transaction; once more on a fresh connection if the pooled one
        was broken (the server restarted meanwhile)."""
        for attempt in (1, 2):
            try:
                with self._db.pool.connection(timeout=_WAIT_S) as conn:
                    return query(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                if attempt == 1 and not isinstance(exc, PoolTimeout):
                    continue
                raise DatabaseUnavailable(
                    f"the cluster database cannot {doing}: {describe(exc)}"
                ) from None
        raise AssertionError("unreachable")

    # -- committed blobs ---------------------------------------------------------------------

    def get(self, key: str) -> IndexedBlob | None:
        row = self._one("look up a cached file", lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM cache_blobs WHERE key = %s", (key,)).fetchone())
        return None if row is None else _blob(row)

    def add(self, key: str, sha256: str, size: int, *, leader: str | None = None) -> bool:
        """Record a committed object, and end `leader`'s download of it in the same
        transaction; False if it was recorded already (by another node)."""

        def insert(conn: Conn) -> bool:
            cursor = conn.execute(
                "INSERT INTO cache_blobs (key, sha256, size, last_used) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (key) DO NOTHING", (key, sha256, size, time.time()))
            if leader is not None:
                conn.execute("DELETE FROM cache_inflight WHERE key = %s AND node_url = %s",
                             (key, leader))
            # delivered on commit, to nodes that listen (stores.pg.notify, where it runs)
            conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"blob:{key}"))
            return cursor.rowcount == 1

        return self._one("record a cached file", insert)

    def forget(self, key: str) -> int | None:
        """Remove a key's row; its size, None if there was none."""
        row = self._one("forget a cached file", lambda c: c.execute(
            "DELETE FROM cache_blobs WHERE key = %s RETURNING size", (key,)).fetchone())
        return None if row is None else int(row[0])  # type: ignore[call-overload]

    def touch(self, uses: dict[str, float]) -> None:
        """Write uses (key -> unix time) in one statement; a row never goes back in time."""
        if not uses:
            return
        keys, times = list(uses), [uses[key] for key in uses]
        self._one("record uses of cached files", lambda c: c.execute(
            "UPDATE cache_blobs AS b SET last_used = u.t"
            " FROM unnest(%s::text[], %s::float8[]) AS u(k, t)"
            " WHERE b.key = u.k AND b.last_used < u.t", (keys, times)))

    def volume(self) -> int:
        row = self._one("sum the cache's size", lambda c: c.execute(
            "SELECT coalesce(sum(size), 0) FROM cache_blobs").fetchone())
        return 0 if row is None else int(row[0])  # type: ignore[call-overload]

    def entries(self) -> list[IndexedBlob]:
        """Every committed blob, least recently used first."""
        rows = self._one("list the cache", lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM cache_blobs ORDER BY last_used, key").fetchall())
        return [_blob(row) for row in rows]

    def other_bounds(self, node_url: str, max_size: int) -> dict[str, int]:
        """Record `node_url`'s [cache] max_size; the other bounds of nodes started within a
        week, by node, where they differ from it."""
        def note(conn: Conn) -> list[tuple[object, ...]]:
            conn.execute(
                "INSERT INTO cache_bounds (node_url, max_size) VALUES (%s, %s) ON CONFLICT"
                " (node_url) DO UPDATE SET max_size = excluded.max_size, seen_at = now()",
                (node_url, max_size))
            return conn.execute(
                "SELECT node_url, max_size FROM cache_bounds WHERE node_url != %s AND"
                " max_size != %s AND seen_at > now() - interval '7 days' ORDER BY node_url",
                (node_url, max_size)).fetchall()
        rows = self._one("record the cache's bound", note)
        return {str(node): int(size) for node, size in rows}  # type: ignore[call-overload]

    def least_used(self, limit: int, protect: str = "") -> list[tuple[str, int]]:
        rows = self._one("list the cache", lambda c: c.execute(
            "SELECT key, size FROM cache_blobs WHERE key != %s ORDER BY last_used, key LIMIT %s",
            (protect, limit)).fetchall())
        return [(str(key), int(size)) for key, size in rows]  # type: ignore[call-overload]

    def present(self, keys: list[str]) -> set[str]:
        rows = self._one("look up cached files", lambda c: c.execute(
            "SELECT key FROM cache_blobs WHERE key = ANY(%s)", (keys,)).fetchall())
        return {str(key) for (key,) in rows}

    def digests(self, keys: list[str]) -> dict[str, str]:
        rows = self._one("look up cached files", lambda c: c.execute(
            "SELECT key, sha256 FROM cache_blobs WHERE key = ANY(%s)", (keys,)).fetchall())
        return {str(key): str(sha256) for key, sha256 in rows}

    def sizes(self, keys: list[str]) -> dict[str, int]:
        """The byte length of each of `keys` committed to the bucket (its bytes were checked)."""
        rows = self._one("look up cached files", lambda c: c.execute(
            "SELECT key, size FROM cache_blobs WHERE key = ANY(%s)", (keys,)).fetchall())
        return {str(key): int(size) for key, size in rows}  # type: ignore[call-overload]

    # -- downloads in progress ---------------------------------------------------------------

    def lead(self, key: str, node_url: str) -> None:
        """The holder of `key`'s lock downloads it on `node_url` (a dead leader's row is taken
        over: only a lock holder writes)."""
        self._one("record a download", lambda c: c.execute(
            "INSERT INTO cache_inflight (key, node_url) VALUES (%s, %s) ON CONFLICT (key)"
            " DO UPDATE SET node_url = excluded.node_url, started = now()", (key, node_url)))

    def leader(self, key: str) -> str | None:
        row = self._one("look up a download", lambda c: c.execute(
            "SELECT node_url FROM cache_inflight WHERE key = %s", (key,)).fetchone())
        return None if row is None else str(row[0])

    def done(self, key: str, node_url: str) -> None:
        self._one("end a download", lambda c: c.execute(
            "DELETE FROM cache_inflight WHERE key = %s AND node_url = %s", (key, node_url)))

    def secret(self) -> str:
        row = self._one("read the cluster secret", lambda c: c.execute(
            "SELECT secret FROM cluster_secret WHERE id = 1").fetchone())
        if row is None:
            raise DatabaseUnavailable("the cluster database has no cluster_secret: not migrated")
        return str(row[0])
