"""Upstream's project list (the `/simple/` root): fetched to disk, never into memory.

The list is about a million names on a real index. Its answer is streamed into a temp file,
then read into an on-disk database in a thread (stores/project_list.py), and what this
returns is a ProjectList over that database: the layers above filter and merge it lazily and
the web layer renders it to files, so no worker holds the names. The rules are the pages'
(repository/upstream.py): fresh for `index_ttl`, then revalidated with If-None-Match /
If-Modified-Since (a 304, or an unchanged body, builds nothing); on an outage or garbage the
copy is served (30 s of back-off) or, without one, Unavailable; one upstream request however
many clients and workers ask (single flight here, the page store's lock across processes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time

from pyproxy import metrics
from pyproxy.formats.parse import JSON_TYPE, Emptied, NotASimplePage
from pyproxy.lru import SingleFlight
from pyproxy.model import ProjectList, Unavailable
from pyproxy.repository.http import UpstreamClient, UpstreamError, redact
from pyproxy.stores.pages import INDEX_KEY, PageCache, UpstreamFormatError
from pyproxy.stores.project_list import ListRecord

__all__ = ["UpstreamList"]

log = logging.getLogger("pyproxy.upstream")

_RETRY_AFTER_FAILURE_S = 30.0
# how much longer than a fetch's deadline to wait for another worker's fetch and build
_LOCK_MARGIN_S = 10.0
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

    async def _refresh(self, stale: ListRecord | None) -> ProjectList:
        patience = self.client.deadline + _LOCK_MARGIN_S + _BUILD_ALLOWANCE_S
        async with self._pages.turn(INDEX_KEY, patience=patience) as turn:
            latest = await asyncio.to_thread(self.store.load)
            if latest is not None and (stale is None or latest.fetched_at > stale.fetched_at):
                stale = latest
                if time.time() - latest.fetched_at < self.ttl:
                    return self._remember(latest)
            try:
                if turn.failure is not None:  # the worker we waited for just tried and failed
                    raise UpstreamError(f"{turn.failure} (the last try, by another worker)")
                record = await self._fetch(stale)
            except (UpstreamError, UpstreamFormatError) as exc:
                problem = upstream_failure(exc, self.client)
                if turn.failure is None:
                    turn.fail(problem)
                return self._stale(stale, problem)
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

    async def _fetch(self, stale: ListRecord | None) -> ListRecord | None:
        """The list fetched (None: upstream has none), built or revalidated on disk."""
        etag = last_modified = None
        if stale is not None:
            etag, last_modified = stale.etag, stale.last_modified
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
            now = time.time()
            if answer.status == 304 and stale is not None:
                return await asyncio.to_thread(self.store.refreshed, stale, now)
            if answer.status == 404:
                return None
            if answer.status != 200:
                raise UpstreamError(f"answered HTTP {answer.status}")
            record = ListRecord(
                revision=digest.hexdigest(), url=answer.url, content_type=answer.content_type,
                etag=answer.etag, last_modified=answer.last_modified, fetched_at=now, count=0,
                database="",
            )
            if stale is not None and stale.revision == record.revision:
                same = dataclasses.replace(
                    stale, etag=record.etag, last_modified=record.last_modified
                )
                return await asyncio.to_thread(self.store.refreshed, same, now)
            built = await asyncio.to_thread(
                self.store.build, path, record, previous=stale, require_marker=_spoke_json(stale)
            )
            log.info("upstream project list: %d names (revision %s)", built.count, built.revision)
            return built
        finally:
            path.unlink(missing_ok=True)
