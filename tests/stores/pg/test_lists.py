"""pyproxy.stores.pg.lists: a cluster's project list, its record in a real PostgreSQL and its raw
body in a moto bucket; and, through UpstreamRepository, two nodes (each a ClusterPageStore with
a pool of its own and a data dir of its own) sharing one upstream request."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.objects import Bucket
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.lists import ClusterList
from pyproxy.stores.pg.pages import ClusterPageStore
from pyproxy.stores.project_list import SharedListRecord, SharedListUnavailable
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server

RECORD = SharedListRecord(revision="", url="http://upstream.invalid/simple/",
                          content_type="application/vnd.pypi.simple.v1+json", etag='"e1"',
                          last_modified=None, fetched_at=100.0)


@pytest.fixture
def make_pages(pg_dsn: str, s3: S3Server, bucket: str, tmp_path: Path
               ) -> Iterator[Callable[[], ClusterPageStore]]:
    made: list[tuple[ClusterPageStore, Database]] = []

    def make() -> ClusterPageStore:
        database = Database(pg_dsn)
        pages = ClusterPageStore(database, None, "", tmp_path / f"node{len(made)}",
                                 bucket=Bucket(f"s3://{bucket}/nodes", endpoint=s3.endpoint))
        made.append((pages, database))
        return pages

    yield make
    for pages, database in made:
        pages.close()
        database.close()


def shared(pages: ClusterPageStore) -> ClusterList:
    assert isinstance(pages.shared_list, ClusterList)
    return pages.shared_list


def body_file(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / f"body-{len(data)}"
    path.write_bytes(data)
    return path, hashlib.blake2b(data, digest_size=12).hexdigest()


async def test_a_published_list_is_every_nodes_to_read_and_a_later_fetch_stands(
    make_pages: Callable[[], ClusterPageStore], tmp_path: Path,
) -> None:
    a, b = shared(make_pages()), shared(make_pages())
    assert a.load() is None
    body, revision = body_file(tmp_path, b'{"projects": [{"name": "a"}]}' * 1000)
    recorded = await a.publish(dataclasses.replace(RECORD, revision=revision), body)
    assert recorded.object == f"lists/{revision}" and recorded.size == body.stat().st_size
    assert b.load() == recorded

    copy = tmp_path / "copy"
    await b.download(recorded, copy)
    assert copy.read_bytes() == body.read_bytes()

    # a 304 moves the time; an older fetch (a node that went on without the turn) does not win
    renewed = b.refreshed(dataclasses.replace(recorded, fetched_at=200.0, etag='"e2"'))
    assert renewed.fetched_at == 200.0 and a.load() == renewed
    assert a.refreshed(dataclasses.replace(recorded, fetched_at=150.0)) == renewed

    # a new revision replaces the body in the bucket
    newer, revision2 = body_file(tmp_path, b'{"projects": [{"name": "b"}]}')
    second = await b.publish(dataclasses.replace(RECORD, revision=revision2, fetched_at=300.0),
                             newer)
    assert a.load() == second
    with pytest.raises(SharedListUnavailable, match="cannot read"):
        await a.download(recorded, tmp_path / "gone")

    # a node that fetched before the recorded one leaves neither its record nor its body
    older, revision3 = body_file(tmp_path, b'{"projects": [{"name": "c"}]}')
    late = dataclasses.replace(RECORD, revision=revision3, fetched_at=250.0)
    assert await a.publish(late, older) == second
    with pytest.raises(SharedListUnavailable, match="cannot read"):
        await a.download(dataclasses.replace(late, object=f"lists/{revision3}"), tmp_path / "o")
    await a.download(second, tmp_path / "kept")


async def test_a_body_that_is_not_the_recorded_one_is_refused(
    make_pages: Callable[[], ClusterPageStore], tmp_path: Path,
) -> None:
    node = shared(make_pages())
    body, revision = body_file(tmp_path, b'{"projects": []}')
    recorded = await node.publish(dataclasses.replace(RECORD, revision=revision), body)
    with pytest.raises(SharedListUnavailable, match="not the recorded list"):
        await node.download(dataclasses.replace(recorded, revision="0" * 24), tmp_path / "x")
    with pytest.raises(SharedListUnavailable, match="cannot read"):
        await node.download(dataclasses.replace(recorded, object="lists/none"), tmp_path / "y")


# ---------------------------------------------------------------------- through the repository


@pytest.fixture
async def two_nodes(make_pages: Callable[[], ClusterPageStore], fake: FakeUpstream,
                    tmp_path: Path) -> AsyncIterator[tuple[UpstreamRepository, ...]]:
    nodes = tuple(
        UpstreamRepository(
            UpstreamClient(fake.index_url, timeout=5), make_pages(),
            BlobCache(tmp_path / f"files{n}", 2**30), page_ttl=600.0, index_ttl=600.0,
        )
        for n in range(2)
    )
    yield nodes
    for node in nodes:
        await node.close()


def root_gets(fake: FakeUpstream) -> int:
    return fake.count("/simple/", "GET")


async def test_two_nodes_share_one_upstream_request_and_each_builds_its_own_copy(
    two_nodes: tuple[UpstreamRepository, ...], fake: FakeUpstream,
) -> None:
    fake.synthetic_names = 3_000
    fake.latency = 0.3
    lists = await asyncio.gather(*(node.list_projects() for node in two_nodes for _ in range(4)))
    assert root_gets(fake) == 1
    a, b = lists[0], lists[-1]
    assert a.revision == b.revision and a.source != b.source  # one list, a database each
    assert [name for _, name in a.entries()] == [name for _, name in b.entries()]
    assert len(list(b.entries())) == 3_000


async def test_without_the_database_a_node_fetches_its_own_list(
    two_nodes: tuple[UpstreamRepository, ...], fake: FakeUpstream, postgres: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.synthetic_names = 100
    postgres.stop()
    try:
        listing = await two_nodes[0].list_projects()
    finally:
        postgres.start()
    assert len(list(listing.entries())) == 100 and root_gets(fake) == 1
    assert "this node fetches its own" in caplog.text
