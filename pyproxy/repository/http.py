"""The upstream index over HTTP: one pooled aiohttp client, which remembers no page.

TLS checks against the configured CA bundle (else the system's); proxies come from the
environment (HTTPS_PROXY / HTTP_PROXY / NO_PROXY, repository/proxies.py), as corporate networks
need; the index URL's user:password is sent to the index's own origin only, never to a file
host (nor any credentials from ~/.netrc). Every request is counted and timed, and its outcome
kept for /ready (`last_success`, `last_failure`).

A file download follows at most MAX_FILE_REDIRECTS redirects, and only to an origin that the
caller names (those its page links files on), the index's own, or one configured with
`[upstream] files_from`: any other target is refused before it is asked anything.

A dripping upstream counts as down: a page must arrive whole within `deadline` seconds (and a
file's response headers too), and a file body that brings less than `min_rate` bytes a second
over a `rate_window` of waiting for it is aborted. Those two file rules are
repository/downloads.py.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from pyproxy import metrics
from pyproxy.model import Unavailable
from pyproxy.repository.downloads import (
    MAX_FILE_REDIRECTS,
    REDIRECTS,
    Origins,
    Targets,
    host_rule,
    metered,
    origin_of,
    redirect_target,
)
from pyproxy.repository.http_answers import PageAnswer, RangeAnswer, UpstreamError, WholeAnswer
from pyproxy.repository.proxies import Proxies
from pyproxy.stores.blobcache import OpenUpstream
from pyproxy.stores.flight import FileGone

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1,"
    " text/html;q=0.01"
)
_CHUNK = 256 * 1024
# a project page's body, as decompressed: the largest real ones are a few MB; a page (or a gzip
# bomb) past this would be held whole in a worker's memory to be parsed
PAGE_MAX_BYTES = 64 * 1024**2


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


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class UpstreamClient:
    def __init__(
        self,
        index_url: str,
        *,
        timeout: float,
        ca_bundle: str = "",
        files_from: Iterable[str] = (),
        deadline: float = 60.0,
        min_rate: int = 0,
        rate_window: float = 30.0,
    ) -> None:
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
        index_origin = origin_of(self.index_url)
        # where any file download may be redirected to, whatever page it was listed on
        self._index_origins = frozenset({index_origin} if index_origin is not None else ())
        self._files_from = tuple(map(host_rule, files_from))
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._deadline = deadline
        self._min_rate = min_rate  # bytes per second; 0: no minimum
        self._rate_window = rate_window
        # built now, not on the first request (it reads the CA files: 50-150 ms); without a
        # bundle, aiohttp's own verified context, built when aiohttp was imported
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxies = Proxies()  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY
        # when (time.monotonic) upstream last answered, or last failed to: /ready reads them
        self.last_success: float | None = None
        self.last_failure: float | None = None

    @property
    def deadline(self) -> float:
        """Seconds a page fetch may take in all."""
        return self._deadline

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ssl=self._ssl),
                timeout=self._timeout,
                trust_env=False,  # proxies: self._via; never ~/.netrc (repository/proxies.py)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _via(self, url: str) -> dict[str, Any]:
        proxy = self._proxies.for_url(url)
        return {} if proxy is None else {"proxy": proxy.url, "proxy_headers": proxy.headers}

    def _credentials_for(self, url: str) -> dict[str, str]:
        # credentials go only to the index's own origin, never to a file host
        mine = self._authorization if urlsplit(url)[:2] == self._index_origin else {}
        proxy = self._proxies.for_url(url)
        if proxy is None or url.startswith("https:"):  # CONNECT carries its proxy_headers
            return mine
        return {**mine, **proxy.headers}  # plain HTTP: the proxy reads them off the request

    async def get_page(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None,
        sink: Callable[[bytes], None] | None = None,
    ) -> PageAnswer:
        """GET a page, conditionally when validators are given; UpstreamError for any answer
        other than 200, 304, 404 or 410, and for timeouts and connection errors. With `sink`,
        a 200's body goes there chunk by chunk (the answer's `body` stays empty): the project
        list is too large to hold. It goes as it came, gzip'd or not (only gzip is asked for):
        its reader decompresses it off the event loop (stores/project_list.py)."""
        headers = {"Accept": ACCEPT, **self._credentials_for(url)}
        if sink is not None:
            headers["Accept-Encoding"] = "gzip"
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        deadline = asyncio.timeout(self._deadline)
        with self._asking("page"):
            try:
                async with deadline, self.session.get(
                    url, headers=headers, auto_decompress=sink is None, **self._via(url)
                ) as response:
                    if response.status == 304 and (etag or last_modified):
                        return PageAnswer(304, url)
                    if response.status in (404, 410):
                        return PageAnswer(404, url)
                    if response.status != 200:
                        raise UpstreamError(f"answered HTTP {response.status}")
                    if sink is None:
                        body = await _bounded_body(response, PAGE_MAX_BYTES)
                    else:
                        body = b""
                        coding = response.headers.get("Content-Encoding", "identity").lower()
                        if coding not in ("gzip", "identity"):
                            raise UpstreamError(f"sent the list as {coding!r}, not as gzip")
                        async for chunk in response.content.iter_chunked(_CHUNK):
                            sink(chunk)
                    return PageAnswer(
                        200,
                        str(response.url),
                        body,
                        response.headers.get("Content-Type"),
                        response.headers.get("ETag"),
                        response.headers.get("Last-Modified"),
                    )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if deadline.expired():
                    raise UpstreamError(
                        f"sent no complete page within {self._deadline:g} s"
                    ) from None
                raise UpstreamError(_describe(exc)) from None

    def opener(
        self, url: str, *, file_origins: Origins = frozenset,
        accept: str | None = None,
    ) -> OpenUpstream:
        """For the blob cache: opens the body of a URL read from an upstream page.
        `file_origins()`, asked only when upstream redirects, names the origins the page links
        files on: redirects may lead there, to the index's origin and to `files_from`.
        `accept`: the Accept to ask with (an API answer, not a file)."""

        @asynccontextmanager
        async def open_body() -> AsyncIterator[AsyncIterator[bytes]]:
            deadline = asyncio.timeout(self._deadline)
            with self._asking("file"):
                try:
                    async with deadline:
                        response = await self._get_file(url, file_origins, accept=accept)
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise Unavailable(
                        f"upstream sent no answer for a file within {self._deadline:g} s"
                    ) from None
            try:
                yield self._body(response)
            finally:
                response.release()

        return open_body

    def _body(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        if self._min_rate > 0:
            return metered(
                partial(response.content.read, _CHUNK),
                min_rate=self._min_rate,
                window=self._rate_window,
                too_slow=self._too_slow,
            )
        return response.content.iter_chunked(_CHUNK)

    async def read_range(
        self,
        url: str,
        start: int,
        length: int,
        *,
        file_origins: Origins = frozenset,
    ) -> RangeAnswer | None:
        """`length` bytes of a file from byte `start`, or its last `length` bytes when `start`
        is negative (a suffix range: the size need not be known). None when upstream does not
        do ranges (it answers 200 with the whole file, which is not read); Unavailable when it
        cannot answer. The answer is at most `length` bytes, however many upstream sends."""
        answer = await self._ranged(url, start, length, file_origins, keep_whole=False)
        assert not isinstance(answer, WholeAnswer)
        return answer

    async def read_tail(
        self, url: str, length: int, *, file_origins: Origins = frozenset
    ) -> RangeAnswer | WholeAnswer:
        """A file's last `length` bytes, as read_range; from a host that does not do ranges,
        its answer of the whole file, unread (the caller takes it or closes it)."""
        answer = await self._ranged(url, -1, length, file_origins, keep_whole=True)
        assert answer is not None
        return answer

    async def read_whole(self, url: str, *, file_origins: Origins = frozenset) -> WholeAnswer:
        """A file's answer of the whole file, its body unread (the caller takes it or closes
        it): what a host known to answer ranges with the whole file is asked instead."""
        deadline = asyncio.timeout(self._deadline)
        with self._asking("file"):
            try:
                async with deadline:
                    response = await self._get_file(url, file_origins)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise Unavailable(
                    f"upstream sent no answer for a file within {self._deadline:g} s"
                ) from None
        again = self.opener(url, file_origins=file_origins)
        return WholeAnswer(response, self._body(response), again, decoded=not kept_as_sent(url))

    async def _ranged(
        self,
        url: str,
        start: int,
        length: int,
        file_origins: Origins,
        *,
        keep_whole: bool,
    ) -> RangeAnswer | WholeAnswer | None:
        wanted = f"bytes=-{length}" if start < 0 else f"bytes={start}-{start + length - 1}"
        deadline = asyncio.timeout(self._deadline)
        with self._asking("range"):
            try:
                async with deadline:
                    response = await self._get_file(url, file_origins, range_=wanted)
                    kept = False
                    try:
                        if response.status == 200:
                            if not keep_whole:
                                return None
                            kept = True
                            again = self.opener(url, file_origins=file_origins)
                            return WholeAnswer(
                                response, self._body(response), again,
                                decoded=not kept_as_sent(url),
                            )
                        match = _CONTENT_RANGE.fullmatch(
                            response.headers.get("Content-Range", "").strip()
                        )
                        if match is None:
                            raise Unavailable("upstream answered a range without Content-Range")
                        first, last, total = map(int, match.groups())
                        if last < first or last >= total or last - first + 1 > length:
                            raise Unavailable("upstream answered a range it was not asked for")
                        body = await response.content.readexactly(last - first + 1)
                    finally:
                        if not kept:
                            response.release()
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise Unavailable(
                    f"upstream sent no range of a file within {self._deadline:g} s"
                ) from None
            except asyncio.IncompleteReadError:
                raise Unavailable("upstream sent a range shorter than it announced") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise Unavailable(f"cannot read from upstream: {_describe(exc)}") from None
        return RangeAnswer(body, first, total)

    def _too_slow(self) -> None:
        metrics.UPSTREAM_ERRORS.labels("file").inc()
        self.last_failure = time.monotonic()

    async def _get_file(
        self,
        url: str,
        file_origins: Origins,
        *,
        range_: str | None = None,
        accept: str | None = None,
    ) -> aiohttp.ClientResponse:
        """The 200 response for a file (or 206 for `range_`), redirects followed by our rules;
        Unavailable if none."""
        allowed: Targets | None = None
        extra = {"Range": range_} if range_ else {}
        as_sent = kept_as_sent(url)
        if accept:
            extra["Accept"] = accept
        for hop in range(MAX_FILE_REDIRECTS + 1):
            try:
                response = await self.session.request(
                    "GET",
                    url,
                    headers={
                        "Accept-Encoding": "identity", **extra, **self._credentials_for(url)
                    },
                    allow_redirects=False,
                    auto_decompress=not as_sent,
                    **self._via(url),
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise Unavailable(f"cannot download from upstream: {_describe(exc)}") from None
            if response.status == 200 or (range_ and response.status == 206):
                return response
            location = response.headers.get("Location")
            response.release()
            if response.status in (404, 410):
                raise FileGone(f"upstream answered HTTP {response.status} for a file")
            if response.status not in REDIRECTS or not location:
                raise Unavailable(f"upstream answered HTTP {response.status} for a file")
            if hop == MAX_FILE_REDIRECTS:
                raise Unavailable(
                    f"upstream redirected a file more than {MAX_FILE_REDIRECTS} times"
                )
            if allowed is None:
                allowed = Targets(self._index_origins | frozenset(file_origins()), self._files_from)
            url = redirect_target(url, location, allowed)
        raise AssertionError("unreachable")

    async def probe(self) -> None:
        """HEAD the index (no body: the project list can be huge); UpstreamError if it does not
        answer usefully. 405 counts as an answer: an index may serve GET only."""
        with self._asking("probe"):
            try:
                async with self.session.head(
                    self.index_url, headers=self._credentials_for(self.index_url),
                    **self._via(self.index_url),
                ) as response:
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(_describe(exc)) from None
            if status >= 400 and status != 405:
                raise UpstreamError(f"answered HTTP {status}")

    def answer_unusable(self) -> None:
        """An answer that arrived but could not be used (a garbage page): for /ready, a failure."""
        self.last_failure = time.monotonic()

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


def kept_as_sent(url: str) -> bool:
    """Whether a file is taken as its bytes are sent, whatever Content-Encoding says: one whose
    own name says it is gzip (an sdist), which a host may send with `Content-Encoding: gzip`
    naming that very compression (S3 objects uploaded so, Apache's AddEncoding). pip keeps
    every file as sent, so the listed sha256 is of those bytes; undone, they would be a tar.
    Other files are undone as usual (a host that compresses them anyway)."""
    return urlsplit(url).path.lower().endswith((".gz", ".tgz"))


def _describe(exc: BaseException) -> str:
    """What went wrong, in words: aiohttp's own texts of these say little or nothing."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "redirected too many times"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        url = redact(str(exc.args[0])) if exc.args else "?"
        redirected = isinstance(exc, aiohttp.RedirectClientError)
        return f"{'redirected to' if redirected else 'links to'} {url!r}, not a URL pyproxy fetches"
    if isinstance(exc, aiohttp.ClientPayloadError):  # "400, message:\n  <what>"
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1] if lines else "cut short"
        return f"sent a malformed body ({detail})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.message.strip().splitlines()[0] if exc.message.strip() else (
            f"answered HTTP {exc.status}")
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def _bounded_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body as decompressed, read in chunks; UpstreamError past `limit` bytes."""
    length = response.content_length
    if length is not None and "Content-Encoding" not in response.headers and length > limit:
        raise UpstreamError(f"sent a page of {length} bytes, more than {limit} a page may have")
    chunks, received = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        received += len(chunk)
        if received > limit:
            raise UpstreamError(f"sent a page of more than {limit} bytes (as decompressed)")
        chunks.append(chunk)
    return b"".join(chunks)
