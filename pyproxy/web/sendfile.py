"""The kernel's sendfile, also on a loop that offers none (uvloop): zero-copy, as asyncio's own.

uvloop's `loop.sendfile` raises NotImplementedError, and copying a file through the transport
in chunks read in threads cost 2.6 times the CPU of asyncio's native sendfile for a warm file
(2 MB, one worker: 2.0 ms against 0.77 ms). So once the transport's buffer is empty, the bytes
go straight from the file to the socket, from a duplicate of its descriptor (uvloop lets nobody
else watch the transport's own), waiting for the socket to be writable whenever it is full.
The file's position is left after the bytes sent, as asyncio's sendfile leaves it.
"""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO

_BLOCK = 1 << 20  # at most per call: the loop gets a turn between blocks
_CHECK_S = 1.0  # how often a wait for a writable socket looks whether the connection closed


async def sendfile(transport: asyncio.Transport, fobj: BinaryIO, offset: int, count: int) -> int:
    """Send `count` bytes of `fobj` from `offset`; fewer only if the file ended first. Raises
    NotImplementedError where the bytes must pass through the transport (TLS), and
    ConnectionResetError once the connection is gone."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.sendfile(transport, fobj, offset, count)
    except NotImplementedError:
        pass
    try:
        sent = await send_fd(transport, fobj.fileno(), offset, count)
    except ClientGone as exc:
        fobj.seek(offset + exc.sent)
        raise
    fobj.seek(offset + sent)
    return sent


class ClientGone(ConnectionResetError):
    """The connection closed after `sent` bytes of a sendfile."""

    def __init__(self, message: str, sent: int) -> None:
        super().__init__(message)
        self.sent = sent


def can_send_fd(transport: asyncio.BaseTransport) -> bool:
    """Whether `send_fd` can write to this transport (a plain socket; not TLS)."""
    return (
        transport.get_extra_info("socket") is not None
        and transport.get_extra_info("sslcontext") is None
    )


async def send_fd(transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
    """Send `count` bytes of the file open as `fd` from `offset`, once what the transport holds
    is sent; fewer only if the file ended first. Raises NotImplementedError for TLS and
    ClientGone (a ConnectionResetError) once the connection is gone."""
    if not can_send_fd(transport):
        raise NotImplementedError("the transport has no plain socket")
    loop = asyncio.get_running_loop()
    while transport.get_write_buffer_size():  # the headers, usually already gone
        _check_open(transport)
        await asyncio.sleep(0.001)
    _check_open(transport)
    try:
        out = os.dup(transport.get_extra_info("socket").fileno())
    except OSError as exc:  # closed meanwhile: its fileno is -1
        raise ConnectionResetError(str(exc)) from None
    sent = 0
    try:
        while sent < count:
            _check_open(transport)
            try:
                done = os.sendfile(out, fd, offset + sent, min(_BLOCK, count - sent))
            except BlockingIOError:
                await _writable(loop, out, transport)
                continue
            if done == 0:  # the file ended
                break
            sent += done
    except OSError as exc:  # EPIPE, ECONNRESET, closed while waiting: the client went away
        raise ClientGone(str(exc), sent) from None
    finally:
        os.close(out)
    return sent


def _check_open(transport: asyncio.Transport) -> None:
    if transport.is_closing():
        raise ConnectionResetError("the client went away")


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, transport: asyncio.Transport) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(ready), _CHECK_S)
                return
            except TimeoutError:
                _check_open(transport)  # a client that stopped reading and then closed
    finally:
        loop.remove_writer(fd)
        if not ready.done():
            ready.cancel()
