"""The upstream simple index: one pooled aiohttp client, and a page cache on disk.

Pages are fresh for a TTL, then revalidated with If-None-Match / If-Modified-Since (a 304
costs no parse). On timeouts, refused connections, 5xx or garbage, a stale copy is served
and logged; with no copy, the caller gets Unavailable (503) — never NotFound, because a 404
sends installers on to the next index, which is the dependency-confusion path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import diskcache

from pyproxy import metrics
from pyproxy.formats.parse import (
    UpstreamFormatError,
    parse_project_list,
    parse_project_page,
)
from pyproxy.model import (
    NormalizedName,
    NotFound,
    ProjectList,
    ProjectPage,
    Unavailable,
)

log = logging.getLogger("pyproxy.upstream")

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1,"
    " text/html;q=0.01"
)
_CHUNK = 256 * 1024
_INDEX_KEY = "/"  # the project list's key in the page cache; no project is named "/"
_MEMORY_PAGES = 2048
_RETRY_AFTER_FAILURE_S = 30.0


def pip_default_index() -> str:
    """pip's built-in default index, read from the installed pip (never written down here)."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError as exc:
        raise RuntimeError(
            "no upstream is configured and pip is not installed to name its default index:"
            " set [upstream] url, or serve private packages only with --no-upstream"
        ) from exc
    return str(PyPI.simple_url)


def redact(url: str) -> str:
    """The URL without user:password, for logs and pages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the disk cache keeps per page: the raw answer, so a restart needs no refetch."""

    status: int  # 200, or 404 for "upstream does not have it"
    body: bytes
    content_type: str | None
    url: str  # the final URL (after redirects), against which relative links resolve
    etag: str | None
    last_modified: str | None
    fetched_at: float  # wall clock, shared between worker processes
    revision: str  # hash of the body: a 304 keeps it, so nothing is parsed or re-rendered


@dataclass(frozen=True, slots=True)
class _Known:
    """A parsed page in memory, with what is needed to judge and revalidate it."""

    fetched_at: float
    revision: str
    result: ProjectPage | ProjectList | None  # None: upstream has no such project


def cached_project_names(disk: diskcache.Cache) -> list[str]:
    """Projects whose upstream page is cached (a cached 404 is a project upstream lacks)."""
    names = []
    for key in disk.iterkeys():
        if key == _INDEX_KEY:
            continue
        entry = disk.get(key)
        if isinstance(entry, _Entry) and entry.status == 200:
            names.append(key)
    return sorted(names)


def cached_pages(disk: diskcache.Cache) -> Iterator[ProjectPage]:
    """Every cached upstream project page, parsed (skipping any that no longer parse)."""
    for key in disk.iterkeys():
        entry = disk.get(key)
        if key == _INDEX_KEY or not isinstance(entry, _Entry) or entry.status != 200:
            continue
        try:
            page = Upstream._parse(key, entry)
        except UpstreamError:
            continue
        assert isinstance(page, ProjectPage)
        yield page


def open_page_cache(cache_dir: Path) -> diskcache.Cache:
    return diskcache.Cache(str(cache_dir), size_limit=2**30)


def export_pages(disk: diskcache.Cache) -> Iterator[tuple[str, dict[str, object], bytes]]:
    """Every cached page as (key, its fields without the body, body), for `pyproxy export`."""
    for key in disk.iterkeys():
        entry = disk.get(key)
        if isinstance(entry, _Entry):
            fields = dataclasses.asdict(entry)
            body = fields.pop("body")
            yield key, fields, body


def import_page(disk: diskcache.Cache, key: str, fields: dict[str, object], body: bytes) -> bool:
    """Store an exported page unless a newer copy is cached; raises ValueError if it is unusable."""
    try:
        entry = _Entry(body=body, **fields)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(f"not a page record: {exc}") from None
    if entry.status not in (200, 404) or not isinstance(entry.fetched_at, int | float):
        raise ValueError("not a page record")
    if entry.revision != (hashlib.blake2b(body, digest_size=12).hexdigest() if entry.status == 200 else ""):
        raise ValueError("its body does not match its recorded revision")
    if entry.status == 200:
        try:
            Upstream._parse(key, entry)
        except UpstreamError as exc:
            raise ValueError(str(exc)) from None
    held = disk.get(key)
    if isinstance(held, _Entry) and held.fetched_at >= entry.fetched_at:
        return False
    disk.set(key, entry)
    return True


class UpstreamError(Exception):
    """Upstream could not give a usable answer right now."""


