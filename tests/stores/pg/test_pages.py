"""A cluster node's page cache (pyproxy/stores/pg/pages.py) as two nodes see it: each node here
is a ClusterPageStore with a pool and a listener of its own on one real PostgreSQL, and, for
what the repository does with it, an UpstreamRepository in front of the fake upstream.

What every backend does alike (records, memory, export/import) is tests/stores/test_pages.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pyproxy.model import NormalizedName, ProjectPage
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageRecord
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.notify import Listener
from pyproxy.stores.pg.pages import ClusterPageStore
from tests.conftest import StartFake
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import PostgresServer
from tests.stores.test_pages import page_body, record


@dataclasses.dataclass
class Node:
    pages: ClusterPageStore
    listener: Listener

    def settle(self) -> None:
        """Wait until this node has heard everything committed so far."""
        assert self.listener.sync(timeout=5)


MakeNode = Callable[..., Node]


@pytest.fixture
def make_node(pg_dsn: str, tmp_path: Path) -> Iterator[MakeNode]:
    made: list[tuple[ClusterPageStore, Listener, Database]] = []

    def make(upstream: str = "") -> Node:
        database = Database(pg_dsn)
        listener = Listener(pg_dsn).start()
        pages = ClusterPageStore(database, listener, upstream, tmp_path / f"node{len(made)}")
        made.append((pages, listener, database))
        return Node(pages, listener)

    yield make
    for pages, listener, database in made:
        pages.close()
        listener.close()
        database.close()


async def test_one_node_at_a_time_has_the_turn_and_a_waiter_takes_its_failure(
    make_node: MakeNode,
) -> None:
    a, b = make_node(), make_node()
    async with a.pages.turn("proj", patience=5) as held:
        assert held.locked and held.failure is None
        waiter = asyncio.create_task(_take_turn(b.pages, "proj", patience=5))
        other_key = await _take_turn(b.pages, "other", patience=5)  # keys are independent
        assert other_key == (True, None)
        await asyncio.sleep(0.2)
        assert not waiter.done()  # B waits while A refreshes
        held.fail("answered HTTP 502\n(twice)")
    assert await asyncio.wait_for(waiter, 5) == (True, "answered HTTP 502 (twice)")
    # a failure noted before one began to wait is not passed on
    assert await _take_turn(b.pages, "proj", patience=5) == (True, None)


async def test_upstreams_do_not_share_turns_and_patience_runs_out(make_node: MakeNode) -> None:
    a, routed = make_node(), make_node("gpu")
    async with a.pages.turn("proj", patience=5):
        assert await _take_turn(routed.pages, "proj", patience=1) == (True, None)
        started = time.monotonic()
        assert await _take_turn(make_node().pages, "proj", patience=0.3) == (False, None)
        assert 0.3 <= time.monotonic() - started < 2


async def _take_turn(pages: ClusterPageStore, key: str, *, patience: float
                     ) -> tuple[bool, str | None]:
    async with pages.turn(key, patience=patience) as turn:
        return turn.locked, turn.failure


async def test_a_new_revision_drops_the_other_nodes_copy_and_a_304_does_not(
    make_node: MakeNode,
) -> None:
    a, b, routed = make_node(), make_node(), make_node("gpu")
    first = record(page_body("proj", "proj-1.0.tar.gz"), fetched_at=100.0)
    a.pages.save("proj", first)
    await a.pages.remember("proj", first)
    b.settle()  # A's announcement of its first save, heard before B keeps its copy
    routed.settle()
    shared = b.pages.load("proj")
    assert shared == first  # the other node reads what A fetched
    await b.pages.remember("proj", shared)
    await routed.pages.remember("proj", first)

    revalidated = dataclasses.replace(first, fetched_at=200.0, etag='"e2"')
    a.pages.save("proj", revalidated)  # a 304: same revision, new validators
    b.settle()
    assert b.pages.known("proj") is not None  # nothing was announced
    assert b.pages.load("proj") == revalidated

    second = record(page_body("proj", "proj-2.0.tar.gz"), fetched_at=300.0)
    await a.pages.remember("proj", second)
    a.pages.save("proj", second)
    b.settle()
    routed.settle()
    assert b.pages.known("proj") is None  # dropped: read again from the database next time
    assert b.pages.load("proj") == second
    assert a.pages.known("proj") is not None  # its own announcement is no news to A
    assert routed.pages.known("proj") is not None  # another upstream's page of that name


def test_an_older_fetch_never_replaces_a_newer_record(make_node: MakeNode) -> None:
    a, b = make_node(), make_node()
    newer = record(page_body("proj", "proj-2.0.tar.gz"), fetched_at=200.0)
    a.pages.save("proj", newer)
    b.pages.save("proj", record(page_body("proj", "proj-1.0.tar.gz"), fetched_at=100.0))
    assert a.pages.load("proj") == newer


# ---------------------------------------------------------------------- through the repository


@pytest.fixture
async def fake(fake_upstream: StartFake) -> FakeUpstream:
    upstream = await fake_upstream(formats="json")
    upstream.add_file("proj", "proj-1.0.tar.gz", b"one")
    return upstream


MakeRepository = Callable[..., UpstreamRepository]


@pytest.fixture
async def repository_of(tmp_path: Path) -> AsyncIterator[MakeRepository]:
    """`repository_of(node, url=..., page_ttl=...)`: the node's upstream repository."""
    made: list[UpstreamRepository] = []

    def make(node: Node, *, url: str, page_ttl: float = 600.0) -> UpstreamRepository:
        repository = UpstreamRepository(
            UpstreamClient(url, timeout=2.0, deadline=5.0),
            node.pages,
            BlobCache(tmp_path / f"files{len(made)}", 2**30),
            page_ttl=page_ttl,
            index_ttl=page_ttl,
        )
        made.append(repository)
        return repository

    yield make
    for repository in made:  # the pages are the node's, closed by make_node
        await repository.client.close()
        await repository.blobs.aclose()


