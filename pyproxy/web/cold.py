"""An upstream file not on disk yet: HEAD from what its page says, Range as soon as its bytes
can be had (repository/misses.py decides where from), anything else from the one download.

A HEAD starts no download: Content-Length is the page's size (or upstream's word for it), the
ETag the page's sha256, as a warm file has them. `Accept-Ranges: bytes` only with a size: uv
then reads a wheel's metadata in ranges, and without one a HEAD that promises ranges but gives
no length would make uv give up on ranges for the whole index. If-Range holds only for the
strong ETag (a cold file has no Last-Modified); several ranges are answered with the whole file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import hdrs, web

from pyproxy.model import LocalFile, RemoteFile, StreamedFile
from pyproxy.web.files import (
    CACHE_STATUS,
    Unsatisfiable,
    base_headers,
    client_went_away,
    outcome,
    parse_range,
)
from pyproxy.web.local_files import send_local
from pyproxy.web.streamed import send_streamed

log = logging.getLogger("pyproxy.web")


async def send_remote(
    request: web.Request, file: RemoteFile
) -> tuple[web.StreamResponse, LocalFile | StreamedFile | None]:
    """The response, and the file if it was sent whole (for the warm-up)."""
    # no 304 for If-None-Match: it means "pyproxy holds this file" (pyproxy prefetch asks so)
    etag = f'"{file.sha256}"' if file.sha256 else None
    if request.method == hdrs.METH_HEAD:
        return await _head(request, file, etag), None
    range_header = request.headers.get(hdrs.RANGE)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if range_header and (if_range is None or (etag is not None and if_range.strip() == etag)):
        size = await file.total()
        if size is not None:
            try:
                span = parse_range(range_header, size)
            except Unsatisfiable:
                outcome(request, file.cache)
                headers = {**base_headers(etag, None), hdrs.CONTENT_RANGE: f"bytes */{size}"}
                return web.Response(status=416, headers=headers), None
            if span is not None:
                whole = await file.whole()  # the one download, started or joined
                outcome(request, whole.cache)
                if isinstance(whole, LocalFile):  # cached meanwhile: it answers the range itself
                    return await send_local(request, whole), None
                body = await file.span(whole, span.start, span.end + 1)
                part = StreamedFile(chunks=body, size=span.length, sha256=file.sha256)
                content_range = f"bytes {span.start}-{span.end}/{size}"
                response = await send_streamed(
                    request, part, _aborted(request), status=206,
                    extra_headers={hdrs.ACCEPT_RANGES: "bytes", hdrs.CONTENT_RANGE: content_range},
                )
                return response, None
    whole = await file.whole()
    outcome(request, whole.cache)
    if isinstance(whole, LocalFile):
        return await send_local(request, whole), whole
    return await send_streamed(request, whole, _aborted(request)), whole


async def _head(request: web.Request, file: RemoteFile, etag: str | None) -> web.StreamResponse:
    outcome(request, file.cache)
    size = await file.total()
    headers = {**base_headers(etag, None), CACHE_STATUS: "miss"}
    if size is not None:
        headers[hdrs.ACCEPT_RANGES] = "bytes"
    response = web.StreamResponse(status=200, headers=headers)
    if size is not None:
        response.content_length = size
    try:
        await response.prepare(request)
    except ConnectionError:
        client_went_away(request, 0, 0, size)
    return response


def _aborted(request: web.Request) -> Callable[[BaseException], None]:
    return lambda exc: log.warning("aborted %s: %s", request.path, exc)
