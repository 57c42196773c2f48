"""Sending distribution files: conditional requests, single byte ranges, sendfile, streaming.

aiohttp's FileResponse derives its ETag from the mtime and reads If-Range only as a date, so
a resumed pip download with an ETag validator would get a wrong 206. Our files are
content-addressed, so the sha256 is a natural strong ETag; this module does the HTTP side.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from pyproxy import metrics
from pyproxy.web.access_log import CACHE_OUTCOME, CUT_SHORT, CutShort, request_value
from pyproxy.web.request_metrics import count
from pyproxy.web.sendfile import sendfile

log = logging.getLogger("pyproxy.web")
IMMUTABLE = "max-age=365000000, immutable"
# tells `pyproxy prefetch` (and operators) whether a file was already on disk
CACHE_STATUS = "X-Pyproxy-Cache"
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> ByteRange | None:
    """One `bytes=` range resolved against `size`; None means "send the whole file" (no
    usable range, or several ranges, which we may ignore per RFC 9110)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:  # suffix range: the last N bytes
            suffix = int(last)
            if suffix < 0:
                return None
            if suffix == 0 or size == 0:
                raise Unsatisfiable
            return ByteRange(max(size - suffix, 0), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0:
        return None
    if start >= size:
        raise Unsatisfiable
    if end < start:
        return None
    return ByteRange(start, min(end, size - 1))


def if_range_holds(if_range: str, etag: str, last_modified: float) -> bool:
    """Whether a Range may be honoured under this If-Range: its entity tag or its date matches
    the file's (RFC 9110 13.1.5). One that matches neither, or is neither (garbage, a date
    that cannot be), does not hold: the whole file is sent, with 200."""
    if if_range.startswith('"'):
        return if_range == etag  # strong comparison; a weak tag never matches
    if if_range.startswith("W/") or not if_range:
        return False
    try:
        parsed = email.utils.parsedate_to_datetime(if_range)
        return int(parsed.timestamp()) == int(last_modified)
    except (TypeError, ValueError, OverflowError):  # not an HTTP date, or not one that exists
        return False


class _Shrank(Exception):
    """The file on disk ended before the span being sent did."""


class FileBody(web.StreamResponse):
    """Sends a byte span of an open file with the kernel's sendfile where possible (a file
    small enough to have been read with its open is written from memory; one held in memory
    has no open file: `fobj` None)."""

    # headers go out with the first body bytes: one write for a small file (sendfile and the
    # chunked copy send them first, see prepare)
    _send_headers_immediately = False

    def __init__(
        self, fobj: BinaryIO | None, offset: int, count: int, body: bytes | None, *, status: int,
        headers: dict[str, str],
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._fobj = fobj
        self._offset = offset
        self._count = count
        self._preloaded = body
        self._copied: int | None = None  # bytes written through the writer, when it is used

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        head = sent = 0
        try:
            writer = await super().prepare(request)
            if request.method == hdrs.METH_HEAD or self._count == 0 or writer is None:
                return writer
            if self._preloaded is not None:  # headers and body in one write
                sent = await self._send(request, writer)
                return writer
            writer.send_headers()  # sendfile bypasses the writer
            head = writer.output_size
            sent = await self._send(request, writer)
            writer.output_size = head + sent  # bypassed the writer; the access log reads it
            return writer
        except ConnectionError:
            sent = self._sent_before_failure()
            client_went_away(request, head, sent, self._count)
            raise ConnectionResetError("the client went away") from None  # aiohttp: quietly
        except _Shrank:
            sent = self._sent_before_failure()
            log.error("%s %s: the file on disk shrank while it was sent",
                      request.method, request.path)
            if request.transport is not None:
                request.transport.abort()  # Content-Length promised more: never a short "whole"
            request[CUT_SHORT] = CutShort(head + sent, "aborted")
            raise ConnectionResetError("the file shrank") from None
        finally:
            served(request, sent)
            if self._fobj is not None:
                self._fobj.close()

    async def _send(self, request: web.BaseRequest, writer: AbstractStreamWriter) -> int:
        transport = request.transport
        if transport is None or transport.is_closing():  # sendfile would say RuntimeError
            raise ConnectionResetError("the client went away")
        if self._preloaded is not None:  # read with its open: from memory
            self._copied = 0
            await writer.write(self._preloaded[self._offset : self._offset + self._count])
            self._copied = self._count
            return self._count
        assert self._fobj is not None  # only a body held in memory has no open file
        try:
            sent = await sendfile(transport, self._fobj, self._offset, self._count)
        except NotImplementedError:  # TLS under uvloop: copy in chunks off the loop
            await self._copy(writer)
            sent = self._count
        if sent < self._count:
            raise _Shrank
        return sent

    def _sent_before_failure(self) -> int:
        """asyncio's sendfile leaves the file's position after the bytes it sent; writes
        through the writer (from memory, or _copy's) keep their own count."""
        if self._copied is not None or self._fobj is None:
            return self._copied or 0
        return min(max(self._fobj.tell() - self._offset, 0), self._count)

    async def _copy(self, writer: AbstractStreamWriter) -> None:
        position, remaining = self._offset, self._count
        self._copied = 0
        assert self._fobj is not None
        fd = self._fobj.fileno()
        while remaining > 0:
            chunk = await asyncio.to_thread(os.pread, fd, min(_CHUNK, remaining), position)
            if not chunk:
                raise _Shrank
            await writer.write(chunk)
            position += len(chunk)
            remaining -= len(chunk)
            self._copied += len(chunk)


_SERVED_FROM = {"hit": "cache", "miss": "upstream", "coalesced": "upstream"}


def outcome(request: web.BaseRequest, cache: str) -> None:
    """How the file was had ("hit", "miss", ...), for the access log and the metrics."""
    request[CACHE_OUTCOME] = cache
    if cache in metrics.CACHE_RESULTS:
        count(metrics.CACHE_REQUESTS.labels(cache))


def served(request: web.BaseRequest, sent: int) -> None:
    """Body bytes of an upstream file sent, by where they came from (private files: not counted)."""
    source = _SERVED_FROM.get(request_value(request, CACHE_OUTCOME, "-"))
    if source is not None and sent:
        count(metrics.SERVED_BYTES.labels(source), sent)


def client_went_away(request: web.BaseRequest, head: int, sent: int, size: int | None) -> None:
    """The one line (and the access log's record) for a download the client abandoned."""
    log.warning(
        "%s %s: the client went away after %d of %s body bytes",
        request.method, request.path, sent, "?" if size is None else size,
    )
    request[CUT_SHORT] = CutShort(head + sent, "client")


def base_headers(etag: str | None, last_modified: float | None) -> dict[str, str]:
    headers: dict[str, str] = {
        hdrs.CACHE_CONTROL: IMMUTABLE, hdrs.CONTENT_TYPE: "application/octet-stream"
    }
    if etag is not None:
        headers[hdrs.ETAG] = etag
    if last_modified is not None:
        headers[hdrs.LAST_MODIFIED] = email.utils.formatdate(last_modified, usegmt=True)
    return headers


def open_for_sending(path: Path) -> tuple[BinaryIO, os.stat_result, bytes | None]:
    """In a thread: the open file, its stat, and its bytes if it fits in one chunk (a small
    file, e.g. a .metadata, then costs this one thread hop and no more)."""
    fobj = open(path, "rb")  # noqa: SIM115 - handed to the response, which closes it
    try:
        stat = os.fstat(fobj.fileno())
        body = os.pread(fobj.fileno(), stat.st_size, 0) if stat.st_size <= _CHUNK else None
    except BaseException:
        fobj.close()
        raise
    if body is not None and len(body) != stat.st_size:
        body = None  # changed under us (never for a committed file): send what is on disk
    return fobj, stat, body


async def send_rendered(
    request: web.Request, path: Path, headers: dict[str, str]
) -> web.StreamResponse:
    """A rendered page on disk, whole, with sendfile and the headers given (the caller has
    answered If-None-Match); FileNotFoundError when it is gone."""
    fobj, stat, body = await asyncio.to_thread(open_for_sending, path)
    response = FileBody(fobj, 0, stat.st_size, body, status=200, headers=headers)
    response.content_length = stat.st_size
    return response
