"""A cluster node's upstream page cache: the records in PostgreSQL, parsed pages in memory.

The same interface as stores/pages.py's PageStore. One row per (upstream, key) holds the raw
answer with its validators, fetch time, revision and body (bytea: see below); every node reads
it, so a page fetched by one node costs the others no upstream request, and offline mode and
"a stale copy when upstream fails" work from what any node fetched. `turn(key)` is one node at
a time across the cluster (stores/pg/turns.py). The project list (about a million names) is
fetched by one node for the cluster, its body kept in the bucket (`shared_list`:
stores/pg/lists.py), and built by each node on its own disk (`directory`:
stores/project_list.py).

A save that changes a page's revision sends `page:<store id>:<upstream>:<key>` inside its
transaction; the other processes drop their parsed copy and read the new record when next asked
(the sender keeps its own). A 304 rewrites only the validators and the fetch time, and notifies
nobody: the other copies are as good until their TTL. The warm path (`known`) compares one
integer and reads memory: no database, no bucket. A lost listener connection drops nothing:
a page is bounded by its TTL anyway (as each worker's copy on one box is), so warm pages keep
being served while the database is down. With the database down, `load` and `save` raise
`DatabaseUnavailable` after at most READ_TIMEOUT_S (then at once for COOLDOWN_S), and the
repository asks upstream and serves from memory.

The body is in the row, not in the bucket: a record and its body are written in one
transaction (never a record without its body, nor bodies left behind by a superseded revision
that something would have to collect), a cold load is one round trip, pages keep working while
the bucket is down, and PostgreSQL compresses them (TOAST), which JSON and HTML take well.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import Any

from pyproxy.formats.answers import UpstreamFormatError
from pyproxy.model import ProjectPage
from pyproxy.stores.keylock import Turn
from pyproxy.stores.objects import Bucket
from pyproxy.stores.pages import INDEX_KEY, MEMORY_BYTES, PageCache, PageRecord, Parsed, parse
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import READ_TIMEOUT_S, Connection, Database
from pyproxy.stores.pg.lists import ClusterList
from pyproxy.stores.pg.migrations import Migration, register
from pyproxy.stores.pg.notify import Changes, Listener, notify
from pyproxy.stores.pg.turns import Turns

__all__ = ["ClusterPageStore", "all_pages", "page_totals"]

log = logging.getLogger("pyproxy.pages")

COOLDOWN_S = 1.0  # after the database failed us, how long to not ask it again
TOPIC = "page"
_COLUMNS = "status, content_type, url, etag, last_modified, fetched_at, revision, body"

register(Migration(30, "upstream page cache", """
    CREATE TABLE upstream_pages (
        upstream text NOT NULL,      -- '' for [upstream], else the [[upstreams]] name
        key text NOT NULL,           -- a normalised project name, '/' for the project list
        status smallint NOT NULL,    -- 200, or 404: upstream has no such project
        content_type text,
        url text NOT NULL,           -- the final URL, against which relative links resolve
        etag text,
        last_modified text,
        fetched_at double precision NOT NULL,  -- seconds since the epoch (the fetcher's clock)
        revision text NOT NULL,      -- blake2b of the body: a 304 keeps it
        body bytea NOT NULL,
        PRIMARY KEY (upstream, key)
    );
    CREATE TABLE page_failures (    -- a refresh's last failure, for the nodes waiting on it
        name text PRIMARY KEY,       -- 'page:<upstream>:<key>'
        failed_at double precision NOT NULL,  -- the server's clock
        problem text NOT NULL
    );
"""))


class _CoolingDown(DatabaseUnavailable):
    """Not asked: the database failed less than COOLDOWN_S ago."""


def _record(row: tuple[Any, ...]) -> PageRecord:
    status, content_type, url, etag, last_modified, fetched_at, revision, body = row
    return PageRecord(
        status=int(status),
        body=bytes(body),
        content_type=content_type,
        url=str(url),
        etag=etag,
        last_modified=last_modified,
        fetched_at=float(fetched_at),
        revision=str(revision),
    )


class ClusterPageStore(PageCache):
    """Upstream pages of one upstream (`upstream`: '' or a [[upstreams]] name) on PostgreSQL."""

    def __init__(
        self, db: Database, listener: Listener | None, upstream: str, directory: Path, *,
        memory_bytes: int = MEMORY_BYTES, release: Callable[[], None] | None = None,
        bucket: Bucket | None = None,
    ) -> None:
        super().__init__(directory, memory_bytes=memory_bytes)
        self._db = db
        self._upstream = upstream
        self._id = uuid.uuid4().hex[:12]  # its own notifications are not news to it
        self._turns = Turns(db.dsn, f"{TOPIC}:{upstream}")
        if bucket is not None:
            self.shared_list = ClusterList(db, bucket, upstream, self._turns)
        self._changes = Changes()
        self._changes.take()  # it starts as "everything changed": nothing is held yet
        self._seen = self._changes.value
        self._down_until = 0.0
        self._release = release
        if listener is not None:
            listener.subscribe(TOPIC, self._heard)

    def close(self) -> None:
        self._turns.close()
        release, self._release = self._release, None
        if release is not None:
            release()

    # ---- memory: dropped when another process saved a new revision ----

    def _heard(self, rest: str) -> None:  # on the listener's thread
        sender, _, where = rest.partition(":")
        upstream, _, key = where.partition(":")
        if upstream == self._upstream and sender != self._id:
            self._changes.mark(key)

    def known(self, key: str) -> Parsed | None:
        if self._changes.value != self._seen:
            self._seen = self._changes.value  # before take(): a later mark moves it again
            _, keys = self._changes.take()  # only keys: a lost listener drops nothing
            for changed in keys:
                self._memory.pop(changed)
        return self._memory.get(key)

    def turn(self, key: str, *, patience: float) -> AbstractAsyncContextManager[Turn]:
        """One node (one process) at a time across the cluster: see stores/pg/turns.py; the
        project list's turn is the machine's, for building the node's own copy (`directory`;
        the cluster's turn to fetch it is `shared_list.turn`)."""
        if key == INDEX_KEY:
            return super().turn(key, patience=patience)
        return self._turns.turn(key, patience=patience)

    # ---- the records (blocking: call from a thread) ----

    def _connection(self) -> AbstractContextManager[Connection]:
        if time.monotonic() < self._down_until:
            raise _CoolingDown("the database is unavailable (it failed a moment ago)")
        return self._db.transaction(timeout=READ_TIMEOUT_S)

    def _failed(self, exc: DatabaseUnavailable) -> DatabaseUnavailable:
        if not isinstance(exc, _CoolingDown):  # the first failure starts it, once
            self._down_until = time.monotonic() + COOLDOWN_S
        return exc

    def load(self, key: str) -> PageRecord | None:
        try:
            with self._connection() as conn:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM upstream_pages WHERE upstream = %s AND key = %s",
                    (self._upstream, key), binary=True,  # the body as bytes, not hex text
                ).fetchone()
        except DatabaseUnavailable as exc:
            raise self._failed(exc) from None
        return None if row is None else _record(row)

    def save(self, key: str, record: PageRecord) -> None:
        """Keep the record unless a later fetch is kept already; a new revision is announced.
        With the database down, only in memory (logged)."""
        try:
            with self._connection() as conn:
                self._write(conn, key, record)
        except DatabaseUnavailable as exc:
            self._failed(exc)
            log.warning("cannot keep the page of %r in the database (%s): it is served from"
                        " memory", key, exc)

    def _write(self, conn: Connection, key: str, record: PageRecord) -> None:
        held = conn.execute(
            "SELECT revision, fetched_at FROM upstream_pages"
            " WHERE upstream = %s AND key = %s FOR UPDATE",
            (self._upstream, key),
        ).fetchone()
        if held is not None and float(held[1]) > record.fetched_at:
            return  # another node fetched it later (it went on without waiting for us)
        if held is not None and held[0] == record.revision:
            # a 304 (or the same body again): the body stays as it is, unread and unwritten
            conn.execute(
                "UPDATE upstream_pages SET status = %s, content_type = %s, url = %s, etag = %s,"
                " last_modified = %s, fetched_at = %s WHERE upstream = %s AND key = %s",
                (record.status, record.content_type, record.url, record.etag,
                 record.last_modified, record.fetched_at, self._upstream, key),
            )
            return
        conn.execute(
            f"INSERT INTO upstream_pages (upstream, key, {_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (upstream, key) DO UPDATE SET status = excluded.status,"
            " content_type = excluded.content_type, url = excluded.url, etag = excluded.etag,"
            " last_modified = excluded.last_modified, fetched_at = excluded.fetched_at,"
            " revision = excluded.revision, body = excluded.body",
            (self._upstream, key, record.status, record.content_type, record.url, record.etag,
             record.last_modified, record.fetched_at, record.revision, record.body),
        )
        notify(conn, f"{TOPIC}:{self._id}:{self._upstream}:{key}")  # delivered on commit

    def project_names(self) -> list[str]:
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT key FROM upstream_pages WHERE upstream = %s AND status = 200"
                " AND key <> '/' ORDER BY key",
                (self._upstream,),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def _records(self) -> Iterator[tuple[str, PageRecord]]:
        # a server-side cursor: the bodies arrive a batch at a time, not all at once
        with self._db.transaction() as conn, conn.cursor(name="pages") as cursor:
            cursor.itersize = 64
            cursor.execute(
                f"SELECT key, {_COLUMNS} FROM upstream_pages WHERE upstream = %s ORDER BY key",
                (self._upstream,),
            )
            for row in cursor:
                yield str(row[0]), _record(row[1:])


# ---- the whole page cache, for `pyproxy cache` (blocking) ----

def page_totals(db: Database) -> tuple[int, int]:
    """(project pages of every upstream, bytes their rows take in the database)."""
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 200 AND key <> '/'),"
            " coalesce(sum(pg_column_size(body)), 0) FROM upstream_pages"
        ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def all_pages(db: Database) -> Iterator[ProjectPage]:
    """Every cached project page of every upstream, parsed (skipping any that do not parse)."""
    with db.transaction() as conn, conn.cursor(name="all_pages") as cursor:
        cursor.itersize = 64
        cursor.execute(
            f"SELECT key, {_COLUMNS} FROM upstream_pages WHERE status = 200 AND key <> '/'",
            binary=True,
        )
        for row in cursor:
            try:
                yield parse(str(row[0]), _record(row[1:]))
            except UpstreamFormatError:
                continue