async def test_nodes_asking_at_once_send_one_request_upstream(
    make_node: MakeNode, fake: FakeUpstream, repository_of: MakeRepository,
) -> None:
    fake.latency = 0.3
    nodes = [repository_of(make_node(), url=fake.index_url) for _ in range(3)]
    pages = await asyncio.gather(*(
        node.project_page(NormalizedName("proj")) for node in nodes for _ in range(3)
    ))
    assert fake.count(fake.page_path("proj")) == 1
    assert {page.revision for page in pages} == {pages[0].revision}


async def test_a_node_without_a_copy_serves_the_shared_stale_one_when_upstream_is_down(
    make_node: MakeNode, fake: FakeUpstream, repository_of: MakeRepository,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = repository_of(make_node(), url=fake.index_url, page_ttl=0.2)
    fetched = await a.project_page(NormalizedName("proj"))
    await asyncio.sleep(0.3)  # stale now
    fake.fail_status = 503
    b = repository_of(make_node(), url=fake.index_url, page_ttl=0.2)
    with caplog.at_level(logging.WARNING, "pyproxy.upstream"):
        served = await b.project_page(NormalizedName("proj"))
    assert served.revision == fetched.revision and [d.filename for d in served.files] == [
        "proj-1.0.tar.gz"]
    assert "serving a stale copy" in caplog.text
    # offline, a node serves what any node fetched
    assert (await b.cached(NormalizedName("proj"))) is not None


async def test_with_the_database_down_warm_pages_are_served_and_cold_ones_come_from_upstream(
    make_node: MakeNode, fake: FakeUpstream, repository_of: MakeRepository,
    postgres: PostgresServer,
) -> None:
    fake.add_file("other", "other-1.0.tar.gz", b"two")
    node = make_node()
    repository = repository_of(node, url=fake.index_url)
    warm = await repository.project_page(NormalizedName("proj"))
    postgres.stop()
    try:
        started = time.monotonic()
        assert await repository.project_page(NormalizedName("proj")) is warm
        assert time.monotonic() - started < 1.0  # memory only: no wait for a database
        with pytest.raises(DatabaseUnavailable):
            node.pages.load("proj")
        cold = await repository.project_page(NormalizedName("other"))  # upstream, then memory
        assert isinstance(cold, ProjectPage) and [d.filename for d in cold.files] == [
            "other-1.0.tar.gz"]
        assert await repository.project_page(NormalizedName("other")) is cold
    finally:
        postgres.start()
    # back, without a restart: records are read and kept in the database again (once the
    # pool's reconnection, backing off 1, 2, 4... s while the server was down, gets through)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert node.pages.load("proj") is not None
            break
        except DatabaseUnavailable:
            assert time.monotonic() < deadline, "the database did not come back"
            await asyncio.sleep(0.2)
    node.pages.save("other", PageRecord(404, b"", None, "u", None, None, time.time() + 1, ""))
    loaded = node.pages.load("other")
    assert loaded is not None and loaded.status == 404
