"""The rules of a file download from upstream, apart from the client that applies them
(repository/http.py): where its redirects may lead, and how slow its body may be.

Redirects: at most MAX_FILE_REDIRECTS, each to an allowed origin (scheme, host, port), so
pyproxy never downloads from a host that neither upstream's pages nor its operator named.

Throughput: a body must bring `min_rate` bytes a second over each `window` of time spent
waiting for it; the time the consumer takes between chunks (the disk, a slow client) does not
count, so only a slow upstream is judged slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from urllib.parse import urljoin, urlsplit

from pyproxy.model import Unavailable

__all__ = [
    "MAX_FILE_REDIRECTS", "REDIRECTS", "Origin", "configured_origin", "metered", "origin_of",
    "redirect_target",
]

MAX_FILE_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, lower-case host, port


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, the default port filled in; None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]


def configured_origin(entry: str) -> Origin:
    """An `[upstream] files_from` entry: "scheme://host[:port]", or a bare host[:port] (https)."""
    entry = entry.strip()
    origin = origin_of(entry if "://" in entry else f"https://{entry}")
    if origin is None:
        raise ValueError(f"{entry!r} is not scheme://host[:port] or a host name")
    return origin


def _shown(origin: Origin) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS[scheme] == port else f":{port}")


def redirect_target(url: str, location: str, allowed: Collection[Origin]) -> str:
    """Where a redirect of `url` to `location` leads, if that is an allowed origin; else
    Unavailable (the target is not asked anything)."""
    try:
        target = urljoin(url, location.strip())
    except ValueError:
        target = ""
    origin = origin_of(target)
    if origin not in allowed:
        where = "a URL that is not http(s)" if origin is None else _shown(origin)
        raise Unavailable(
            f"upstream redirected a file to {where}, which is neither a host its pages"
            " list files on nor one allowed by [upstream] files_from"
        )
    return target


async def metered(
    read: Callable[[], Awaitable[bytes]],
    *,
    min_rate: int,
    window: float,
    too_slow: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The chunks `read()` returns until b""; once a window of waiting brought fewer than
    `min_rate * window` bytes, `too_slow()` is called and Unavailable raised."""
    clock = asyncio.get_running_loop().time
    needed = min_rate * window
    waited, received = 0.0, 0
    while True:
        started = clock()
        waiting = asyncio.timeout(window - waited)
        chunk: bytes | None = None
        try:
            async with waiting:
                chunk = await read()
        except TimeoutError:
            if not waiting.expired():
                raise  # the reader's own timeout
        waited += clock() - started
        if chunk == b"":
            return
        if chunk:
            received += len(chunk)
            yield chunk
        if waited >= window:
            if received < needed:
                too_slow()
                raise Unavailable(
                    f"upstream sent {received} bytes in {window:g} s, less than"
                    f" [upstream] min_rate ({min_rate} bytes/s): download aborted"
                )
            waited, received = 0.0, 0
