"""pyproxy.repository.upstream_list: upstream's project list fetched to disk, revalidated, one
request however many ask, and garbage never replacing the copy. The list's web side (render,
sendfile, memory, the loop kept free) is tested in tests/web/test_simple.py."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pyproxy.model import ProjectList, Unavailable, normalize
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageStore
from tests.fake_upstream import FakeUpstream
from tests.repository.conftest import JSON_TYPE, MakeScripted

MakeUpstream = Callable[..., UpstreamRepository]


@pytest.fixture
async def make_upstream(tmp_path: Path) -> AsyncIterator[MakeUpstream]:
    made: list[UpstreamRepository] = []

    def make(index_url: str, *, cache_dir: Path | None = None, index_ttl: float = 600.0,
             timeout: float = 2.0) -> UpstreamRepository:
        upstream = UpstreamRepository(
            UpstreamClient(index_url, timeout=timeout),
            PageStore(cache_dir or tmp_path / f"pages{len(made)}"),
            BlobCache(tmp_path / f"files{len(made)}", 2**30),
            page_ttl=600.0, index_ttl=index_ttl,
        )
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.close()


def names(listing: ProjectList) -> list[str]:
    return [shown for _, shown in listing.entries()]


def root_gets(fake: FakeUpstream) -> int:
    return sum(1 for method, path in fake.requests if (method, path) == ("GET", "/simple/"))


@pytest.mark.parametrize("formats", ["json", "html"])
async def test_a_large_list_is_on_disk_in_order_and_looked_up_by_name(
    make_upstream: MakeUpstream, formats: str
) -> None:
    async with FakeUpstream(formats=formats) as fake:  # type: ignore[arg-type]
        fake.synthetic_names = 20_000
        listing = await make_upstream(fake.index_url).list_projects()
    assert listing.source is not None  # not in memory
    shown = names(listing)
    assert len(shown) == 20_000 and shown[:3] == ["Project_0", "Project_1", "Project_10"]
    assert listing.has(normalize("project.19999")) and not listing.has(normalize("project-20000"))


async def test_a_gzipd_answer_is_kept_as_it_came_and_read_decompressed(
    fake: FakeUpstream, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    fake.synthetic_names = 3_000
    fake.gzip_root = True
    listing = await make_upstream(fake.index_url, cache_dir=tmp_path / "c").list_projects()
    assert names(listing)[:2] == ["Project_0", "Project_1"]
    assert len(names(listing)) == 3_000
    # what was saved and hashed is the compressed answer: the same list fetched again by
    # another worker has the same revision
    fake.reset_counters()
    again = await make_upstream(fake.index_url, cache_dir=tmp_path / "d").list_projects()
    assert again.revision == listing.revision and root_gets(fake) == 1


async def test_one_request_upstream_however_many_ask_in_however_many_workers(
    fake: FakeUpstream, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    fake.synthetic_names = 5_000
    workers = [make_upstream(fake.index_url, cache_dir=tmp_path / "shared") for _ in range(3)]
    lists = await asyncio.gather(*(w.list_projects() for _ in range(10) for w in workers))
    assert root_gets(fake) == 1
    assert {listing.revision for listing in lists} == {lists[0].revision}


async def test_revalidated_after_the_ttl_and_a_304_builds_nothing(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    fake.synthetic_names = 1_000
    upstream = make_upstream(fake.index_url, index_ttl=0.05)
    first = await upstream.list_projects()
    store = upstream.pages.project_list
    record = store.load()
    assert record is not None
    await asyncio.sleep(0.1)
    again = await upstream.list_projects()
    assert fake.not_modified == [("GET", "/simple/")]
    assert again.revision == first.revision
    renewed = store.load()
    assert renewed is not None and renewed.database == record.database
    assert renewed.fetched_at > record.fetched_at
    await asyncio.sleep(0.1)
    fake.synthetic_names = 1_001  # a new name: a new list
    changed = await upstream.list_projects()
    assert changed.revision != first.revision and changed.has(normalize("project-1000"))


async def test_garbage_serves_the_copy_and_never_replaces_it_on_disk(
    scripted_server: MakeScripted, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/", {"meta": {"api-version": "1.1"}, "projects": [{"name": "proj"}]})
    cache = tmp_path / "pages-garbage"
    upstream = make_upstream(f"{origin}/simple/", index_ttl=0.0, cache_dir=cache)
    assert names(await upstream.list_projects()) == ["proj"]
    for garbage, content_type in [
        (b'{"projects": [{"name": "proj"}, {"name": 7}]}', JSON_TYPE),
        (b'{"projects": [{"name": "pr', JSON_TYPE),
        (b"<html><body>Down for maintenance</body></html>", "text/html"),
    ]:
        scripted.set("/simple/", garbage, content_type)
        assert names(await make_upstream(f"{origin}/simple/", index_ttl=0.0,
                                         cache_dir=cache).list_projects()) == ["proj"]
    # a restart, offline or not, still has the good list
    assert names(await make_upstream(f"{origin}/simple/", cache_dir=cache).list_projects()) == ["proj"]


async def test_an_index_without_a_list_or_that_cannot_be_reached_is_unavailable(
    scripted_server: MakeScripted, make_upstream: MakeUpstream
) -> None:
    _scripted, origin = await scripted_server()  # answers 404 for /simple/
    upstream = make_upstream(f"{origin}/simple/")
    with pytest.raises(Unavailable, match="has no project list"):
        await upstream.list_projects()
    with pytest.raises(Unavailable, match="no copy is cached"):
        await make_upstream("http://127.0.0.1:9/simple/", timeout=0.5).list_projects()


async def test_a_list_being_read_survives_the_next_list(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    """A worker still reading an older revision's database reads it to its end."""
    fake.synthetic_names = 3_000
    upstream = make_upstream(fake.index_url, index_ttl=0.0)
    old = await upstream.list_projects()
    reading = old.entries()
    assert next(reading) == ("project-0", "Project_0")
    fake.synthetic_names = 3_001
    new = await upstream.list_projects()
    assert new.revision != old.revision
    assert sum(1 for _ in reading) == 2_999
    with pytest.raises(sqlite3.OperationalError):  # read-only, whoever holds it
        old.source._connect().execute("DELETE FROM names")  # type: ignore[union-attr]
