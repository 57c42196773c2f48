"""Sending a complete file on disk (a cached upstream file, a private one): HEAD,
If-None-Match, Range and If-Range, with sendfile (files.py has the HTTP pieces)."""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web

from pyproxy.model import LocalFile
from pyproxy.web.conditional import none_match
from pyproxy.web.files import (
    CACHE_STATUS,
    ByteRange,
    FileBody,
    Unsatisfiable,
    base_headers,
    if_range_holds,
    open_for_sending,
    parse_range,
)


async def send_local(request: web.Request, file: LocalFile) -> web.StreamResponse:
    """A complete file on disk, with HEAD, If-None-Match, Range and If-Range."""
    etag = f'"{file.sha256}"'
    # open first: the path may be evicted from a cache meanwhile, an open file survives it
    fobj, stat, body = await asyncio.to_thread(open_for_sending, file.path)
    try:
        size = stat.st_size
        headers = base_headers(etag, stat.st_mtime)
        headers[hdrs.ACCEPT_RANGES] = "bytes"
        headers[CACHE_STATUS] = "hit"
        if none_match(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            fobj.close()
            return web.Response(
                status=304, headers={k: v for k, v in headers.items() if k != hdrs.CONTENT_TYPE}
            )
        span = ByteRange(0, size - 1) if size else ByteRange(0, -1)
        status = 200
        range_header = request.headers.get(hdrs.RANGE)
        if_range = request.headers.get(hdrs.IF_RANGE)
        if range_header and (
            if_range is None or if_range_holds(if_range.strip(), etag, stat.st_mtime)
        ):
            try:
                requested = parse_range(range_header, size)
            except Unsatisfiable:
                fobj.close()
                headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if requested is not None:
                span, status = requested, 206
                headers[hdrs.CONTENT_RANGE] = f"bytes {span.start}-{span.end}/{size}"
        response = FileBody(fobj, span.start, span.length, body, status=status, headers=headers)
        response.content_length = span.length
        return response
    except BaseException:
        fobj.close()
        raise
