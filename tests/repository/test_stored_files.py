"""One file of a stored page this process has not parsed (pyproxy/repository/stored_files.py),
through real UpstreamRepository processes sharing one page store, as workers or a restart do,
and the fake upstream. What the one-file reader lists is tests/formats/test_parse.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pyproxy.model import LocalFile, NormalizedName, NotFound, StreamedFile
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.misses import UpstreamMiss
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageRecord, PageStore, Parsed
from tests.fake_upstream import FakeUpstream, Formats

WHEEL = "foo_bar-1.0-py3-none-any.whl"
BODY = b"wheel " * 100
METADATA = b"Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n"
FOO = NormalizedName("foo-bar")


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Callable[[FakeUpstream], UpstreamRepository]]:
    """`worker(fake)`: another process on the same page store (its own memory and files)."""
    made: list[UpstreamRepository] = []

    def make(fake: FakeUpstream) -> UpstreamRepository:
        made.append(UpstreamRepository(
            UpstreamClient(fake.index_url, timeout=2.0),
            PageStore(tmp_path / "pages"),
            BlobCache(tmp_path / f"files{len(made)}", 2**30),
            page_ttl=600.0,
            index_ttl=600.0,
        ))
        return made[-1]

    yield make
    for upstream in made:
        await upstream.close()  # also with a whole parse still held: cancelled


def hold_whole_parses(upstream: UpstreamRepository, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The page store's whole parses of `upstream` wait until the event returned is set."""
    release = asyncio.Event()
    parsed = upstream.pages.parsed

    async def held(key: str, record: PageRecord, **options: bool) -> Parsed:
        await release.wait()
        return await parsed(key, record, **options)

    monkeypatch.setattr(upstream.pages, "parsed", held)
    return release


@pytest.mark.parametrize("formats", ["json", "html"])
async def test_a_process_without_the_page_reads_one_file_from_the_stored_copy(
    worker: Callable[[FakeUpstream], UpstreamRepository], formats: Formats,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeUpstream(formats=formats) as fake:
        fake.add_file("Foo_Bar", WHEEL, BODY, metadata=METADATA)
        fake.add_file("Foo_Bar", "foo_bar-0.9.tar.gz", b"sdist")
        fake.add_file("q", "q-1.0.tar.gz", b"q")
        fake.set_status("q", "quarantined", "malware")
        first = worker(fake)
        page = await first.project_page(FOO)
        await first.project_page(NormalizedName("q"))
        # another worker (or a restart): the file, before the page is parsed whole
        second = worker(fake)
        release = hold_whole_parses(second, monkeypatch)
        miss = await asyncio.wait_for(second.open_file(FOO, WHEEL), 10)
        listed = page.file(WHEEL)
        assert isinstance(miss, UpstreamMiss) and listed is not None
        assert (miss.size, miss.sha256) == (listed.size, listed.sha256)
        whole = await miss.whole()
        assert isinstance(whole, StreamedFile)
        assert b"".join([chunk async for chunk in whole.chunks]) == BODY
        assert second.pages.known(FOO) is None
        # meanwhile parsed whole and kept; the next request waits for that, not for a second
        release.set()
        hit = await second.open_file(FOO, WHEEL)
        assert isinstance(hit, LocalFile)
        kept = second.pages.known(FOO)
        assert kept is not None and kept.result is not None and kept.result.files == page.files
        third = worker(fake)
        with pytest.raises(NotFound):
            await third.open_file(FOO, "foo_bar-9.9.tar.gz")
        with pytest.raises(NotFound):
            await third.open_file(NormalizedName("q"), "q-1.0.tar.gz")  # quarantined: none offered
        # upstream's own `.metadata` the same way
        fourth = worker(fake)
        hold_whole_parses(fourth, monkeypatch)
        metadata = await asyncio.wait_for(fourth.open_metadata(FOO, WHEEL), 10)
        assert isinstance(metadata, StreamedFile)
        assert b"".join([chunk async for chunk in metadata.chunks]) == METADATA
        assert fake.count(fake.page_path("foo-bar")) == 1
