"""A cluster's first-seen times (pyproxy/stores/pg/first_seen.py) as several nodes see them:
each node a PgFirstSeenStore with a pool of its own on one real PostgreSQL. What every backend
does alike is tests/stores/test_first_seen.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.first_seen import PgFirstSeenStore
from tests.servers.postgres import PostgresServer

FILES = ["race-1.0.tar.gz", "race-2.0.tar.gz"]


@pytest.fixture
def make_node(pg_dsn: str) -> Iterator[Callable[[], PgFirstSeenStore]]:
    made: list[PgFirstSeenStore] = []

    def make() -> PgFirstSeenStore:
        database = Database(pg_dsn)
        made.append(PgFirstSeenStore(database, release=database.close))
        return made[-1]

    yield make
    for store in made:
        store.close()


async def test_nodes_seeing_new_files_at_once_agree_on_the_first_time(
    make_node: Callable[[], PgFirstSeenStore],
) -> None:
    nodes = [make_node() for _ in range(4)]
    seen = await asyncio.gather(*(
        node.times("race", FILES, 1000.0 + n) for n, node in enumerate(nodes)
    ))
    assert all(dict(times) == dict(seen[0]) for times in seen), seen
    assert seen[0]["race-1.0.tar.gz"] in {1000.0, 1001.0, 1002.0, 1003.0}
    assert seen[0]["race-1.0.tar.gz"] == seen[0]["race-2.0.tar.gz"]  # one batch, one time
    # a node that starts later reads the same times, whatever its clock says
    late = await make_node().times("race", FILES, 5000.0)
    assert dict(late) == dict(seen[0])


async def test_with_the_database_down_known_projects_answer_and_others_are_503(
    make_node: Callable[[], PgFirstSeenStore], postgres: PostgresServer,
) -> None:
    node = make_node()
    await node.times("foo", ["foo-1.0.tar.gz"], 100.0)
    postgres.stop()
    try:
        assert (await node.times("foo", ["foo-1.0.tar.gz"], 900.0))["foo-1.0.tar.gz"] == 100.0
        with pytest.raises(DatabaseUnavailable):  # a time made up now could differ later
            await node.times("foo", ["foo-2.0.tar.gz"], 900.0)
        with pytest.raises(DatabaseUnavailable):
            await node.times("bar", ["bar-1.0.tar.gz"], 900.0)
    finally:
        postgres.start()