class Upstream:
    def __init__(
        self,
        index_url: str,
        cache_dir: Path,
        *,
        timeout: float,
        page_ttl: float,
        index_ttl: float,
        ca_bundle: str = "",
        offline: bool = False,
    ) -> None:
        # offline: never contact upstream; serve what the page cache holds, whatever its age
        self.offline = offline
        parts = urlsplit(index_url)
        self._authorization = (
            {"Authorization": aiohttp.encode_basic_auth(
                unquote(parts.username or ""), unquote(parts.password or "")
            )}
            if parts.username or parts.password
            else {}
        )
        self.index_url = redact(index_url).rstrip("/") + "/"
        self._index_origin = urlsplit(self.index_url)[:2]
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._page_ttl = page_ttl
        self._index_ttl = index_ttl
        self._ca_bundle = ca_bundle
        self._disk = open_page_cache(cache_dir)
        self._memory: OrderedDict[str, _Known] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[ProjectPage | ProjectList | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # when (time.monotonic) upstream last answered, or last failed to: /ready reads them
        self.last_success: float | None = None
        self.last_failure: float | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_context = ssl.create_default_context(cafile=self._ca_bundle or None)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ssl=ssl_context),
                timeout=self._timeout,
                trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as corporate networks need
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._disk.close()

    def _credentials_for(self, url: str) -> dict[str, str]:
        # credentials go only to the index's own origin, never to a file host
        return self._authorization if urlsplit(url)[:2] == self._index_origin else {}

    # ---- pages ----

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        page = await self._page(name, f"{self.index_url}{name}/", self._page_ttl)
        if page is None:
            if self.offline:
                raise NotFound(f"no cached page for {name!r}, and pyproxy is offline")
            raise NotFound(f"upstream index has no project {name!r}")
        assert isinstance(page, ProjectPage)
        return page

    async def project_list(self) -> ProjectList:
        if self.offline:
            return await self._cached_project_list()
        projects = await self._page(_INDEX_KEY, self.index_url, self._index_ttl)
        assert isinstance(projects, ProjectList)
        return projects

    async def _page(self, key: str, url: str, ttl: float) -> ProjectPage | ProjectList | None:
        if self.offline:
            return await self._cached_page(key)
        known = self._memory.get(key)
        if known is not None and time.time() - known.fetched_at < ttl:
            return known.result  # the warm path: no disk, no parse
        # another worker process may have refreshed it on disk meanwhile
        entry = await asyncio.to_thread(self._load, key)
        if entry is not None and time.time() - entry.fetched_at < ttl:
            return (await self._remember(key, entry)).result
        flight = self._in_flight.get(key)
        if flight is None:  # one upstream request per page however many clients ask
            flight = asyncio.ensure_future(self._refresh(key, url, entry, ttl))
            self._in_flight[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)

    async def _cached_page(self, key: str) -> ProjectPage | ProjectList | None:
        known = self._memory.get(key)
        if known is not None:
            return known.result
        entry = await asyncio.to_thread(self._load, key)
        if entry is None:
            log.info("offline: %r was never fetched from upstream, so it is not served", key)
            return None
        return (await self._remember(key, entry)).result

    async def _cached_project_list(self) -> ProjectList:
        """Offline, the upstream projects are those whose page is cached (not the cached index,
        which would name projects that cannot be served)."""
        known = self._memory.get(_INDEX_KEY)
        if known is not None and time.time() - known.fetched_at < self._index_ttl:
            assert isinstance(known.result, ProjectList)
            return known.result
        names = await asyncio.to_thread(cached_project_names, self._disk)
        revision = "o" + hashlib.blake2b("\n".join(names).encode(), digest_size=12).hexdigest()
        projects = ProjectList(tuple(names), revision=revision)
        self._memory[_INDEX_KEY] = _Known(time.time(), revision, projects)
        return projects

    def _landed(self, key: str, flight: asyncio.Future[object]) -> None:
        self._in_flight.pop(key, None)
        if not flight.cancelled():
            flight.exception()  # retrieved here, so a fetch nobody waited for logs nothing

    async def _refresh(
        self, key: str, url: str, stale: _Entry | None, ttl: float
    ) -> ProjectPage | ProjectList | None:
        try:
            with self._asking("page"):
                entry = await self._fetch(url, stale)
            known = await self._remember(key, entry)
        except UpstreamError as exc:
            if stale is None:
                raise Unavailable(f"upstream index unavailable ({exc}) and no copy is cached") from None
            age = int(time.time() - stale.fetched_at)
            log.warning("serving a stale copy of %s (%d s old): upstream %s", url, age, exc)
            metrics.STALE_PAGES.inc()
            # while upstream hangs, don't make every request wait for its timeout: the stale
            # copy counts as fresh (in memory only) for a short while before the next try
            retry_at = time.time() - ttl + min(ttl, _RETRY_AFTER_FAILURE_S)
            return (await self._remember(key, dataclasses.replace(stale, fetched_at=retry_at))).result
        await asyncio.to_thread(self._disk.set, key, entry)
        return known.result

    async def _fetch(self, url: str, stale: _Entry | None) -> _Entry:
        headers = {"Accept": ACCEPT, **self._credentials_for(url)}
        if stale is not None and stale.status == 200:
            if stale.etag:
                headers["If-None-Match"] = stale.etag
            if stale.last_modified:
                headers["If-Modified-Since"] = stale.last_modified
        try:
            async with self.session.get(url, headers=headers) as response:
                if response.status == 304 and stale is not None:
                    return dataclasses.replace(stale, fetched_at=time.time())
                if response.status in (404, 410):
                    return _Entry(404, b"", None, url, None, None, time.time(), "")
                if response.status != 200:
                    raise UpstreamError(f"answered HTTP {response.status}")
                body = await response.read()
                headers_in = response.headers
                final_url = str(response.url)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(_describe(exc)) from None
        return _Entry(
            status=200,
            body=body,
            content_type=headers_in.get("Content-Type"),
            url=final_url,
            etag=headers_in.get("ETag"),
            last_modified=headers_in.get("Last-Modified"),
            fetched_at=time.time(),
            revision=hashlib.blake2b(body, digest_size=12).hexdigest(),
        )

    def _load(self, key: str) -> _Entry | None:
        entry = self._disk.get(key)
        return entry if isinstance(entry, _Entry) else None

    async def _remember(self, key: str, entry: _Entry) -> _Known:
        """Parse entry (unless the same body is already parsed) and keep it in memory."""
        known = self._memory.get(key)
        if known is None or known.revision != entry.revision:
            result = None
            if entry.status == 200:
                result = await asyncio.to_thread(self._parse, key, entry)
            known = _Known(entry.fetched_at, entry.revision, result)
        else:
            known = dataclasses.replace(known, fetched_at=entry.fetched_at)
        self._memory[key] = known
        self._memory.move_to_end(key)
        while len(self._memory) > _MEMORY_PAGES:
            self._memory.popitem(last=False)
        return known

    @staticmethod
    def _parse(key: str, entry: _Entry) -> ProjectPage | ProjectList:
        revision = f"u{entry.revision}"
        try:
            if key == _INDEX_KEY:
                projects = parse_project_list(entry.body, entry.content_type, entry.url)
                return ProjectList(projects.names, revision=revision)
            page = parse_project_page(entry.body, entry.content_type, entry.url, NormalizedName(key))
        except UpstreamFormatError as exc:
            raise UpstreamError(f"sent a malformed page: {exc}") from None
        return dataclasses.replace(page, revision=revision)

    # ---- files ----

    def opener(self, url: str) -> Callable[[], AsyncIterator[bytes]]:
        """For the blob cache: opens the body of a URL read from an upstream page."""

        @asynccontextmanager
        async def open_body() -> AsyncIterator[AsyncIterator[bytes]]:
            with self._asking("file"):
                try:
                    response = await self.session.get(
                        url, headers={"Accept-Encoding": "identity", **self._credentials_for(url)}
                    )
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    raise Unavailable(f"cannot download from upstream: {_describe(exc)}") from None
                if response.status != 200:
                    response.release()
                    raise Unavailable(f"upstream answered HTTP {response.status} for a file")
            try:
                yield response.content.iter_chunked(_CHUNK)
            finally:
                response.release()

        return open_body  # type: ignore[return-value]

    # ---- health ----

    @contextmanager
    def _asking(self, kind: str) -> Iterator[None]:
        """One upstream request: counted and timed, and remembered for /ready."""
        with metrics.upstream_request(kind):
            try:
                yield
            except Exception:
                self.last_failure = time.monotonic()
                raise
        self.last_success = time.monotonic()

    async def probe(self) -> None:
        """HEAD the index (no body: the project list can be huge); UpstreamError if it does not
        answer usefully. 405 counts as an answer: an index may serve GET only."""
        with self._asking("probe"):
            try:
                async with self.session.head(
                    self.index_url, headers=self._credentials_for(self.index_url)
                ) as response:
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(_describe(exc)) from None
            if status >= 400 and status != 405:
                raise UpstreamError(f"answered HTTP {status}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
