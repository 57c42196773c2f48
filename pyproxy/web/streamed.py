"""Sending a body still arriving from upstream: the download in progress, as it is written."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import hdrs, web

from pyproxy.model import StreamedFile
from pyproxy.web.access_log import CUT_SHORT, CutShort
from pyproxy.web.files import CACHE_STATUS, base_headers, client_went_away, served


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
    sent = 0
    chunks = aiter(file.chunks)
    try:
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:  # upstream's body failed: the client must not take the
                on_error(exc)  # part it has for a whole file, so the connection is aborted
                if request.transport is not None:
                    request.transport.abort()
                response.force_close()
                request[CUT_SHORT] = CutShort(head + sent, "aborted")
                return response  # aiohttp records it and closes; raising would log a traceback
            try:
                await response.write(chunk)
            except ConnectionError:
                client_went_away(request, head, sent, file.size)
                response.force_close()
                return response
            sent += len(chunk)
    finally:
        served(request, sent)
    return response
