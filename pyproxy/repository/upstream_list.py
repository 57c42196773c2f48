"""Upstream's project list (the `/simple/` root): fetched to disk, never into memory.

The list is about a million names on a real index. Its answer is streamed into a temp file,
then read into an on-disk database in a thread (stores/project_list.py), and what this
returns is a ProjectList over that database: the layers above filter and merge it lazily and
the web layer renders it to files, so no worker holds the names. The rules are the pages'
(repository/upstream.py): fresh for `index_ttl`, then revalidated with If-None-Match /
If-Modified-Since (a 304, or an unchanged body, builds nothing); on an outage or garbage the
copy is served (30 s of back-off) or, without one, Unavailable; one upstream request however
many clients and workers ask (single flight here, the page store's lock across processes).

On a cluster node (`PageCache.shared_list`) it is one upstream request for the whole cluster:
a node whose copy is stale takes the copy another node recorded while it is fresh (its raw body
streamed from the bucket, built here), else takes the cluster's turn and fetches it for all,
revalidating the recorded copy. Every node counts its copy as fetched when the record says, so
they go stale together. With the database or the bucket out of reach, a node fetches its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable
from pathlib import Path

from pyproxy import metrics
from pyproxy.formats.answers import JSON_TYPE, Emptied, NotASimplePage
from pyproxy.lru import SingleFlight
from pyproxy.model import ProjectList, Unavailable
from pyproxy.repository.http import UpstreamClient, redact
from pyproxy.repository.http_answers import UpstreamError
from pyproxy.stores.pages import INDEX_KEY, PageCache, UpstreamFormatError
from pyproxy.stores.project_list import (
    ListRecord,
    SharedList,
    SharedListRecord,
    SharedListUnavailable,
)

__all__ = ["UpstreamList"]

log = logging.getLogger("pyproxy.upstream")

_RETRY_AFTER_FAILURE_S = 30.0
_LOCK_MARGIN_S = 10.0  # beyond a fetch's deadline, how long to wait for another's fetch and build
_BUILD_ALLOWANCE_S = 120.0


def upstream_failure(exc: UpstreamError | UpstreamFormatError, client: UpstreamClient) -> str:
    """What went wrong with a page or list fetch, as the logs and a 503 say it; an answer that
    came but is not the page is counted as refused and noted for /ready."""
    if not isinstance(exc, UpstreamFormatError):
        return str(exc)
    kind = "emptied" if isinstance(exc, Emptied) else (
        "not_a_page" if isinstance(exc, NotASimplePage) else "malformed")
    metrics.REFUSED_PAGES.labels(kind).inc()
    client.answer_unusable()
    return f"answered 200 with something that is not the page: {exc}"


def _spoke_json(record: ListRecord | None) -> bool:
    if record is None or not record.content_type:
        return False
    return record.content_type.split(";")[0].strip().lower() == JSON_TYPE


class UpstreamList:
    """The project list of one upstream index."""

    def __init__(self, client: UpstreamClient, pages: PageCache, *, ttl: float) -> None:
        self.client = client
        self.store = pages.project_list
        self._pages = pages
        self.ttl = ttl
        self._known: tuple[float, ProjectList] | None = None  # (counts as fetched at, list)
        self._missing_since: float | None = None  # upstream answered 404 for the list
        self._refreshing: SingleFlight[str, ProjectList] = SingleFlight()

    async def get(self) -> ProjectList:
        now = time.time()
        if self._known is not None and now - self._known[0] < self.ttl:
            return self._known[1]  # the warm path: no disk
        if self._missing_since is not None and now - self._missing_since < self.ttl:
            raise self._missing()
        # another worker process may have refreshed it meanwhile
        record = await asyncio.to_thread(self.store.load)
        if record is not None and now - record.fetched_at < self.ttl:
            return self._remember(record)
        return await self._refreshing.run(INDEX_KEY, lambda: self._refresh(record))

    def _remember(self, record: ListRecord, *, fetched_at: float | None = None) -> ProjectList:
        revision = f"u{record.revision}"
        listing = self._known[1] if self._known is not None else None
        if listing is None or listing.revision != revision:
            listing = ProjectList(revision=revision, source=self.store.names(record))
        self._known = (record.fetched_at if fetched_at is None else fetched_at, listing)
        return listing

    def _missing(self) -> Unavailable:
        return Unavailable(f"upstream index {redact(self.client.index_url)} has no project list")

    def _fresh(self, fetched_at: float) -> bool:
        return time.time() - fetched_at < self.ttl

    async def _refresh(self, stale: ListRecord | None) -> ProjectList:
        shared = self._pages.shared_list
        if shared is not None:
            try:
                return await self._refresh_shared(shared, stale)
            except SharedListUnavailable as exc:
                log.warning("the cluster's project list cannot be had (%s): this node fetches"
                            " its own", exc)
        return await self._refresh_here(stale)

    async def _latest(self, stale: ListRecord | None) -> ListRecord | None:
        latest = await asyncio.to_thread(self.store.load)
        if latest is not None and (stale is None or latest.fetched_at > stale.fetched_at):
            return latest
        return stale

    async def _refresh_here(self, stale: ListRecord | None) -> ProjectList:
        patience = self.client.deadline + _LOCK_MARGIN_S + _BUILD_ALLOWANCE_S
        async with self._pages.turn(INDEX_KEY, patience=patience) as turn:
            stale = await self._latest(stale)  # another worker may have refreshed it
            if stale is not None and self._fresh(stale.fetched_at):
                return self._remember(stale)
            try:
                if turn.failure is not None:  # the worker we waited for just tried and failed
                    raise UpstreamError(f"{turn.failure} (the last try, by another worker)")
                record = await self._fetch(stale)
            except (UpstreamError, UpstreamFormatError) as exc:
                problem = upstream_failure(exc, self.client)
                if turn.failure is None:
                    turn.fail(problem)
                return self._stale(stale, problem)
        return self._found(record)

    async def _refresh_shared(self, shared: SharedList, stale: ListRecord | None) -> ProjectList:
        """The cluster's list: the copy another node fetched (its body from the bucket, built
        here), or fetched from upstream by this node for all, one node at a time."""
        patience = self.client.deadline + _LOCK_MARGIN_S + _BUILD_ALLOWANCE_S
        async with self._pages.turn(INDEX_KEY, patience=patience):  # this node's workers
            stale = await self._latest(stale)  # another worker may have refreshed it
            if stale is not None and self._fresh(stale.fetched_at):
                return self._remember(stale)
            head = await asyncio.to_thread(shared.load)
            if head is not None and self._fresh(head.fetched_at):
                return self._remember(await self._adopt(shared, head, stale))
            async with shared.turn(INDEX_KEY, patience=patience) as turn:  # the cluster's
                head = await asyncio.to_thread(shared.load)  # what the node before us saved
                if head is not None and self._fresh(head.fetched_at):
                    return self._remember(await self._adopt(shared, head, stale))
                try:
                    if turn.failure is not None:  # the node we waited for just failed
                        raise UpstreamError(f"{turn.failure} (the last try, by another node)")
                    record = await self._fetch_shared(shared, head, stale)
                except (UpstreamError, UpstreamFormatError) as exc:
                    problem = upstream_failure(exc, self.client)
                    if turn.failure is None:
                        turn.fail(problem)
                    if head is not None and (stale is None or stale.revision != head.revision):
                        with contextlib.suppress(SharedListUnavailable):  # the newest copy
                            stale = await self._adopt(shared, head, stale)
                    return self._stale(stale, problem)
        return self._found(record)

    def _found(self, record: ListRecord | None) -> ProjectList:
        if record is None:
            self._missing_since = time.time()
            raise self._missing()
        self._missing_since = None
        return self._remember(record)

    def _stale(self, stale: ListRecord | None, problem: str) -> ProjectList:
        url = self.client.index_url
        if stale is None:
            log.warning("no copy of %s to serve: upstream %s", url, problem)
            raise Unavailable(f"upstream index unavailable ({problem}) and no copy is cached")
        age = int(time.time() - stale.fetched_at)
        log.warning("serving a stale copy of %s (%d s old): upstream %s", url, age, problem)
        metrics.STALE_PAGES.inc()
        # while upstream hangs, the copy counts as fresh (in memory only) for a short while
        retry_at = time.time() - self.ttl + min(self.ttl, _RETRY_AFTER_FAILURE_S)
        return self._remember(stale, fetched_at=retry_at)

    async def _get(
        self, validators: ListRecord | SharedListRecord | None
    ) -> tuple[int, Path, SharedListRecord]:
        """Upstream's answer, conditional on `validators`: its status, the temp file holding
        its body (the caller removes it) and its record (fetched now; its body's revision)."""
        etag = last_modified = None
        if validators is not None:
            etag, last_modified = validators.etag, validators.last_modified
        path, writer = self.store.download()
        digest = hashlib.blake2b(digest_size=12)

        def sink(chunk: bytes) -> None:
            writer.write(chunk)  # to the page cache: microseconds, not worth a thread hop
            digest.update(chunk)

        try:
            try:
                answer = await self.client.get_page(
                    self.client.index_url, etag=etag, last_modified=last_modified, sink=sink
                )
            finally:
                writer.close()
            if answer.status not in (200, 304, 404):
                raise UpstreamError(f"answered HTTP {answer.status}")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        fetched = SharedListRecord(
            revision=digest.hexdigest(), url=answer.url, content_type=answer.content_type,
            etag=answer.etag, last_modified=answer.last_modified, fetched_at=time.time(),
        )
        return answer.status, path, fetched

    async def _fetch(self, stale: ListRecord | None) -> ListRecord | None:
        """The list fetched (None: upstream has none), built or revalidated on disk."""
        status, path, fetched = await self._get(stale)
        try:
            if status == 304 and stale is not None:
                return await asyncio.to_thread(self.store.refreshed, stale, fetched.fetched_at)
            if status == 404:
                return None
            if status != 200:
                raise UpstreamError(f"answered HTTP {status} to an unconditional request")
            if stale is not None and stale.revision == fetched.revision:
                same = dataclasses.replace(
                    stale, etag=fetched.etag, last_modified=fetched.last_modified
                )
                return await asyncio.to_thread(self.store.refreshed, same, fetched.fetched_at)
            return await self._build(path, fetched, stale)
        finally:
            path.unlink(missing_ok=True)

    async def _fetch_shared(
        self, shared: SharedList, head: SharedListRecord | None, stale: ListRecord | None
    ) -> ListRecord | None:
        """The list fetched for the cluster, revalidating the recorded one (`head`, whose body
        the bucket has): built here, then its body and record shared."""
        status, path, fetched = await self._get(head)
        try:
            if status == 404:
                return None
            if head is not None and (status == 304 or fetched.revision == head.revision):
                renewed = dataclasses.replace(head, fetched_at=fetched.fetched_at)
                if status == 200:
                    renewed = dataclasses.replace(
                        renewed, etag=fetched.etag, last_modified=fetched.last_modified
                    )
                await self._share(asyncio.to_thread(shared.refreshed, renewed))
                return await self._adopt(shared, renewed, stale)
            if status != 200:
                raise UpstreamError(f"answered HTTP {status} to an unconditional request")
            built = await self._build(path, fetched, stale)
            await self._share(shared.publish(fetched, path))
            return built
        finally:
            path.unlink(missing_ok=True)

    async def _share(self, write: Awaitable[object]) -> None:
        try:
            await write
        except SharedListUnavailable as exc:  # this node has it; the others fetch their own
            log.warning("cannot share the project list with the other nodes: %s", exc)

    async def _adopt(
        self, shared: SharedList, head: SharedListRecord, stale: ListRecord | None
    ) -> ListRecord:
        """The cluster's list as this node's own: its body read from the bucket and built here,
        unless this node's copy has its revision already; fetched when `head` says."""
        if stale is not None and stale.revision == head.revision:
            same = dataclasses.replace(stale, etag=head.etag, last_modified=head.last_modified)
            return await asyncio.to_thread(self.store.refreshed, same, head.fetched_at)
        path, writer = self.store.download()
        try:
            writer.close()
            await shared.download(head, path)
            return await self._build(path, head, None)  # checked by the node that fetched it
        finally:
            path.unlink(missing_ok=True)

    async def _build(
        self, path: Path, fetched: SharedListRecord, stale: ListRecord | None
    ) -> ListRecord:
        record = ListRecord(
            revision=fetched.revision, url=fetched.url, content_type=fetched.content_type,
            etag=fetched.etag, last_modified=fetched.last_modified,
            fetched_at=fetched.fetched_at, count=0, database="",
        )
        built = await asyncio.to_thread(
            self.store.build, path, record, previous=stale, require_marker=_spoke_json(stale)
        )
        log.info("upstream project list: %d names (revision %s)", built.count, built.revision)
        return built
