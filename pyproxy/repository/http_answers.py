"""What the upstream client (repository/http.py) answers: a page, part of a file, a file's
whole answer not read yet, and the error for an upstream that gives no usable answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiohttp

from pyproxy.stores.blobcache import OpenUpstream

__all__ = ["PageAnswer", "RangeAnswer", "UpstreamError", "WholeAnswer"]


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


@dataclass(frozen=True, slots=True)
class RangeAnswer:
    """Part of an upstream file: `body` begins at byte `start` of a file of `total` bytes."""

    body: bytes
    start: int
    total: int


class WholeAnswer:
    """A range upstream answered with the whole file (200), its body not read yet: `opener`
    gives that body to the blob cache as the file's download (a fresh request once it was
    taken or closed); `close` lets the connection go if nobody took it."""

    def __init__(
        self, response: aiohttp.ClientResponse, body: AsyncIterator[bytes], again: OpenUpstream,
        *, decoded: bool = True,
    ) -> None:
        # the file's size, unless the body is compressed and undone (pyproxy asks for none, a
        # host may; `decoded` False: taken as sent, see http.kept_as_sent)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        self.size = (
            response.content_length if encoding in ("", "identity") or not decoded else None
        )
        self._response: aiohttp.ClientResponse | None = response
        self._body = body
        self._again = again

    def opener(self) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        response, self._response = self._response, None
        if response is None:
            return self._again()
        return self._kept(response)

    @asynccontextmanager
    async def _kept(self, response: aiohttp.ClientResponse) -> AsyncIterator[AsyncIterator[bytes]]:
        try:
            yield self._body
        finally:
            response.release()

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
