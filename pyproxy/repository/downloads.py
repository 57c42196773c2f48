"""The rules of a file download from upstream, apart from the client that applies them
(repository/http.py): where its redirects may lead, and how slow its body may be.

Redirects: at most MAX_FILE_REDIRECTS, each to an allowed origin (scheme, host, port) or to a
host the operator named in `files_from` (as `[[upstreams]]` has them: "host" on any port,
"host:port" on that one), so pyproxy never downloads from a host nobody named.

Throughput: a body must bring `min_rate` bytes a second over each `window` of time spent
waiting for it; the time the consumer takes between chunks (the disk, a slow client) does not
count, so only a slow upstream is judged slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from urllib.parse import urljoin, urlsplit

from pyproxy.model import Unavailable

__all__ = [
    "MAX_FILE_REDIRECTS", "REDIRECTS", "HostRule", "Origin", "Origins", "Targets", "host_rule",
    "metered", "origin_of", "origins_of", "redirect_target",
]

MAX_FILE_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, lower-case host, port
HostRule = tuple[str, int | None]  # a files_from entry: lower-case host, its port or any
# the origins a page links files on, where a redirect may lead: asked at a redirect only
Origins = Callable[[], Collection[Origin]]


def origins_of(urls: Iterable[str]) -> frozenset[Origin]:
    """The origins of those of `urls` that are http(s) URLs."""
    found = (origin_of(url) for url in urls)
    return frozenset(origin for origin in found if origin is not None)


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


def host_rule(entry: str) -> HostRule:
    """A `files_from` entry ("host", "host:port", "[v6]:port"), checked by the settings."""
    entry = entry.strip().lower()
    if entry.rsplit("]", 1)[-1].count(":") == 1:
        host, _, port = entry.rpartition(":")
        return host.strip("[]"), int(port)
    return entry.strip("[]"), None


class Targets:
    """Where redirects of one download may lead: exact origins, and files_from hosts."""

    def __init__(self, origins: Collection[Origin], hosts: Collection[HostRule]) -> None:
        self.origins = frozenset(origins)
        self.hosts = tuple(hosts)

    def allow(self, origin: Origin | None) -> bool:
        if origin is None:
            return False
        _scheme, host, port = origin
        return origin in self.origins or any(
            host == ruled and ruled_port in (None, port) for ruled, ruled_port in self.hosts
        )


def _shown(origin: Origin) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS[scheme] == port else f":{port}")


def redirect_target(url: str, location: str, allowed: Targets) -> str:
    """Where a redirect of `url` to `location` leads, if `allowed` allows it; else Unavailable
    (the target is not asked anything)."""
    try:
        target = urljoin(url, location.strip())
    except ValueError:
        target = ""
    origin = origin_of(target)
    if not allowed.allow(origin):
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
