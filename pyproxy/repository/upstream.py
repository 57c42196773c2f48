"""Upstream packages pulled through pyproxy's caches: pages through the page store, files
through the blob cache.

Pages are fresh for a TTL, then revalidated with If-None-Match / If-Modified-Since (a 304
costs no parse). On timeouts, refused connections, 5xx or garbage, a stale copy is served
and logged; with no copy, the caller gets Unavailable (503) — never NotFound, because a 404
sends installers on to the next index, which is the dependency-confusion path. However many
clients ask for a page at once, one request goes upstream.

Only URLs read from an upstream page are ever fetched (no open proxy), and only while the
page offers files (PEP 792: a quarantined project offers none).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from pyproxy import metrics
from pyproxy.lru import SingleFlight
from pyproxy.model import (
    DistFile,
    FileSource,
    NormalizedName,
    NotFound,
    ProjectList,
    ProjectPage,
    Unavailable,
)
from pyproxy.repository.http import UpstreamClient, UpstreamError
from pyproxy.stores.blobcache import BlobCache, blob_key, metadata_key, provenance_key
from pyproxy.stores.pages import (
    INDEX_KEY,
    PageRecord,
    PageStore,
    Parsed,
    UpstreamFormatError,
    revision_of,
)

log = logging.getLogger("pyproxy.upstream")

_RETRY_AFTER_FAILURE_S = 30.0

Result = ProjectPage | ProjectList | None


def offered_file(page: ProjectPage, filename: str) -> DistFile:
    """The upstream file a request may reach: one the page lists, while it offers files."""
    dist = page.file(filename)
    if dist is None or not page.status.offers_files:
        raise NotFound(f"no file {filename!r} in project {page.name!r}")
    assert dist.upstream_url is not None
    return dist


def offered_provenance(page: ProjectPage, filename: str) -> DistFile:
    """The upstream file whose PEP 740 provenance object a request may reach."""
    dist = offered_file(page, filename)
    if not dist.provenance or dist.provenance_url is None:
        raise NotFound(f"upstream offers no provenance for {filename!r}")
    return dist


def offered_metadata(page: ProjectPage, filename: str) -> DistFile:
    """The upstream file whose `.metadata` a request may reach."""
    dist = offered_file(page, filename)
    if not dist.core_metadata:
        raise NotFound(f"upstream offers no metadata for {filename!r}")
    return dist


class UpstreamRepository:
    """The upstream index as a Repository, through the page store and the blob cache."""

    def __init__(
        self,
        client: UpstreamClient,
        pages: PageStore,
        blobs: BlobCache,
        *,
        page_ttl: float,
        index_ttl: float,
    ) -> None:
        self.client = client
        self.pages = pages
        self.blobs = blobs
        self.index_ttl = index_ttl
        self._page_ttl = page_ttl
        self._refreshing: SingleFlight[str, Result] = SingleFlight()

    async def close(self) -> None:
        await self.client.close()
        await self.blobs.aclose()
        self.pages.close()

    # ---- the Repository ----

    async def list_projects(self) -> ProjectList:
        projects = await self._page(INDEX_KEY, self.client.index_url, self.index_ttl)
        assert isinstance(projects, ProjectList)
        return projects

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        page = await self._page(name, f"{self.client.index_url}{name}/", self._page_ttl)
        if page is None:
            raise NotFound(f"upstream index has no project {name!r}")
        assert isinstance(page, ProjectPage)
        return page

    async def open_file(self, project: NormalizedName, filename: str) -> FileSource:
        dist = offered_file(await self.project_page(project), filename)
        assert dist.upstream_url is not None
        return await self.blobs.fetch(
            blob_key(dist),
            sha256=dist.sha256,
            size=dist.size,
            open_upstream=self.client.opener(dist.upstream_url),
            filename=filename,
        )

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        dist = offered_metadata(await self.project_page(project), filename)
        assert dist.upstream_url is not None
        metadata = dist.core_metadata  # offered: True (hash unknown) or its hashes
        sha256 = None if isinstance(metadata, bool) else metadata.get("sha256")
        return await self.blobs.fetch(
            metadata_key(dist),
            sha256=sha256,
            size=None,
            open_upstream=self.client.opener(dist.upstream_url + ".metadata"),
            filename=filename + ".metadata",
        )

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        # fetched once and kept like a file; upstream lists no hash, so it must prove its kind
        dist = offered_provenance(await self.project_page(project), filename)
        assert dist.provenance_url is not None
        return await self.blobs.fetch(
            provenance_key(dist),
            sha256=None,
            size=None,
            open_upstream=self.client.opener(dist.provenance_url),
            filename=filename + ".provenance",
        )

    # ---- what the caches hold, without asking upstream (for the offline filter) ----

    async def cached(self, name: NormalizedName) -> Parsed | None:
        """The page as last fetched, whatever its age: None if it never was; a result of None
        if upstream had no such project."""
        known = self.pages.known(name)
        if known is not None:
            return known
        record = await asyncio.to_thread(self.pages.load, name)
        return None if record is None else await self.pages.remember(name, record)

    # ---- pages ----

    async def _page(self, key: str, url: str, ttl: float) -> Result:
        known = self.pages.known(key)
        if known is not None and time.time() - known.fetched_at < ttl:
            return known.result  # the warm path: no disk, no parse
        # another worker process may have refreshed it on disk meanwhile
        record = await asyncio.to_thread(self.pages.load, key)
        if record is not None and time.time() - record.fetched_at < ttl:
            return (await self.pages.remember(key, record)).result
        # one upstream request per page however many clients ask
        return await self._refreshing.run(key, lambda: self._refresh(key, url, record, ttl))

    async def _refresh(self, key: str, url: str, stale: PageRecord | None, ttl: float) -> Result:
        try:
            record = await self._fetch(url, stale)
            known = await self.pages.remember(key, record)
        except (UpstreamError, UpstreamFormatError) as exc:
            malformed = isinstance(exc, UpstreamFormatError)
            problem = f"sent a malformed page: {exc}" if malformed else str(exc)
            if stale is None:
                raise Unavailable(
                    f"upstream index unavailable ({problem}) and no copy is cached"
                ) from None
            age = int(time.time() - stale.fetched_at)
            log.warning("serving a stale copy of %s (%d s old): upstream %s", url, age, problem)
            metrics.STALE_PAGES.inc()
            # while upstream hangs, don't make every request wait for its timeout: the stale
            # copy counts as fresh (in memory only) for a short while before the next try
            retry_at = time.time() - ttl + min(ttl, _RETRY_AFTER_FAILURE_S)
            backing_off = dataclasses.replace(stale, fetched_at=retry_at)
            return (await self.pages.remember(key, backing_off)).result
        await asyncio.to_thread(self.pages.save, key, record)
        return known.result

    async def _fetch(self, url: str, stale: PageRecord | None) -> PageRecord:
        etag = last_modified = None
        if stale is not None and stale.status == 200:
            etag, last_modified = stale.etag, stale.last_modified
        answer = await self.client.get_page(url, etag=etag, last_modified=last_modified)
        if answer.status == 304 and stale is not None:
            return dataclasses.replace(stale, fetched_at=time.time())
        if answer.status == 404:
            return PageRecord(404, b"", None, url, None, None, time.time(), "")
        if answer.status != 200:
            raise UpstreamError(f"answered HTTP {answer.status}")
        return PageRecord(
            status=200,
            body=answer.body,
            content_type=answer.content_type,
            url=answer.url,
            etag=answer.etag,
            last_modified=answer.last_modified,
            fetched_at=time.time(),
            revision=revision_of(answer.body),
        )
