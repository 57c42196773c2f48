"""Upstream files not on disk yet, for HEAD and Range requests that should not wait for them.

A HEAD needs the size and the hash: the page gives them (JSON), or upstream tells the size in
its answer to a one-byte suffix range (HTML pages give none): the Content-Range, or from a host
that answers ranges with the whole file the Content-Length of that answer (not read),
remembered per file. A Range starts (or joins) the one full download and is answered from its
file as soon as the bytes are written; a range far ahead of the download (the member a zip's
directory points to) is asked of upstream in a ranged request of its own, held in memory and
never cached.

Bytes served before the full download is verified: only for a file whose page lists its sha256,
of a known size (a ranged answer must be of a file of that size), not in a range that includes
the file's last byte, and not after a download of it failed its hash check in this process.
Those are bytes of the very file the sha256 names, as far as upstream can tell (a client reading
upstream directly gets the same); a client that puts a whole file together checks it against the
same sha256; and a range with the last byte, as the last byte of a whole body, waits for the
hash check, so no complete file nor its end ever arrives unverified. Otherwise a range waits for
the verified file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pyproxy.lru import BoundedLRU
from pyproxy.model import LocalFile, RemoteFile, StreamedFile, Unavailable
from pyproxy.repository.downloads import origin_of
from pyproxy.repository.http_answers import RangeAnswer, WholeAnswer
from pyproxy.stores.chunks import once

log = logging.getLogger("pyproxy.upstream")

NEAR = 1024 * 1024  # a range ending this close to what the download has written waits for it
MAX_RANGE = 1024 * 1024  # the most asked of upstream in one ranged read (it is held in memory)
_SIZES = 4096  # files whose size upstream told
_HOSTS = 64  # hosts remembered that answer ranges with the whole file
_ASK_AGAIN_S = 3600.0  # after which such a host is asked for ranges again

Fetch = Callable[[], Awaitable[LocalFile | StreamedFile]]
ReadRange = Callable[[int, int], Awaitable[RangeAnswer | None]]
# a file's last n bytes, or upstream's answer of the whole file, unread (repository/http.py)
ReadTail = Callable[[int], Awaitable[RangeAnswer | WholeAnswer]]


def host_of(url: str) -> str:
    """scheme://host:port of a file URL (never its credentials), for the range memory."""
    origin = origin_of(url)
    return url if origin is None else "{}://{}:{}".format(*origin)


class RangeMemory:
    """What upstream told of files' sizes (asked once per file), and which of its hosts answer
    ranges with the whole file (asked again after a while), in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._sizes: BoundedLRU[str, int] = BoundedLRU(_SIZES)
        self._refusing: BoundedLRU[str, float] = BoundedLRU(_HOSTS)  # host -> when it refused
        self._serving: BoundedLRU[str, bool] = BoundedLRU(_HOSTS)  # hosts that sent a range
        self._clock = clock

    def size(self, key: str) -> int | None:
        return self._sizes.get(key)

    def refuses(self, host: str) -> bool:
        since = self._refusing.get(host)
        return since is not None and self._clock() - since < _ASK_AGAIN_S

    def know_size(self, key: str, size: int) -> None:
        self._sizes.put(key, size)

    def serves(self, host: str) -> bool:
        """Whether the host answered a range with its bytes lately (and has not refused since)."""
        return self._serving.get(host) is not None and not self.refuses(host)

    def learn(
        self, key: str, host: str, answer: RangeAnswer | None, whole: int | None = None
    ) -> None:
        """What a ranged request told: `answer`, or None when upstream answered it with the
        whole file, whose size (`whole`, its Content-Length) is then the file's."""
        if answer is None:
            if not self.refuses(host):  # said once an hour, not once a file
                log.info("upstream %s answers ranges with the whole file", host)
            self._refusing.put(host, self._clock())
            self._serving.pop(host)
            if whole is not None:
                self._sizes.put(key, whole)
        else:
            self._sizes.put(key, answer.total)
            self._serving.put(host, True)

    async def ask_size(self, key: str, host: str, read_tail: ReadTail) -> int | None:
        """The size upstream tells in its answer to a one-byte suffix range: the Content-Range,
        or the Content-Length of an answer of the whole file (which is not read)."""
        known = self.size(key)
        if known is not None or self.refuses(host):
            return known
        try:
            answer = await read_tail(1)
        except Unavailable as exc:  # not remembered: it may answer next time
            log.info("upstream did not tell the size of %r: %s", key, exc)
            return None
        if isinstance(answer, RangeAnswer):
            self.learn(key, host, answer)
            return answer.total
        size = answer.size
        answer.close()  # a HEAD starts no download
        self.learn(key, host, None, size)
        return size


class UpstreamMiss(RemoteFile):
    """One upstream file not in the blob cache, as a request found it."""

    def __init__(
        self,
        key: str,
        *,
        host: str,
        size: int | None,
        sha256: str | None,
        fetch: Fetch,
        read_range: ReadRange,
        read_tail: ReadTail,
        ranges: RangeMemory,
        mismatched: Callable[[str], bool],
    ) -> None:
        super().__init__(size=size, sha256=sha256)
        self.key = key
        self._host = host
        self._fetch = fetch
        self._read_range = read_range
        self._read_tail = read_tail
        self._ranges = ranges
        self._mismatched = mismatched

    async def whole(self) -> LocalFile | StreamedFile:
        return await self._fetch()

    async def total(self) -> int | None:
        if self.size is not None:
            return self.size
        return await self._ranges.ask_size(self.key, self._host, self._read_tail)

    def known_size(self) -> int | None:
        return self.size if self.size is not None else self._ranges.size(self.key)

    async def span(self, whole: StreamedFile, start: int, stop: int) -> AsyncIterator[bytes]:
        download = whole.download
        if download is None:  # not a download that can be read in parts: wait for all of it
            raise Unavailable(f"{self.key!r} cannot be read in parts")
        total = self.size if self.size is not None else self._ranges.size(self.key)
        early = self.sha256 is not None and total is not None and not self._mismatched(self.key)
        if early and stop == total:  # the file's last byte: only from the verified file
            early = False
        if early and stop - download.written > NEAR and stop - start <= MAX_RANGE:
            body = await self._upstream_span(start, stop, total)
            if body is not None:
                return once(body)
        return download.span(start, stop, verified=not early)

    async def _upstream_span(self, start: int, stop: int, total: int | None) -> bytes | None:
        """The span asked of upstream, or None (then it comes from the download)."""
        if self._ranges.refuses(self._host):
            return None
        try:
            answer = await self._read_range(start, stop - start)
        except Unavailable as exc:
            log.info("a range of %r from upstream failed, waiting for the download: %s",
                     self.key, exc)
            return None
        if answer is None:
            self._ranges.learn(self.key, self._host, None)
            return None
        if answer.start != start or answer.total != total or len(answer.body) != stop - start:
            log.warning(
                "upstream answered bytes %d-%d of %d for %r, asked %d-%d of %s: waiting for the"
                " download", answer.start, answer.start + len(answer.body) - 1, answer.total,
                self.key, start, stop - 1, total,
            )
            return None
        return answer.body

