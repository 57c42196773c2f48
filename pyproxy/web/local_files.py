"""Sending a complete file on disk (a cached upstream file, a private one): HEAD,
If-None-Match, Range and If-Range, with sendfile, or from memory for a small file already read
(small_files.py); files.py has the HTTP pieces."""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO

from aiohttp import hdrs, web

from pyproxy.model import LocalFile
from pyproxy.stores.blobindex import vanished
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
from pyproxy.web.small_files import Held, SmallFiles, verify

SMALL_FILES = web.AppKey("small_files", SmallFiles)


async def send_local(request: web.Request, file: LocalFile) -> web.StreamResponse:
    """A complete file on disk, with HEAD, If-None-Match, Range and If-Range; a small one from
    memory once it has been read (small_files.py)."""
    small = request.app[SMALL_FILES]
    held = small.get(file)
    if held is not None:
        return _answer(request, file, None, held.body, held.mtime, dict(held.headers))
    # open first: the path may be evicted from a cache meanwhile, an open file survives it
    fobj, stat, body, verified = await asyncio.to_thread(_open_checked, file, small.wanted(file))
    try:
        headers = base_headers(f'"{file.sha256}"', stat.st_mtime)
        headers[hdrs.ACCEPT_RANGES] = "bytes"
        headers[CACHE_STATUS] = "hit"
        if body is not None:
            small.keep(file, Held(body, stat.st_mtime, dict(headers)), verified=verified)
        return _answer(request, file, fobj, body, stat.st_mtime, headers, stat.st_size)
    except BaseException:
        fobj.close()
        raise


def _open_checked(
    file: LocalFile, check: bool
) -> tuple[BinaryIO, os.stat_result, bytes | None, bool]:
    """In a thread: open_for_sending's answer, and whether the bytes read are all of `file`
    (checked only when asked: a file small enough to be kept in memory). FileNotFoundError
    when the file is gone; a cached one is then forgotten, so that looking it up again misses."""
    try:
        fobj, stat, body = open_for_sending(file.path)
    except FileNotFoundError:
        # evicted (the index knows), or deleted by hand (it does not): the failed open is the
        # only sign, so a hit costs no stat
        vanished(file.path)
        raise
    try:
        return fobj, stat, body, check and body is not None and verify(file, body)
    except BaseException:
        fobj.close()
        raise


def _answer(
    request: web.Request, file: LocalFile, fobj: BinaryIO | None, body: bytes | None,
    mtime: float, headers: dict[str, str], size: int | None = None,
) -> web.StreamResponse:
    """The 304, 416, 206 or 200 for the file open as `fobj` or held as `body` (then `fobj` is
    None); closes `fobj` unless the response that sends it is returned."""
    size = len(body) if size is None and body is not None else size
    assert size is not None
    etag = headers[hdrs.ETAG]
    if none_match(request.headers.get(hdrs.IF_NONE_MATCH), etag):
        _close(fobj)
        del headers[hdrs.CONTENT_TYPE]
        return web.Response(status=304, headers=headers)
    span = ByteRange(0, size - 1) if size else ByteRange(0, -1)
    status = 200
    range_header = request.headers.get(hdrs.RANGE)
    if range_header:
        if_range = request.headers.get(hdrs.IF_RANGE)
        if if_range is None or if_range_holds(if_range.strip(), etag, mtime):
            try:
                requested = parse_range(range_header, size)
            except Unsatisfiable:
                _close(fobj)
                headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if requested is not None:
                span, status = requested, 206
                headers[hdrs.CONTENT_RANGE] = f"bytes {span.start}-{span.end}/{size}"
    response = FileBody(fobj, span.start, span.length, body, status=status, headers=headers)
    response.content_length = span.length
    return response


def _close(fobj: BinaryIO | None) -> None:
    if fobj is not None:
        fobj.close()
