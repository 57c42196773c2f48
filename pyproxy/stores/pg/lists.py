"""A cluster's upstream project list: its record in PostgreSQL, its raw body in the bucket.

The list of a real index is tens of megabytes, so it is not a page row (stores/pg/pages.py):
the node that fetched it puts the answer, as it came, into the bucket under `lists/<revision>`
(a conditional create streamed from the node's temp file; the revision is the body's hash, so
two nodes can only write the same bytes), then records it in `upstream_lists` (validators,
fetch time, revision, object key, size) and deletes the body it replaced. Another node whose
copy is stale reads the record and, if its own copy has another revision, streams the object
into a temp file and builds its own database and rendered files from it
(stores/project_list.py, web/simple.py); the cluster asks upstream once per `index_ttl`, since
every node counts its copy as fetched when the record says. `turn()` is one node at a time
across the cluster, as for pages (stores/pg/turns.py).

`load` and `refreshed` block (call them from a thread); the bucket is asked asynchronously
(obstore's blocking calls hang in a forked worker). Failures of either store are
SharedListUnavailable, one line: the caller then fetches the list on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from pyproxy.stores.keylock import Turn
from pyproxy.stores.objects import Bucket, BucketUnavailable, ObjectMissing
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import READ_TIMEOUT_S, Connection, Database
from pyproxy.stores.pg.migrations import Migration, register
from pyproxy.stores.pg.turns import Turns
from pyproxy.stores.project_list import SharedListRecord, SharedListUnavailable

__all__ = ["LIST_PREFIX", "ClusterList"]

log = logging.getLogger("pyproxy.pages")

LIST_PREFIX = "lists/"
_READ = 1024 * 1024
_COLUMNS = "revision, url, content_type, etag, last_modified, fetched_at, object, size"
_OBJECT = 6  # its place in _COLUMNS

register(Migration(33, "shared upstream project lists", """
    CREATE TABLE upstream_lists (
        upstream text PRIMARY KEY,   -- '' for [upstream], else the [[upstreams]] name
        revision text NOT NULL,      -- blake2b of the body, as a node's own copy names it
        url text NOT NULL,           -- the final URL
        content_type text,
        etag text,
        last_modified text,
        fetched_at double precision NOT NULL,  -- seconds since the epoch (the fetcher's clock)
        object text NOT NULL,        -- the raw body's key in the bucket
        size bigint NOT NULL
    );
"""))


def _record(row: tuple[object, ...]) -> SharedListRecord:
    revision, url, content_type, etag, last_modified, fetched_at, key, size = row
    return SharedListRecord(
        revision=str(revision), url=str(url),
        content_type=None if content_type is None else str(content_type),
        etag=None if etag is None else str(etag),
        last_modified=None if last_modified is None else str(last_modified),
        fetched_at=float(fetched_at),  # type: ignore[arg-type]
        object=str(key), size=int(size),  # type: ignore[call-overload]
    )


class ClusterList:
    """The project list of one upstream ('' or a [[upstreams]] name) shared by the nodes."""

    def __init__(self, db: Database, bucket: Bucket, upstream: str, turns: Turns) -> None:
        self._db = db
        self._bucket = bucket
        self._upstream = upstream
        self._turns = turns

    def turn(self, key: str, *, patience: float) -> AbstractAsyncContextManager[Turn]:
        return self._turns.turn(key, patience=patience)

    def load(self) -> SharedListRecord | None:
        try:
            with self._db.transaction(timeout=READ_TIMEOUT_S) as conn:
                row = self._select(conn)
        except DatabaseUnavailable as exc:
            raise SharedListUnavailable(str(exc)) from None
        return None if row is None else _record(row)

    def _select(self, conn: Connection, *, lock: bool = False) -> tuple[object, ...] | None:
        return conn.execute(
            f"SELECT {_COLUMNS} FROM upstream_lists WHERE upstream = %s"
            + (" FOR UPDATE" if lock else ""),
            (self._upstream,),
        ).fetchone()

    async def publish(self, record: SharedListRecord, body: Path) -> SharedListRecord:
        """The answer in `body` (whose blake2b is `record.revision`) into the bucket, then its
        record, unless a later fetch is recorded already; what is recorded now."""
        key = f"{LIST_PREFIX}{record.revision}"
        try:
            # False: the same bytes are there already (streamed: see Bucket.put_stream_async)
            await self._bucket.put_stream_async(key, _read(body))
        except BucketUnavailable as exc:
            raise SharedListUnavailable(str(exc)) from None
        recorded = dataclasses.replace(record, object=key, size=body.stat().st_size)
        saved, replaced = await asyncio.to_thread(self._save_replacing, recorded)
        # the body it replaced (a node still reading it fails over to fetching its own), or
        # this one, where another node recorded a later fetch meanwhile
        gone = key if saved.object != key else replaced
        if gone and gone != saved.object:
            with contextlib.suppress(BucketUnavailable):
                await self._bucket.delete_async(gone)
        return saved

    def refreshed(self, record: SharedListRecord) -> SharedListRecord:
        """The recorded list fetched again (a 304, or the same body): validators and time."""
        return self._save_replacing(record)[0]

    async def download(self, record: SharedListRecord, target: Path) -> None:
        """The recorded body into `target`, streamed; SharedListUnavailable if the bucket lacks
        it or it is not the body the record names."""
        digest = hashlib.blake2b(digest_size=12)
        try:
            with target.open("wb") as out:
                # a part at a time: each write and hash is a millisecond or two on the loop
                async for chunk in self._bucket.stream(record.object):
                    out.write(chunk)
                    digest.update(chunk)
        except (BucketUnavailable, ObjectMissing) as exc:
            raise SharedListUnavailable(f"cannot read the list's body: {exc}") from None
        if digest.hexdigest() != record.revision:
            raise SharedListUnavailable(f"the bucket's {record.object} is not the recorded list")

    def _save_replacing(self, record: SharedListRecord) -> tuple[SharedListRecord, str]:
        """Record `record` unless a later fetch is recorded: what is recorded now, and the
        object key of the record it replaced ("" if none), read in the same transaction."""
        try:
            with self._db.transaction() as conn:
                held = self._select(conn, lock=True)
                replaced = str(held[_OBJECT]) if held is not None else ""
                row = conn.execute(
                    f"INSERT INTO upstream_lists (upstream, {_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (upstream) DO UPDATE SET revision = excluded.revision,"
                    " url = excluded.url, content_type = excluded.content_type,"
                    " etag = excluded.etag, last_modified = excluded.last_modified,"
                    " fetched_at = excluded.fetched_at, object = excluded.object,"
                    " size = excluded.size"
                    " WHERE upstream_lists.fetched_at <= excluded.fetched_at"
                    f" RETURNING {_COLUMNS}",
                    (self._upstream, *_values(record)),
                ).fetchone()
                if row is None:  # another node recorded a later fetch: that one stands
                    row, replaced = held, ""
        except DatabaseUnavailable as exc:
            raise SharedListUnavailable(str(exc)) from None
        assert row is not None
        return _record(row), replaced


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as reader:
        while chunk := await asyncio.to_thread(reader.read, _READ):
            yield chunk


def _values(record: SharedListRecord) -> tuple[object, ...]:
    return (record.revision, record.url, record.content_type, record.etag,
            record.last_modified, record.fetched_at, record.object, record.size)
