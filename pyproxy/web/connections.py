"""Connections a worker accepts: at most `[server] max_connections` open, and none that holds
its place without sending a request.

aiohttp closes a connection that sits idle between requests after its keep-alive timeout (also
one that has started its next head but not finished it), but a new connection gets the same
timeout for its first head, and nothing bounds how many are open: a client that opens
connections and trickles bytes into their heads would use up the worker's file descriptors, and
then nobody gets served. So every connection goes through a `_Guarded` protocol, which
- closes (with 408) a connection whose first request head is not complete within
  `header_timeout` seconds, however slowly bytes arrive;
- answers 503 and closes when the worker already has `max_connections` open, logging a warning
  (at most once a minute, with the number refused), while the open connections go on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import cast

from aiohttp import web

log = logging.getLogger("pyproxy")

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_BUSY_BODY = b"too many connections to this server; try again\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)
_NOTE_EVERY_S = 60.0


class ConnectionGuard:
    """One per worker: counts its open connections and makes a protocol for each new one."""

    def __init__(self, server: web.Server, *, limit: int, header_timeout: float) -> None:
        self.server = server
        self.limit = limit
        self.header_timeout = header_timeout
        self.open = 0
        self._refused = 0  # since the last warning
        self._noted = -_NOTE_EVERY_S

    def protocol(self) -> asyncio.Protocol:
        return _Guarded(self)

    def refused(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._noted >= _NOTE_EVERY_S:
            log.warning(
                "connection limit reached: %d open connections ([server] max_connections);"
                " refused %d new connection(s) with 503",
                self.open, self._refused,
            )
            self._noted, self._refused = now, 0


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the head timer and the count. The count is
    taken in connection_made/connection_lost, which asyncio pairs, so it cannot drift."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the end of what came so far, for a blank line split across reads

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's are not asyncio's subclasses
        guard = self._guard
        if guard.open >= guard.limit:
            guard.refused()
            transport.write(_BUSY)
            transport.close()
            return
        guard.open += 1
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(guard.header_timeout, self._too_slow)
        self._inner = guard.server()
        self._inner.connection_made(base)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: whatever the client sends is dropped with the connection
        if self._timer is not None:
            seen = self._tail + data
            # the blank line that ends a head: CRLF CRLF, or bare LFs, which aiohttp also takes
            if b"\n\r\n" in seen or b"\n\n" in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-2:]
        self._inner.data_received(data)

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_TIMED_OUT)
            self._transport.close()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._guard.open -= 1
        inner, self._inner, self._transport = self._inner, None, None
        inner.connection_lost(exc)


class GuardedSite(web.SockSite):
    """aiohttp's SockSite, serving each connection through the guard's protocol."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.AppRunner, sock: socket.socket, guard: ConnectionGuard,
                 backlog: int) -> None:
        super().__init__(runner, sock, backlog=backlog)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol, sock=self._sock, backlog=self._backlog
        )
