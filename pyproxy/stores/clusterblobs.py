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

A local miss is one cluster download (stores.clusterflight), through the local BlobCache so
that the node's workers share it and it ends in a verified local copy; `serve_inflight` is the
leader's side of it, for web/inflight.py. Eviction and listings are stores.clustershare's.
Offline mode on a node serves what the cluster holds (`present`, `cached`): its local copies,
and the bucket's copied into them, never upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyproxy.model import FileSource, Forbidden, LocalFile, NotFound
from pyproxy.stores.blobcache import Ask, BlobCache, OpenUpstream
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.blobuses import FLUSH_INTERVAL, Uses
from pyproxy.stores.chunks import read_file
from pyproxy.stores.clusterflight import ClusterFlight, db, refuse
from pyproxy.stores.clustershare import SharedFiles, object_key
from pyproxy.stores.objects import Bucket
from pyproxy.stores.peers import Peers, token_holds
from pyproxy.stores.pg.blobindex import PgBlobIndex
from pyproxy.stores.pg.claims import warm_claims
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.locks import AdvisoryLocks

log = logging.getLogger("pyproxy.cluster")

__all__ = ["ClusterBlobCache", "object_key", "open_cluster_blobs"]

_V = TypeVar("_V")


class ClusterBlobCache:
    def __init__(
        self, local: BlobCache, index: PgBlobIndex, locks: AdvisoryLocks, bucket: Bucket, *,
        node_url: str, max_size: int, secret: str, flush_interval: float = FLUSH_INTERVAL,
        database: Database | None = None,
    ) -> None:
        self.local = local
        self.max_size = max_size
        self.node_url = node_url.rstrip("/")
        self._index = index
        self._locks = locks
        self._secret = secret
        self._peers = Peers(secret)
        self._uses = Uses(index.touch, flush_interval, failures=(DatabaseUnavailable,))
        self.shared = SharedFiles(index, locks, bucket, self._uses, max_size)
        self._flight = ClusterFlight(local, self.shared, locks, self._peers, self.node_url)
        # the index's connections, closed last; renewed once the server is back (`reset`)
        self.database = database
        self._closed = False

    # -- the interface (stores.blobcache.BlobCache's) -------------------------------------------

    async def fetch(
        self, key: str, *, sha256: str | None, size: int | None, open_upstream: OpenUpstream,
        filename: str | None = None,
    ) -> FileSource:
        """As BlobCache.fetch, for the cluster: the local copy, else the one download of the
        cluster (from the bucket, the leader node, or upstream). Unavailable when the database
        or (for a file the cluster holds) the bucket cannot be reached."""
        self._uses.attach(asyncio.get_running_loop())
        sha256 = sha256.lower() if sha256 else None
        cluster_body = self._flight.opener(key, sha256, size, open_upstream, filename)
        source = await self.local.fetch(
            key, sha256=sha256, size=size, open_upstream=cluster_body, filename=filename
        )
        self._uses.note(key)
        return source

    async def fetch_first(
        self, key: str, *, sha256: str | None, size: int | None, ask: Ask,
        filename: str | None = None,
    ) -> FileSource | None:
        """As BlobCache.fetch_first, for the cluster: `ask` is called only by the node that
        leads the cluster's download of `key` (in the one worker of it that downloads), never
        when the local copy, the bucket or another node's download has it. None when it gives
        no body: nothing is cached or shared, and whoever followed meanwhile, on this node or
        another, looks again (and asks on its own)."""
        self._uses.attach(asyncio.get_running_loop())
        sha256 = sha256.lower() if sha256 else None
        cluster_ask = self._flight.asker(key, sha256, size, ask, filename)
        source = await self.local.fetch_first(
            key, sha256=sha256, size=size, ask=cluster_ask, filename=filename
        )
        if source is not None:
            self._uses.note(key)
        return source

    async def hit(self, key: str, *, sha256: str | None, size: int | None) -> LocalFile | None:
        """The node's local copy if it is the file announced (a use), starting nothing."""
        hit = await self.local.hit(key, sha256=sha256, size=size)
        if hit is not None:
            self._uses.note(key)
        return hit

    def mismatched(self, key: str) -> bool:
        """Whether this node's download of `key` failed its hash check (lately)."""
        return self.local.mismatched(key)

    def lookup(self, key: str) -> LocalFile | None:
        """The node's local copy, or None (blocking; a use)."""
        hit = self.local.lookup(key)
        if hit is not None:
            self._uses.note(key)
        return hit

    def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` the cluster holds: this node's copies, then the shared index in one
        query (only this node's when the database cannot be reached). For offline mode, which
        asks again every few seconds, not on each request."""
        found = self.local.present(keys)
        rest = [key for key in keys if key not in found]
        if rest:
            try:
                found |= self.shared.index.present(rest)
            except DatabaseUnavailable as exc:
                log.debug("cached files unknown beyond this node's: %s", exc)
        return found

    async def cached(self, key: str, *, filename: str | None = None) -> FileSource | None:
        """For offline mode, never upstream: this node's copy, else the cluster's, copied from
        the bucket into the local copies as a miss would be (streamed as it comes, verified
        against the index). None if the cluster does not hold it; Unavailable when the
        database or the bucket cannot be reached. A use."""
        hit = await asyncio.to_thread(self.lookup, key)
        if hit is not None:
            return hit
        blob = await db(self._index.get, key)
        if blob is None:
            return None
        self._uses.attach(asyncio.get_running_loop())
        source = await self.local.fetch(
            key, sha256=blob.sha256, size=blob.size,
            open_upstream=self._flight.from_bucket(key, blob.sha256, blob.size),
            filename=filename,
        )
        self._uses.note(key)
        return source

    def digests(self, keys: list[str]) -> dict[str, str]:
        """The sha256 of each of `keys` the cluster holds: this node's copies, then the shared
        index (only this node's when the database cannot be reached)."""
        return self._held(keys, self.local.digests, self.shared.index.digests)

    def sizes(self, keys: list[str]) -> dict[str, int]:
        """The byte length of each of `keys` the cluster holds, as `digests` (not a use)."""
        return self._held(keys, self.local.sizes, self.shared.index.sizes)

    def _held(
        self, keys: list[str], local: Callable[[list[str]], dict[str, _V]],
        shared: Callable[[list[str]], dict[str, _V]],
    ) -> dict[str, _V]:
        found = local(keys)
        rest = [key for key in keys if key not in found]
        if rest:
            try:
                found.update(shared(rest))
            except DatabaseUnavailable as exc:
                log.debug("cached files unknown beyond this node's: %s", exc)
        return found

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
        for task in list(self._flight.tasks):
            with contextlib.suppress(RuntimeError):
                task.cancel()
        self._uses.close()
        self.local.close()
        self._locks.close()  # its connections' locks go with them
        if self.database is not None:
            self.database.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._flight.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._uses.aclose()
        await self._peers.close()
        await self.local.aclose()
        await asyncio.to_thread(self._locks.close)
        if self.database is not None:
            self.database.close()

    # -- for the leader's route (web/inflight.py) ------------------------------------------------

    async def serve_inflight(self, key: str, token: str | None) -> FileSource:
        """What this node has of a download it leads, for another node of the cluster."""
        if not token_holds(self._secret, key, token):
            raise Forbidden("only the nodes of this cluster may follow its downloads")
        leader = await db(self._index.leader, key)
        if leader != self.node_url:
            raise NotFound(f"{key!r} is not being downloaded on this node")
        return await self.local.fetch(key, sha256=None, size=None, open_upstream=refuse)

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
        await db(self.shared.index.add, key, digest, length)
        return digest, length


def open_cluster_blobs(
    *, database: str, objects: str, s3_endpoint: str, node_url: str, directory: Path,
    max_size: int, local_max_size: int, flush_interval: float = FLUSH_INTERVAL,
) -> ClusterBlobCache:
    """A node's cache: its schema migrated (safe when several nodes start at once), its lock
    connection open. DatabaseUnavailable when PostgreSQL cannot be reached."""
    pg = Database(database, max_size=4)  # migrated as it opens
    try:
        index = PgBlobIndex(pg)
        secret = index.secret()
        locks = AdvisoryLocks(database)
        warm_claims(locks)  # also opens the connection the first claim takes
        if node_url:  # a node (not an operator's command)
            _say_other_bounds(node_url, max_size, index.other_bounds(node_url, max_size))
    except BaseException:
        pg.close()
        raise
    return ClusterBlobCache(
        BlobCache(directory, local_max_size, flush_interval=flush_interval), index, locks,
        Bucket(objects, endpoint=s3_endpoint), node_url=node_url, max_size=max_size,
        secret=secret, flush_interval=flush_interval, database=pg,
    )


def _say_other_bounds(node_url: str, max_size: int, others: dict[str, int]) -> None:
    """Each node evicts the shared cache down to its own [cache] max_size: one set lower than
    the others' shrinks the cache for all of them, unsaid but for this."""
    if not others:
        return
    said = ", ".join(f"{node} {size} bytes" for node, size in others.items())
    log.warning("[cache] max_size is %d bytes on this node (%s), and differs on others: %s; the"
                " smallest bound evicts the shared cache for all: set the same on every node",
                max_size, node_url, said)
