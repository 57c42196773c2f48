"""Upstream files not cached yet (pyproxy/repository/misses.py), through a real
UpstreamRepository and the fake upstream: what a miss knows before anything is downloaded, and
what it remembers of upstream's ranges. The HTTP side is tests/web/test_cold.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from pyproxy.model import LocalFile, NormalizedName, StreamedFile
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.http_answers import WholeAnswer
from pyproxy.repository.misses import RangeMemory, UpstreamMiss
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageStore
from tests.fake_upstream import FakeUpstream

WHEEL = "miss-1.0-py3-none-any.whl"


def repository(fake: FakeUpstream, tmp_path: Path) -> UpstreamRepository:
    return UpstreamRepository(
        UpstreamClient(fake.index_url, timeout=2.0),
        PageStore(tmp_path / "pages"),
        BlobCache(tmp_path / "files", 2**30),
        page_ttl=600.0,
        index_ttl=600.0,
    )


async def test_a_miss_is_what_the_page_says_and_asks_nothing(fake: FakeUpstream, tmp_path: Path) -> None:
    dist = fake.add_generated_file("miss", WHEEL, 100_000)
    upstream = repository(fake, tmp_path)
    try:
        miss = await upstream.open_file(NormalizedName("miss"), WHEEL)
        assert isinstance(miss, UpstreamMiss)
        assert (miss.size, miss.sha256, miss.cache) == (dist.size, dist.sha256, "miss")
        assert await miss.total() == dist.size
        assert fake.count(fake.file_path("miss", WHEEL)) == 0
        whole = await miss.whole()  # the one download
        assert isinstance(whole, StreamedFile) and whole.download is not None
        assert b"".join([chunk async for chunk in whole.chunks]) == b"".join(dist.chunks())
        hit = await upstream.open_file(NormalizedName("miss"), WHEEL)
        assert isinstance(hit, LocalFile) and hit.sha256 == dist.sha256
        assert fake.count(fake.file_path("miss", WHEEL)) == 1
    finally:
        await upstream.close()


async def test_a_miss_cached_meanwhile_is_the_cached_file(fake: FakeUpstream, tmp_path: Path) -> None:
    dist = fake.add_generated_file("miss", WHEEL, 5000)
    upstream = repository(fake, tmp_path)
    try:
        first = await upstream.open_file(NormalizedName("miss"), WHEEL)
        second = await upstream.open_file(NormalizedName("miss"), WHEEL)  # before the download
        assert isinstance(first, UpstreamMiss) and isinstance(second, UpstreamMiss)
        whole = await first.whole()
        assert isinstance(whole, StreamedFile)
        assert b"".join([chunk async for chunk in whole.chunks]) == b"".join(dist.chunks())
        cached = await second.whole()
        assert isinstance(cached, LocalFile) and cached.size == dist.size  # the warm path sends it
        assert fake.count(fake.file_path("miss", WHEEL)) == 1
    finally:
        await upstream.close()


async def test_a_span_follows_the_download(fake: FakeUpstream, tmp_path: Path) -> None:
    dist = fake.add_generated_file("miss", WHEEL, 300_000)
    body = b"".join(dist.chunks())
    upstream = repository(fake, tmp_path)
    try:
        miss = await upstream.open_file(NormalizedName("miss"), WHEEL)
        assert isinstance(miss, UpstreamMiss)
        whole = await miss.whole()
        assert isinstance(whole, StreamedFile)
        for start, stop in ((0, 1), (1000, 70_000), (dist.size - 10, dist.size)):
            span = await miss.span(whole, start, stop)
            assert b"".join([chunk async for chunk in span]) == body[start:stop]
        assert fake.ranged == []  # all near the download: nothing asked of upstream
    finally:
        await upstream.close()


class _Response:
    """What a WholeAnswer reads of aiohttp's response to a range answered with the whole file."""

    def __init__(self, length: int | None, encoding: str | None = None) -> None:
        self.content_length = length
        self.headers = {"Content-Encoding": encoding} if encoding else {}
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        self.closed = True


def _whole(length: int | None, encoding: str | None = None) -> WholeAnswer:
    async def body() -> AsyncIterator[bytes]:
        yield b""

    def again() -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        raise AssertionError("not asked again")

    return WholeAnswer(cast(aiohttp.ClientResponse, _Response(length, encoding)), body(), again)


async def test_a_host_that_refuses_ranges_is_asked_again_after_an_hour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    memory = RangeMemory(clock=lambda: now[0])
    asked: list[int] = []
    answers: list[WholeAnswer] = []

    async def refusing(length: int) -> WholeAnswer:
        asked.append(length)
        answers.append(_whole(5000))
        return answers[-1]

    caplog.set_level(logging.INFO, "pyproxy.upstream")
    # the whole answer's Content-Length is the size; its body is not read
    assert await memory.ask_size("a", "http://h:80", refusing) == 5000
    assert memory.size("a") == 5000 and all(answer.size == 5000 for answer in answers)
    assert answers[0]._response is None  # closed unread: a HEAD starts no download
    assert memory.refuses("http://h:80") and not memory.refuses("http://other:80")
    assert await memory.ask_size("b", "http://h:80", refusing) is None
    assert asked == [1]  # the second file's size was not asked of that host
    memory.learn("c", "http://h:80", None)  # told again, by another request meanwhile
    refusals = [r for r in caplog.records if "answers ranges with the whole file" in r.message]
    assert len(refusals) == 1  # said once, not once a file
    now[0] += 3601
    assert not memory.refuses("http://h:80")
    assert await memory.ask_size("b", "http://h:80", refusing) == 5000
    assert asked == [1, 1]


async def test_a_compressed_whole_answer_tells_no_size() -> None:
    memory = RangeMemory()

    async def gzipped(length: int) -> WholeAnswer:
        return _whole(1234, "gzip")

    assert await memory.ask_size("a", "http://h:80", gzipped) is None
    assert memory.size("a") is None and memory.refuses("http://h:80")
    assert _whole(1234, "identity").size == 1234
    assert _whole(1234, "gzip").size is None
    assert _whole(None).size is None
