"""One download per file for the whole cluster (see stores.clusterblobs for the layers).

`ClusterFlight.body` is what a node's local BlobCache downloads from on a miss, so only the one
worker process of a node that downloads the key runs it. It takes the first of: the bucket, if
the index lists the key; the lead, if it gets `blob:<key>`'s advisory lock (then it streams
upstream into the local part file, names this node in `cache_inflight`, and a publisher task
copies the verified bytes into the bucket and the index, then lets go of the lock); the leader
node, whose part file it tails (stores.peers); else it waits a few ms and looks again.

A follower whose leader dies takes the lock (freed when the leader's connection closes) and
carries on upstream from the byte it had reached: the key is the body's sha256, so the bytes are
the same; a body with no sha256 listed cannot be joined from two sources and fails cleanly
instead (the client sees an aborted download, never wrong bytes). A lock held for `_PATIENCE_S`
with no leader to follow (a hung node) is gone around: the file is fetched and served, not
shared.

A read from the bucket is checked against the index's row (clustershare.checked): an object
damaged in the bucket is removed with its row, and the request goes on to the next source (in
effect upstream) if none of the object's bytes were handed on yet, which is so for an object
read in one chunk (up to 1 MiB); otherwise its check can only fail at its end, once the first
chunks have gone to the client, who then sees an aborted download, and the next request fetches
the file anew. The local cache never sees such a body end, so it is not taken for a mismatch
of upstream's.

`asker` is the same for the local cache's fetch_first: the leader calls the `ask` (BlobCache's),
inside the cluster's single flight, and an `ask` that gives no body lets the lead go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar

from pyproxy.model import LocalFile, Unavailable
from pyproxy.stores.blobcache import Ask, BlobCache, OpenUpstream
from pyproxy.stores.chunks import read_file, skip
from pyproxy.stores.clustershare import DamagedObject, SharedFiles, checked, object_key
from pyproxy.stores.flight import NothingAsked
from pyproxy.stores.objects import BucketUnavailable, ObjectMissing
from pyproxy.stores.peers import PeerFailed, Peers
from pyproxy.stores.pg.claims import Claim, claim_download
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.locks import AdvisoryLocks, HeldLock

__all__ = ["ClusterFlight", "NotInFlight", "db", "refuse"]

log = logging.getLogger("pyproxy.clusterblobs")

_POLL_MIN = 0.002  # seconds between looks while another node starts its download
_POLL_MAX = 0.05
_PATIENCE_S = 10.0  # a lock held this long with no leader to follow: fetch upstream anyway
_T = TypeVar("_T")


class NotInFlight(NothingAsked):
    """Asked for bytes this node neither has nor is downloading."""


@contextlib.asynccontextmanager
async def refuse() -> AsyncIterator[AsyncIterator[bytes]]:
    """The "upstream" of a look at the local cache that must never download."""
    raise NotInFlight("not downloading that file here")
    yield  # pragma: no cover - an async generator that never yields


class ClusterFlight:
    def __init__(
        self, local: BlobCache, shared: SharedFiles, locks: AdvisoryLocks, peers: Peers,
        node_url: str,
    ) -> None:
        self.local = local
        self.shared = shared
        self.node_url = node_url
        self._index = shared.index
        self._locks = locks
        self._peers = peers
        self.tasks: set[asyncio.Task[None]] = set()  # publishers

    def opener(
        self, key: str, sha256: str | None, size: int | None, open_upstream: OpenUpstream,
        filename: str | None,
    ) -> OpenUpstream:
        """The cluster's download of `key`, as an "upstream" for the local cache."""

        @contextlib.asynccontextmanager
        async def cluster_body() -> AsyncIterator[AsyncIterator[bytes]]:
            body = self.body(key, sha256, size, open_upstream, filename)
            try:
                yield body
            finally:
                await body.aclose()

        return cluster_body

    def from_bucket(self, key: str, sha256: str, size: int) -> OpenUpstream:
        """The shared copy of a key the index lists (with that `sha256` and `size`), as an
        "upstream" for the local cache: for offline mode, which must never reach upstream (nor
        lead a download)."""

        @contextlib.asynccontextmanager
        async def bucket_body() -> AsyncIterator[AsyncIterator[bytes]]:
            body = self._bucket_chunks(key, sha256, size)
            try:
                yield body
            finally:
                await body.aclose()

        return bucket_body

    async def _bucket_chunks(self, key: str, sha256: str, size: int) -> AsyncGenerator[bytes, None]:
        name = object_key(key)
        try:
            async for chunk in checked(self.shared.bucket.stream(name), name, sha256, size):
                yield chunk
        except ObjectMissing:
            log.warning("the index lists %r, the bucket has no object: forgetting it", key)
            await db(self._index.forget, key)
            raise Unavailable(f"{key!r} is gone from the bucket") from None
        except DamagedObject as exc:  # offline: nowhere else to go
            raise Unavailable(await self._damaged(key, sha256, size, exc)) from None
        except BucketUnavailable as exc:
            raise Unavailable(str(exc)) from None

    async def _damaged(self, key: str, sha256: str, size: int, exc: DamagedObject) -> str:
        """Log the damaged object and remove it (stores.clustershare.forget_damaged): what to
        tell the request that read it."""
        name = object_key(key)
        log.error("damaged object in the bucket: %s (%s): removing it and its index row, so"
                  " that %r is fetched anew", name, exc, key)
        said = f"the cluster's copy of {key!r} in the bucket is damaged ({exc})"
        try:
            if await self.shared.forget_damaged(key, sha256, size):
                return f"{said}; it is removed, and fetched anew by the next request"
        except (BucketUnavailable, DatabaseUnavailable) as err:
            log.warning("could not remove the damaged %s: %s", name, err)
            return f"{said}, and could not be removed: {err}"
        log.info("%s: left to the node that holds its lock, or committed anew meanwhile", name)
        return f"{said}; another node is fetching it anew"

    def asker(
        self, key: str, sha256: str | None, size: int | None, ask: Ask, filename: str | None,
    ) -> Ask:
        """The cluster's `ask` for the local cache's fetch_first of `key`: run by the one
        worker of the node that would download, it gives the cluster's download of `key` as
        `body` does, where only a node that leads (holding `blob:<key>`'s lock) calls `ask`.
        None when that `ask` gives no body: the lock is let go at once, nothing is shared, and
        the nodes following meanwhile look again (one then leads and asks on its own). So the
        answer is known before a byte is handed on: a download from the bucket or a leader
        node is returned once its first bytes are in."""

        async def cluster_ask() -> OpenUpstream | None:
            body = self.body(key, sha256, size, None, filename, ask=ask)
            try:
                first = await anext(body)
            except _Declined:
                return None
            except StopAsyncIteration:  # an empty file
                first = b""
            except BaseException:
                await body.aclose()
                raise

            @contextlib.asynccontextmanager
            async def cluster_body() -> AsyncIterator[AsyncIterator[bytes]]:
                chunks = _after(first, body)
                try:
                    yield chunks
                finally:
                    await chunks.aclose()
                    await body.aclose()

            return cluster_body

        return cluster_ask

    async def body(
        self, key: str, sha256: str | None, size: int | None, open_upstream: OpenUpstream | None,
        filename: str | None, *, ask: Ask | None = None,
    ) -> AsyncGenerator[bytes, None]:
        sent = 0  # bytes handed on: a source taken over later starts after them
        damaged = False  # a damaged object found in the bucket once (then gone) in this request
        delay = _POLL_MIN
        give_up = time.monotonic() + _PATIENCE_S
        while True:
            if sent and sha256 is None:
                raise Unavailable(f"the download of {key!r} broke off, and with no sha256 listed"
                                  " it cannot be continued from another source")
            claim = await self._claim(key, sha256)
            if claim.committed is not None:
                name, before = object_key(key), sent
                try:
                    # checked from its first byte: the bytes `sent` are skipped after the check
                    object_chunks = checked(self.shared.bucket.stream(name), name,
                                            *claim.committed)
                    async for chunk in skip(object_chunks, sent):
                        sent += len(chunk)
                        yield chunk
                    return
                except ObjectMissing:
                    log.warning("the index lists %r, the bucket has no object: forgetting it", key)
                    await db(self._index.forget, key)
                    continue
                except DamagedObject as exc:
                    message = await self._damaged(key, *claim.committed, exc)
                    if sent > before or damaged:  # its wrong bytes went on; or it came back
                        raise Unavailable(message) from None
                    damaged = True
                    continue  # none of it went on: the next source (upstream, once it is gone)
                except BucketUnavailable as exc:
                    raise Unavailable(str(exc)) from None
            if claim.lock is not None:
                upstream = await self._upstream(key, open_upstream, ask, sent, claim.lock)
                self._lead(key, claim.lock, sha256, size, filename)
                async with upstream() as body:
                    async for chunk in skip(body, sent):
                        sent += len(chunk)
                        yield chunk
                return
            leader = claim.leader
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
                upstream = await self._upstream(key, open_upstream, ask, sent, None)
                async with upstream() as body:
                    async for chunk in skip(body, sent):
                        sent += len(chunk)
                        yield chunk
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    async def _upstream(
        self, key: str, open_upstream: OpenUpstream | None, ask: Ask | None, sent: int,
        lock: HeldLock | None,
    ) -> OpenUpstream:
        """What to download from upstream: `open_upstream`, or the body `ask` gives. When it
        gives none, the lead (`lock`, and this node's name in cache_inflight) is let go, and
        that is _Declined, or, once bytes were handed on (a leader died midway), Unavailable."""
        if ask is None:
            assert open_upstream is not None
            return open_upstream
        try:
            asked = await ask()
        except BaseException:
            if lock is not None:  # not awaited: a cancelled request lets go of it too
                asyncio.get_running_loop().run_in_executor(None, self._let_go_lead, key, lock)
            raise
        if asked is not None:
            return asked
        if lock is not None:
            await asyncio.to_thread(self._let_go_lead, key, lock)
        if sent:
            raise Unavailable(f"the download of {key!r} broke off, and upstream now answers"
                              " with no body to continue it from")
        raise _Declined(f"no download of {key!r} after all")

    def _let_go_lead(self, key: str, lock: HeldLock) -> None:
        """Blocking: end a lead that downloads nothing (no publisher was started for it)."""
        try:
            self._index.done(key, self.node_url)
        except DatabaseUnavailable as exc:  # the next leader overwrites the row
            log.debug("could not end the download of %r: %s", key, exc)
        self._locks.release(lock)

    async def _claim(self, key: str, sha256: str | None) -> Claim:
        """claim_download in a thread; a request cancelled meanwhile lets go of a lock the
        thread took for it (else it would be held until the process exits)."""
        claiming = asyncio.ensure_future(
            db(claim_download, self._locks, key, sha256, self.node_url)
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            claiming.add_done_callback(self._let_go)
            raise

    def _let_go(self, claiming: asyncio.Future[Claim]) -> None:
        if claiming.cancelled() or claiming.exception() is not None:
            return
        lock = claiming.result().lock
        if lock is not None:
            asyncio.get_running_loop().run_in_executor(None, self._locks.release, lock)

    def _lead(
        self, key: str, lock: HeldLock, sha256: str | None, size: int | None,
        filename: str | None,
    ) -> None:
        """This node leads (named in cache_inflight, holding `key`'s lock): start the
        publisher, which lets go of the lock when done."""
        task = asyncio.create_task(self._publish(key, lock, sha256, size, filename),
                                   name=f"publish {key}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _publish(
        self, key: str, lock: HeldLock, sha256: str | None, size: int | None,
        filename: str | None,
    ) -> None:
        """Copy the verified download into the bucket and the index, then let go of the lead."""
        published = False
        try:
            # this process's own download, joined: its stream ends once the body is verified
            source = await self.local.fetch(
                key, sha256=sha256, size=size, open_upstream=refuse, filename=filename
            )
            chunks = read_file(source.path) if isinstance(source, LocalFile) else source.chunks
            digest, length = await self.shared.upload(key, chunks, sha256=sha256, size=size)
            await db(functools.partial(self.shared.index.add, leader=self.node_url),
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
                await asyncio.to_thread(self.shared.evict, self.shared.max_size, key)
            except (DatabaseUnavailable, BucketUnavailable) as exc:
                log.warning("could not evict from the shared cache: %s", exc)


class _Declined(Unavailable):
    """The `ask` of the node that leads gave no body to download (see ClusterFlight.asker)."""


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def db(func: Callable[..., _T], *args: object) -> _T:
    """A blocking index call in a thread; a database that cannot be reached is Unavailable."""
    try:
        return await asyncio.to_thread(func, *args)
    except DatabaseUnavailable as exc:
        raise Unavailable(str(exc)) from None
