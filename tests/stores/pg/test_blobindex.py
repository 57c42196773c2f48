"""The cluster's index of cached files (pyproxy/stores/pg/blobindex.py) on a real PostgreSQL:
what the nodes read of many keys at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyproxy.stores.pg.blobindex import PgBlobIndex
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import Database
from tests.servers.postgres import PostgresServer


@pytest.fixture
def index(pg_dsn: str) -> Iterator[PgBlobIndex]:
    database = Database(pg_dsn, max_size=2)  # migrated as it opens
    try:
        yield PgBlobIndex(database)
    finally:
        database.close()


def test_sizes_and_digests_of_the_committed_keys_in_one_query(index: PgBlobIndex) -> None:
    assert index.add("a", "aa" * 32, 1000) and index.add("b", "bb" * 32, 0)
    index.lead("c", "http://127.0.0.1:1")  # being downloaded: not committed
    keys = [f"missing-{i}" for i in range(2000)] + ["a", "b", "c"]
    assert index.sizes(keys) == {"a": 1000, "b": 0}
    assert index.digests(keys) == {"a": "aa" * 32, "b": "bb" * 32}
    assert index.sizes([]) == {}
    assert index.forget("a") == 1000
    assert index.sizes(["a", "b"]) == {"b": 0}


def test_sizes_with_the_database_down_is_database_unavailable(
    index: PgBlobIndex, postgres: PostgresServer
) -> None:
    index.add("a", "aa" * 32, 5)
    postgres.stop()
    try:
        with pytest.raises(DatabaseUnavailable):
            index.sizes(["a"])
    finally:
        postgres.start()
    assert index.sizes(["a"]) == {"a": 5}
