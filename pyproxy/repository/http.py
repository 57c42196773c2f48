"""The upstream index over HTTP: one pooled aiohttp client, which remembers no page.

TLS checks against the configured CA bundle (else the system's); proxies come from the
environment (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), as corporate networks need; the index URL's
user:password is sent to the index's own origin only, never to a file host. Every request is
counted and timed, and its outcome kept for /ready (`last_success`, `last_failure`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from pyproxy import metrics
from pyproxy.model import Unavailable
from pyproxy.stores.blobcache import OpenUpstream

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1,"
    " text/html;q=0.01"
)
_CHUNK = 256 * 1024


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


class UpstreamError(Exception):
    """Upstream could not give a usable answer right now."""


@dataclass(frozen=True, slots=True)
class PageAnswer:
    """What the index answered for a page."""

    # 200; 304 (not modified: only when asked with validators); 404 (no such page: 404 or 410)
    status: int
    url: str  # the final URL (after redirects), against which relative links resolve
    body: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None


class UpstreamClient:
    def __init__(self, index_url: str, *, timeout: float, ca_bundle: str = "") -> None:
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
        self._ca_bundle = ca_bundle
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

    def _credentials_for(self, url: str) -> dict[str, str]:
        # credentials go only to the index's own origin, never to a file host
        return self._authorization if urlsplit(url)[:2] == self._index_origin else {}

    async def get_page(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> PageAnswer:
        """GET a page, conditionally when validators are given; UpstreamError for any answer
        other than 200, 304, 404 or 410, and for timeouts and connection errors."""
        headers = {"Accept": ACCEPT, **self._credentials_for(url)}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with self._asking("page"):
            try:
                async with self.session.get(url, headers=headers) as response:
                    if response.status == 304 and (etag or last_modified):
                        return PageAnswer(304, url)
                    if response.status in (404, 410):
                        return PageAnswer(404, url)
                    if response.status != 200:
                        raise UpstreamError(f"answered HTTP {response.status}")
                    return PageAnswer(
                        200,
                        str(response.url),
                        await response.read(),
                        response.headers.get("Content-Type"),
                        response.headers.get("ETag"),
                        response.headers.get("Last-Modified"),
                    )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(_describe(exc)) from None

    def opener(self, url: str) -> OpenUpstream:
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

        return open_body

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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
