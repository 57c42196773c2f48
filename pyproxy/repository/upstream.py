"""Upstream packages pulled through pyproxy's caches: pages through the page store, files
through the blob cache.

Pages are fresh for a TTL, then revalidated with If-None-Match / If-Modified-Since (a 304
costs no parse). On timeouts, refused connections, 5xx or garbage, a stale copy is served
and logged; with no copy, the caller gets Unavailable (503) — never NotFound, because a 404
sends installers on to the next index, which is the dependency-confusion path. However many
clients ask for a page at once, one request goes upstream: within a process by single flight,
across the worker processes of a machine by the page store's lock (the first to hold it asks,
the others then find its answer on disk, or the failure it noted).

Garbage is any 200 that is not the page asked for: a body that does not parse, HTML with nothing
of a simple page (formats.parse), HTML without the version marker where the copy was JSON, or a
page that suddenly lists no files (a list no projects) where the copy had some and upstream does
not say why (PEP 792 quarantine). It is counted, and never replaces the copy, in memory or on
disk.

Wheels upstream offers no `.metadata` for get one made by pyproxy (repository/wheel_metadata.py).

Only URLs read from an upstream page are ever fetched (no open proxy), and only while the
page offers files (PEP 792: a quarantined project offers none); a file's redirects may lead only
to the origins that page links files on (or those the client allows: repository/http.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from pyproxy import metrics
from pyproxy.formats.answers import JSON_TYPE, Emptied
from pyproxy.lru import BoundedLRU, SingleFlight
from pyproxy.model import (
    DistFile,
    FileSource,
    LocalFile,
    NormalizedName,
    NotFound,
    OpenedFile,
    ProjectList,
    ProjectPage,
    RemoteFile,
    StreamedFile,
    Unavailable,
)
from pyproxy.repository.downloads import Origin, Origins, origins_of
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.http_answers import RangeAnswer, UpstreamError, WholeAnswer
from pyproxy.repository.misses import RangeMemory, UpstreamMiss, host_of
from pyproxy.repository.stored_files import StoredFiles
from pyproxy.repository.upstream_list import UpstreamList, upstream_failure
from pyproxy.repository.wheel_metadata import WheelMetadata
from pyproxy.stores.blobkeys import blob_key, metadata_key, provenance_key
from pyproxy.stores.filecache import FileCache
from pyproxy.stores.flight import FileGone, HashMismatch, TooLarge
from pyproxy.stores.outages import DatabaseUnavailable
from pyproxy.stores.pages import (
    PageCache,
    PageRecord,
    Parsed,
    Turn,
    UpstreamFormatError,
    revision_of,
)
from pyproxy.stores.proof import INTEGRITY_TYPE

log = logging.getLogger("pyproxy.upstream")

_RETRY_AFTER_FAILURE_S = 30.0
_LOCK_MARGIN_S = 10.0  # how much longer than a fetch's deadline to wait for another worker's
_ORIGIN_SETS = 64  # pages whose file origins are remembered (computed at a redirect only)
_UNUSABLE_METADATA = 4096

Result = ProjectPage | None


class PageEmptied(Emptied):
    """A page that lists nothing where the cached copy listed something."""


def lists_nothing(result: Result) -> bool:
    """A page without files and without a reason for it (a PEP 792 status)."""
    return result is not None and not result.files and result.status.offers_files


def emptied(old: Result, new: Result) -> bool:
    """`new` lists nothing (see lists_nothing), where `old` listed something."""
    return old is not None and bool(old.files) and lists_nothing(new)


def _spoke_json(record: PageRecord | None) -> bool:
    if record is None or record.status != 200 or not record.content_type:
        return False
    return record.content_type.split(";")[0].strip().lower() == JSON_TYPE


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
        pages: PageCache,
        blobs: FileCache,
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
        self._file_origins: BoundedLRU[str, frozenset[Origin]] = BoundedLRU(_ORIGIN_SETS)
        self._stored_files = StoredFiles(pages, page_ttl, self._shared_record)
        self._list = UpstreamList(client, pages, ttl=index_ttl)
        self._ranges = RangeMemory()  # sizes upstream told, hosts that refuse ranges
        # upstream `.metadata` found missing or wrong (key -> when): made from the wheel instead
        self._unusable_metadata: BoundedLRU[str, float] = BoundedLRU(_UNUSABLE_METADATA)
        # `.metadata` for the wheels upstream offers none for
        self.wheel_metadata = WheelMetadata(client, blobs, self._whole_file, self._ranges)

    async def close(self) -> None:
        await self._stored_files.close()
        await self.client.close()
        await self.blobs.aclose()
        self.pages.close()

    # ---- the Repository ----

    async def list_projects(self) -> ProjectList:
        """On disk, read lazily (repository/upstream_list.py); Unavailable for an index that
        lists no projects at its root (some do not)."""
        return await self._list.get()

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        return await self.wheel_metadata.mark(await self._project_page(name))

    async def _project_page(self, name: NormalizedName) -> ProjectPage:
        """The page as upstream has it, without the `.metadata` offers `mark` adds (which a
        file's download does not need, and which may ask the cluster's index)."""
        page = await self._page(name, f"{self.client.index_url}{name}/", self._page_ttl)
        if page is None:
            raise NotFound(f"upstream index has no project {name!r}")
        assert isinstance(page, ProjectPage)
        return page

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        dist, origins = await self._listed_file(project, filename)
        hit = await self.blobs.hit(blob_key(dist), sha256=dist.sha256, size=dist.size)
        return hit if hit is not None else self._miss(dist, origins)

    async def _listed_file(
        self, project: NormalizedName, filename: str
    ) -> tuple[DistFile, Origins]:
        """The file as its page lists it, and the origins of the page's links: read from the
        stored copy of a page this process has not parsed (repository/stored_files.py)."""
        stored = await self._stored_files.find(project, filename)
        if stored is not None:
            return stored
        page = await self._project_page(project)
        return offered_file(page, filename), self._origins_of(page)

    async def _whole_file(self, project: NormalizedName, filename: str) -> FileSource:
        """The file itself, downloaded (or joined) on a miss: what making a .metadata reads."""
        opened = await self.open_file(project, filename)
        return await opened.whole() if isinstance(opened, RemoteFile) else opened

    def _miss(self, dist: DistFile, origins: Origins) -> UpstreamMiss:
        """A file not in the cache: nothing is asked of upstream until the request needs it."""
        assert dist.upstream_url is not None
        key, url = blob_key(dist), dist.upstream_url

        async def fetch() -> LocalFile | StreamedFile:
            return await self.blobs.fetch(
                key,
                sha256=dist.sha256,
                size=dist.size,
                open_upstream=self.client.opener(url, file_origins=origins),
                filename=dist.filename,
            )

        async def read_range(start: int, length: int) -> RangeAnswer | None:
            return await self.client.read_range(url, start, length, file_origins=origins)

        async def read_tail(length: int) -> RangeAnswer | WholeAnswer:
            return await self.client.read_tail(url, length, file_origins=origins)

        sha256 = dist.sha256.lower() if dist.sha256 else None  # as the ETag of a cached file
        return UpstreamMiss(
            key, host=host_of(url), size=dist.size, sha256=sha256, fetch=fetch,
            read_range=read_range, read_tail=read_tail, ranges=self._ranges,
            mismatched=self.blobs.mismatched,
        )

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        stored = await self._stored_files.find(project, filename)
        if stored is not None and stored[0].core_metadata:
            dist, origins = stored  # upstream's own: no `.metadata` to make, so no marks needed
        else:
            page = await self.project_page(project)
            if (wheel := offered_file(page, filename)).metadata_from_wheel:
                return await self.wheel_metadata.open(project, wheel, self._origins_of(page))
            dist, origins = offered_metadata(page, filename), self._origins_of(page)
        assert dist.upstream_url is not None
        metadata = dist.core_metadata  # offered: True (hash unknown) or its hashes
        sha256 = None if isinstance(metadata, bool) else metadata.get("sha256")
        # the warm path: cached, so no opener for upstream to build (fetch looks it up too)
        if (hit := await self.blobs.hit(metadata_key(dist), sha256=sha256, size=None)) is not None:
            return hit
        if not dist.filename.endswith(".whl"):
            return await self._upstream_metadata(dist, sha256, origins)
        # upstream's own failed before: the one made from the wheel, if it was
        made = dist.offering(metadata, from_wheel=True)
        if (hit := await self.blobs.hit(metadata_key(made), sha256=sha256, size=None)) is not None:
            return hit
        gone_at = self._unusable_metadata.get(metadata_key(dist))
        if gone_at is None or time.monotonic() - gone_at > self._page_ttl:
            try:
                return await self._upstream_metadata(dist, sha256, origins)
            except (FileGone, HashMismatch) as exc:
                # other bytes than a listed hash, not a body any .metadata could be (an
                # error page, more than one can hold): upstream's answer of the moment
                if isinstance(exc, HashMismatch) and (sha256 is None or isinstance(exc, TooLarge)):
                    raise
                log.warning("upstream's .metadata of %s is unusable (%s): making it from the"
                            " wheel", filename, exc)
                self._unusable_metadata.put(metadata_key(dist), time.monotonic())
        # PEP 658's file is the wheel's METADATA: made from it (checked against the hash the
        # page lists), where upstream offers one it has not, or one of other bytes
        return await self.wheel_metadata.open(project, made, origins)

    async def _upstream_metadata(
        self, dist: DistFile, sha256: str | None, origins: Origins
    ) -> FileSource:
        assert dist.upstream_url is not None
        return await self.blobs.fetch(
            metadata_key(dist),
            sha256=sha256,
            size=None,
            open_upstream=self.client.opener(dist.upstream_url + ".metadata", file_origins=origins),
            filename=dist.filename + ".metadata",
        )

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        # fetched once and kept like a file; upstream lists no hash, so it must prove its kind
        page = await self.project_page(project)
        dist = offered_provenance(page, filename)
        assert dist.provenance_url is not None
        return await self.blobs.fetch(
            provenance_key(dist),
            sha256=None,
            size=None,
            open_upstream=self.client.opener(
                dist.provenance_url, file_origins=self._origins_of(page), accept=INTEGRITY_TYPE
            ),
            filename=filename + ".provenance",
        )

    def _origins_of(self, page: ProjectPage) -> Origins:
        """The origins `page` links files (and provenance) on, worked out once per revision
        when first asked."""

        def origins() -> frozenset[Origin]:
            known = self._file_origins.get(page.revision)
            if known is None:
                urls = [dist.upstream_url or "" for dist in page.files]
                urls += [dist.provenance_url for dist in page.files if dist.provenance_url]
                known = origins_of(urls)
                self._file_origins.put(page.revision, known)
            return known

        return origins

    # ---- what the caches hold, without asking upstream (for the offline filter) ----

    async def cached(self, name: NormalizedName) -> Parsed | None:
        """The page as last fetched, whatever its age: None if it never was; a result of None
        if upstream had no such project."""
        known = self.pages.known(name)
        if known is not None:
            return known
        record = await asyncio.to_thread(self.pages.load, name)
        if record is None:
            return None
        try:
            return await self.pages.remember(name, record)
        except UpstreamFormatError as exc:  # stored by a pyproxy with laxer checks
            log.warning("the cached page of %s is unusable: %s", name, exc)
            return None

    # ---- pages ----

    async def _page(self, key: str, url: str, ttl: float) -> Result:
        known = self.pages.known(key)
        if known is not None and time.time() - known.fetched_at < ttl:
            return known.result  # the warm path: no disk, no parse
        # another worker process (or node) may have refreshed it meanwhile
        record = await self._shared_record(key)
        if record is not None and time.time() - record.fetched_at < ttl:
            return (await self.pages.remember(key, record)).result
        # one upstream request per page however many clients ask
        try:
            return await self._refreshing.run(key, lambda: self._refresh(key, url, record, ttl))
        except Unavailable:
            if known is None or record is not None:
                raise
            # a cluster's database is down too: the copy in memory is the only one left
            log.warning("serving the stale copy in memory of %s: upstream and the database"
                        " are unavailable", url)
            metrics.STALE_PAGES.inc()
            return known.result

    async def _shared_record(self, key: str) -> PageRecord | None:
        """The record the page store holds; None also when a cluster's database cannot be
        reached (upstream is asked instead, and the answer served from memory)."""
        try:
            return await asyncio.to_thread(self.pages.load, key)
        except DatabaseUnavailable as exc:
            log.debug("no shared copy of %s: %s", key, exc)
            return None

    async def _refresh(self, key: str, url: str, stale: PageRecord | None, ttl: float) -> Result:
        patience = self.client.deadline + _LOCK_MARGIN_S
        async with self.pages.turn(key, patience=patience) as turn:
            # another worker may have refreshed it (or be back from failing to) while we waited
            latest = await self._shared_record(key)
            if latest is not None and (stale is None or latest.fetched_at > stale.fetched_at):
                stale = latest
                if time.time() - latest.fetched_at < ttl:
                    with contextlib.suppress(UpstreamFormatError):  # else: fetch it anew
                        return (await self.pages.remember(key, latest)).result
            return await self._refresh_held(key, url, stale, ttl, turn)

    async def _refresh_held(
        self, key: str, url: str, stale: PageRecord | None, ttl: float, turn: Turn
    ) -> Result:
        try:
            if turn.failure is not None:  # the worker we waited for just tried and failed
                raise UpstreamError(f"{turn.failure} (the last try, by another worker)")
            record = await self._fetch(url, stale)
            fresh = await self.pages.parsed(key, record, require_marker=_spoke_json(stale))
            if stale is not None and stale.revision != record.revision:
                await self._check_not_emptied(key, stale, fresh)
        except (UpstreamError, UpstreamFormatError) as exc:
            problem = upstream_failure(exc, self.client)
            if turn.failure is None:
                turn.fail(problem)
            if stale is None:
                log.warning("no copy of %s to serve: upstream %s", url, problem)
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
        self.pages.keep(key, fresh)
        await asyncio.to_thread(self.pages.save, key, record)
        return fresh.result

    async def _check_not_emptied(self, key: str, stale: PageRecord, fresh: Parsed) -> None:
        if not lists_nothing(fresh.result):
            return  # lists something (or is a 404): nothing to compare, and no parse of the copy
        try:
            old = await self.pages.parsed(key, stale)
        except UpstreamFormatError:
            return  # the copy itself is unusable: nothing to protect
        if emptied(old.result, fresh.result):
            raise PageEmptied("it lists nothing, where the cached copy lists something")

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
