"""Upstream files for a node of a cluster: a local copy on each node, one shared copy in the
bucket, one upstream GET per file for the whole cluster.

Layers, warmest first:

    local    a BlobCache in data_dir ([cache] local_max_size): verified files sent with
             sendfile, one download per key among the node's workers. A hit is a hit of the
             local cache only: no PostgreSQL, no bucket; its use is noted in memory and written
             to the index in batches.
    bucket   `cache/<key>`, written once (conditional create) with bytes whose size and sha256
             matched, and recorded in the PostgreSQL index (stores.pg.blobindex), which bounds
             the shared cache by [cache] max_size cluster-wide.
    upstream fetched by one node, the leader, which holds `blob:<key>`'s advisory lock for
             the whole download and names itself in `cache_inflight`.

A local miss goes to the local BlobCache with `_body` as its "upstream", so only the one worker
process of a node that downloads the key runs it; it takes the first of: the bucket, if the
index lists the key; the lead, if it gets the lock (then streams upstream into the local part
file, and a publisher task copies the verified bytes into the bucket); the leader node, whose
part file it tails (stores.peers); else it waits a few ms and looks again. A follower whose
leader dies takes the lock (freed when the leader's connection closes) and carries on upstream
from the byte it had reached: the key is the body's sha256, so the bytes are the same; a key
without a sha256 cannot be joined from two sources, and fails cleanly instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from pyproxy.model import FileSource, Forbidden, LocalFile, NotFound, Unavailable
from pyproxy.stores.blobcache import BlobCache, BlobEntry, OpenUpstream
from pyproxy.stores.blobindex import FLUSH_INTERVAL
from pyproxy.stores.chunks import read_file, skip
from pyproxy.stores.clustershare import SharedFiles, object_key
from pyproxy.stores.clusteruses import PendingUses
from pyproxy.stores.objects import Bucket, BucketUnavailable, ObjectMissing
from pyproxy.stores.peers import PeerFailed, Peers, token_holds
from pyproxy.stores.pg.blobindex import IndexedBlob, PgBlobIndex
from pyproxy.stores.pg.connect import DatabaseUnavailable, open_pool
from pyproxy.stores.pg.locks import AdvisoryLocks, HeldLock
from pyproxy.stores.pg.migrations import migrate

__all__ = ["ClusterBlobCache", "object_key", "open_cluster_blobs"]

log = logging.getLogger("pyproxy.clusterblobs")

_POLL_MIN = 0.002  # seconds between looks while another node starts its download
_POLL_MAX = 0.05
_PATIENCE_S = 10.0  # a lock held this long with no leader to follow: fetch upstream anyway
_T = TypeVar("_T")


class NotInFlight(Unavailable):
    """Asked for bytes this node neither has nor is downloading."""


@contextlib.asynccontextmanager
async def _refuse() -> AsyncIterator[AsyncIterator[bytes]]:
    raise NotInFlight("not downloading that file here")
    yield  # pragma: no cover - an async generator that never yields


class ClusterBlobCache:
    def __init__(
        self, local: BlobCache, index: PgBlobIndex, locks: AdvisoryLocks, bucket: Bucket, *,
        node_url: str, max_size: int, secret: str, flush_interval: float = FLUSH_INTERVAL,
        on_close: tuple[contextlib.AbstractContextManager[object], ...] = (),
    ) -> None:
        self.local = local
        self.max_size = max_size
        self.node_url = node_url.rstrip("/")
        self._index = index
        self._locks = locks
        self._secret = secret
        self._peers = Peers(secret)
        self._uses = PendingUses(index.touch, flush_interval)
        self.shared = SharedFiles(index, locks, bucket, self._uses, max_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_close = on_close  # the pool, closed last
        self._closed = False

    # -- the interface (stores.blobcache.BlobCache's) -------------------------------------------

    async def fetch(
        self, key: str, *, sha256: str | None, size: int | None, open_upstream: OpenUpstream,
        filename: str | None = None,
    ) -> FileSource:
        """As BlobCache.fetch, for the cluster: the local copy, else the one download of the
        cluster (from the bucket, the leader node, or upstream). Unavailable when the database
        or (for a file the cluster holds) the bucket cannot be reached."""
        self._uses.start()
        sha256 = sha256.lower() if sha256 else None

        @contextlib.asynccontextmanager
        async def cluster_body() -> AsyncIterator[AsyncIterator[bytes]]:
            body = self._body(key, sha256, size, open_upstream, filename)
            try:
                yield body
            finally:
                await body.aclose()

        source = await self.local.fetch(
            key, sha256=sha256, size=size, open_upstream=cluster_body, filename=filename
        )
        self._uses.note(key)
        return source

    def lookup(self, key: str) -> LocalFile | None:
        """The node's local copy, or None (blocking; a use)."""
        hit = self.local.lookup(key)
        if hit is not None:
            self._uses.note(key)
        return hit

    def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` this node can send without a download (its local copies)."""
        return self.local.present(keys)

    def flush_uses(self) -> int:
        """Blocking: write the uses noted here to the local index and the cluster's."""
        return self.local.flush_uses() + self._uses.flush()

    def volume(self) -> int:
        """Bytes the shared cache holds (what max_size bounds), cluster-wide."""
        return self.shared.volume()

    def entries(self) -> list[BlobEntry]:
        """Every file the cluster holds, least recently used first; `path` is its object's key
        in the bucket."""
        self.flush_uses()
        return self.shared.entries()

    def delete(self, key: str) -> bool:
        """Remove a file from the cluster's cache (and this node's copy)."""
        return self.shared.delete(key) | self.local.delete(key)

    def free_body(self, entry: BlobEntry) -> None:
        self.shared.bucket.delete(object_key(entry.key))

    def shrink_to(self, limit: int) -> list[tuple[str, int]]:
        """Evict least recently used files cluster-wide until at most `limit` bytes remain
        (nothing if another node is evicting now)."""
        return self.shared.evict(limit)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            with contextlib.suppress(RuntimeError):
                task.cancel()
        self._uses.close()
        self.local.close()
        self._locks.close()  # its connections' locks go with them
        for resource in self._on_close:
            resource.__exit__(None, None, None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._uses.aclose()
        await self._peers.close()
        await self.local.aclose()
        await asyncio.to_thread(self._locks.close)
        for resource in self._on_close:
            resource.__exit__(None, None, None)

    # -- for the leader's route (web/inflight.py) ------------------------------------------------

    async def serve_inflight(self, key: str, token: str | None) -> FileSource:
        """What this node has of a download it leads, for another node of the cluster."""
        if not token_holds(self._secret, key, token):
            raise Forbidden("only the nodes of this cluster may follow its downloads")
        leader = await _db(self._index.leader, key)
        if leader != self.node_url:
            raise NotFound(f"{key!r} is not being downloaded on this node")
        return await self.local.fetch(key, sha256=None, size=None, open_upstream=_refuse)

    # -- one download for the cluster ------------------------------------------------------------

    async def _body(
        self, key: str, sha256: str | None, size: int | None, open_upstream: OpenUpstream,
        filename: str | None,
    ) -> AsyncGenerator[bytes, None]:
        sent = 0  # bytes handed on: a source taken over later starts after them
        delay = _POLL_MIN
        give_up = time.monotonic() + _PATIENCE_S
        while True:
            if sent and sha256 is None:
                raise Unavailable(f"the download of {key!r} broke off, and with no sha256 listed"
                                  " it cannot be continued from another source")
            blob = await self._committed(key, sha256)
            if blob is not None:
                try:
                    async for chunk in skip(self.shared.bucket.stream(object_key(key)), sent):
                        sent += len(chunk)
                        yield chunk
                    return
                except ObjectMissing:
                    log.warning("the index lists %r, the bucket has no object: forgetting it", key)
                    await _db(self._index.forget, key)
                    continue
                except BucketUnavailable as exc:
                    raise Unavailable(str(exc)) from None
            lock = await _db(self._locks.try_lock, "blob:" + key)
            if lock is not None:
                if await self._lead(key, lock, sha256, size, filename):
                    async with open_upstream() as body:
                        async for chunk in skip(body, sent):
                            sent += len(chunk)
                            yield chunk
                    return
                continue  # committed meanwhile: from the bucket
            leader = await _db(self._index.leader, key)
            if leader is not None and leader != self.node_url:
                before = sent
                try:
                    async for chunk in self._peers.stream(leader, key, offset=sent):
                        sent += len(chunk)
                        yield chunk
                    return
                except PeerFailed as exc:
                    log.info("following %r on %s stopped after %d bytes: %s", key, leader,
                             sent, exc)
                if sent > before:
                    give_up, delay = time.monotonic() + _PATIENCE_S, _POLL_MIN
            if time.monotonic() > give_up:
                log.warning("%r stayed locked for %gs with no node to follow: fetching it"
                            " from upstream without sharing it", key, _PATIENCE_S)
                async with open_upstream() as body:
                    async for chunk in skip(body, sent):
                        sent += len(chunk)
                        yield chunk
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    async def _committed(self, key: str, sha256: str | None) -> IndexedBlob | None:
        blob = await _db(self._index.get, key)
        if blob is not None and sha256 is not None and blob.sha256 != sha256:
            log.warning("the index has %r with another sha256 (%s): not using it", key,
                        blob.sha256)
            return None
        return blob

    async def _lead(
        self, key: str, lock: HeldLock, sha256: str | None, size: int | None,
        filename: str | None,
    ) -> bool:
        """With `key`'s lock: False (lock released) if it was committed meanwhile; else name
        this node the leader and start the publisher, which releases the lock when done."""
        try:
            if await self._committed(key, sha256) is not None:
                await asyncio.to_thread(self._locks.release, lock)
                return False
            await _db(self._index.lead, key, self.node_url)
        except BaseException:
            await asyncio.to_thread(self._locks.release, lock)
            raise
        task = asyncio.create_task(self._publish(key, lock, sha256, size, filename),
                                   name=f"publish {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _publish(
        self, key: str, lock: HeldLock, sha256: str | None, size: int | None,
        filename: str | None,
    ) -> None:
        """Copy the verified download into the bucket and the index, then let go of the lead."""
        published = False
        try:
            # this process's own download, joined: its stream ends once the body is verified
            source = await self.local.fetch(
                key, sha256=sha256, size=size, open_upstream=_refuse, filename=filename
            )
            chunks = read_file(source.path) if isinstance(source, LocalFile) else source.chunks
            digest, length = await self.shared.upload(key, chunks, sha256=sha256, size=size)
            await _db(functools.partial(self.shared.index.add, leader=self.node_url),
                      key, digest, length)
            published = True
            log.debug("shared %r (%d bytes) with the cluster", key, length)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%r is not shared with the cluster: %s", key, exc)
        finally:
            if not published:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.shared.index.done, key, self.node_url)
            await asyncio.to_thread(self._locks.release, lock)
        if published:
            try:
                await asyncio.to_thread(self.shared.evict, self.max_size, key)
            except (DatabaseUnavailable, BucketUnavailable) as exc:
                log.warning("could not evict from the shared cache: %s", exc)

    async def share_local(
        self, key: str, *, sha256: str | None = None, size: int | None = None
    ) -> tuple[str, int]:
        """Copy this node's local copy of `key` into the shared cache (a no-op if the cluster
        holds it already): its (sha256, size). KeyError if there is no local copy."""
        hit = await asyncio.to_thread(self.local.lookup, key)
        if hit is None:
            raise KeyError(key)
        digest, length = await self.shared.upload(
            key, read_file(hit.path), sha256=sha256 or hit.sha256, size=size or hit.size
        )
        await _db(self.shared.index.add, key, digest, length)
        return digest, length


async def _db(func: Callable[..., _T], *args: object) -> _T:
    """A blocking index call in a thread; a database that cannot be reached is Unavailable."""
    try:
        return await asyncio.to_thread(func, *args)
    except DatabaseUnavailable as exc:
        raise Unavailable(str(exc)) from None



def open_cluster_blobs(
    *, database: str, objects: str, s3_endpoint: str, node_url: str, directory: Path,
    max_size: int, local_max_size: int, flush_interval: float = FLUSH_INTERVAL,
) -> ClusterBlobCache:
    """A node's cache: its schema migrated (safe when several nodes start at once), its lock
    connection open. DatabaseUnavailable when PostgreSQL cannot be reached."""
    pool = open_pool(database, max_size=4)
    try:
        with pool.connection() as conn:
            migrate(conn)
        index = PgBlobIndex(pool)
        secret = index.secret()
        locks = AdvisoryLocks(database)
        locks.warm()
    except BaseException:
        pool.close()
        raise
    return ClusterBlobCache(
        BlobCache(directory, local_max_size, flush_interval=flush_interval), index, locks,
        Bucket(objects, endpoint=s3_endpoint), node_url=node_url, max_size=max_size,
        secret=secret, flush_interval=flush_interval, on_close=(pool,),
    )
