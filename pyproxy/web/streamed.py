"""Sending a body still arriving from upstream: the download in progress, as it is written.

A download on this machine is followed in its file: the bytes go from the file to the socket
with the kernel's sendfile as they are written, so fifty clients following one download hold
no copies of it in memory (they held a 256 KB chunk and the socket's buffer each: a worker's
peak RSS grew by 46 MB for 50 clients of an 8 MB file) and cost no thread hop per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from pyproxy.model import FileBacked, StreamedFile
from pyproxy.web.access_log import CUT_SHORT, CutShort
from pyproxy.web.files import CACHE_STATUS, base_headers, client_went_away, served
from pyproxy.web.sendfile import ClientGone, can_send_fd, send_fd


async def send_streamed(
    request: web.Request,
    file: StreamedFile,
    on_error: Callable[[BaseException], None],
    *,
    status: int = 200,
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """A body still arriving from upstream (the file, or with status 206 a part of it). Errors
    mid-body abort the connection, so a client never takes a truncated or mismatching file
    for a complete one."""
    headers = base_headers(f'"{file.sha256}"' if file.sha256 else None, None)
    headers[CACHE_STATUS] = "miss"
    if file.size is not None and file.download is not None:  # see web/cold.py
        headers[hdrs.ACCEPT_RANGES] = "bytes"
    headers.update(extra_headers or {})
    response = web.StreamResponse(status=status, headers=headers)
    if file.size is not None:
        response.content_length = file.size
    try:
        writer = await response.prepare(request)
    except ConnectionError:  # gone while upstream was being asked
        client_went_away(request, 0, 0, file.size)
        return response
    if request.method == hdrs.METH_HEAD or writer is None:
        return response
    head = writer.output_size
    transport = request.transport
    if (
        isinstance(file.chunks, FileBacked)
        and file.size is not None  # a known length: the body is not chunked by the writer
        and transport is not None
        and can_send_fd(transport)
    ):
        await _send_from_file(request, transport, writer, response, file, file.chunks, on_error)
        return response
    sent = 0
    chunks = aiter(file.chunks)
    try:
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:
                _abort(request, response, exc, on_error, head + sent)
                return response  # aiohttp records it and closes; raising would log a traceback
            try:
                await response.write(chunk)
            except ConnectionError:
                _client_left(request, response, head, sent, file.size)
                return response
            sent += len(chunk)
    finally:
        served(request, sent)
    return response


async def _send_from_file(
    request: web.Request,
    transport: asyncio.Transport,
    writer: AbstractStreamWriter,
    response: web.StreamResponse,
    file: StreamedFile,
    body: FileBacked,
    on_error: Callable[[BaseException], None],
) -> None:
    head, begin, partial = writer.output_size, body.position, 0
    try:
        await body.send_to(lambda fd, offset, count: send_fd(transport, fd, offset, count))
    except ConnectionResetError as exc:
        partial = exc.sent if isinstance(exc, ClientGone) else 0
        _client_left(request, response, head, body.position - begin + partial, file.size)
    except Exception as exc:
        _abort(request, response, exc, on_error, head + body.position - begin)
    finally:
        sent = body.position - begin + partial
        writer.output_size = head + sent  # bypassed the writer; the access log reads it
        served(request, sent)


def _abort(
    request: web.Request,
    response: web.StreamResponse,
    exc: Exception,
    on_error: Callable[[BaseException], None],
    written: int,
) -> None:
    """Upstream's body failed: the client must not take the part it has for a whole file, so
    the connection is aborted."""
    on_error(exc)
    if request.transport is not None:
        request.transport.abort()
    response.force_close()
    request[CUT_SHORT] = CutShort(written, "aborted")


def _client_left(
    request: web.Request, response: web.StreamResponse, head: int, sent: int, size: int | None
) -> None:
    client_went_away(request, head, sent, size)
    response.force_close()
