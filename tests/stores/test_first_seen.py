"""pyproxy.stores.first_seen: when upstream files without an upload time were first seen.

The tests taking `store` run on both backends: SQLite in a directory and a cluster node's
PostgreSQL (stores/pg/first_seen.py; what only a cluster does is tests/stores/pg/test_first_seen.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyproxy.stores.first_seen import FirstSeen, FirstSeenStore
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.first_seen import PgFirstSeenStore
from tests.small_disk import fill, mounted


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FirstSeen]:
    if request.param == "sqlite":
        opened: FirstSeen = FirstSeenStore(tmp_path / "sub" / "first-seen.sqlite3")  # its dir
    else:
        database = Database(request.getfixturevalue("pg_dsn"))
        opened = PgFirstSeenStore(database, release=database.close)
    yield opened
    opened.close()


async def test_unseen_files_are_recorded_at_now_and_keep_that_time(store: FirstSeen) -> None:
    first = await store.times("foo", ["foo-1.0.tar.gz", "foo-1.1.tar.gz"], 100.0)
    assert dict(first) == {"foo-1.0.tar.gz": 100.0, "foo-1.1.tar.gz": 100.0}
    later = await store.times("foo", ["foo-1.0.tar.gz", "foo-2.0.tar.gz"], 500.0)
    assert later["foo-1.0.tar.gz"] == 100.0  # seen before: its time does not move
    assert later["foo-2.0.tar.gz"] == 500.0
    assert dict(await store.times("bar", ["bar-1.0.tar.gz"], 7.0)) == {"bar-1.0.tar.gz": 7.0}


async def test_known_files_are_read_from_memory(store: FirstSeen, tmp_path: Path) -> None:
    await store.times("foo", ["foo-1.0.tar.gz"], 100.0)
    store.record = None  # type: ignore[assignment, method-assign]  # no database from now on
    assert (await store.times("foo", ["foo-1.0.tar.gz"], 900.0))["foo-1.0.tar.gz"] == 100.0
    assert (await store.times("foo", [], 900.0))["foo-1.0.tar.gz"] == 100.0


async def test_the_times_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "first-seen.sqlite3"
    first = FirstSeenStore(path)
    await first.times("foo", ["foo-1.0.tar.gz"], 100.0)
    first.close()
    again = FirstSeenStore(path)
    try:
        assert (await again.times("foo", ["foo-1.0.tar.gz"], 999.0))["foo-1.0.tar.gz"] == 100.0
    finally:
        again.close()


async def test_a_page_with_thousands_of_new_files_is_one_batch(store: FirstSeen) -> None:
    names = [f"big-{n}.0.tar.gz" for n in range(5000)]
    times = await store.times("big", names, 42.0)
    assert len(times) == 5000 and set(times.values()) == {42.0}


def _record(path: str, now: float, start: Any, results: Any) -> None:
    store = FirstSeenStore(Path(path))
    start.wait(10)
    results.put(asyncio.run(store.times("race", ["race-1.0.tar.gz", "race-2.0.tar.gz"], now)))
    store.close()


def test_worker_processes_agree_on_one_time(tmp_path: Path) -> None:
    """Four processes see the same new files at once, each at its own time: the first sighting
    written stays, and every process reads that one."""
    path = tmp_path / "first-seen.sqlite3"
    FirstSeenStore(path).close()  # the schema, before the race
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_record, args=(str(path), 1000.0 + n, start, results))
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    start.set()
    seen = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    assert all(times == seen[0] for times in seen), seen
    assert seen[0]["race-1.0.tar.gz"] in {1000.0, 1001.0, 1002.0, 1003.0}
    assert seen[0]["race-1.0.tar.gz"] == seen[0]["race-2.0.tar.gz"]  # one batch, one time


def test_closed_store_refuses(tmp_path: Path) -> None:
    store = FirstSeenStore(tmp_path / "first-seen.sqlite3")
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.record("foo", ["foo-1.0.tar.gz"], 1.0)


async def test_a_full_disk_records_nothing_and_answers_from_now(tmp_path: Path) -> None:
    """A page is still served: files not seen before count from now, for that answer only,
    and are recorded once there is room."""
    with mounted(tmp_path / "disk", "2m") as disk:
        store = FirstSeenStore(disk / "first-seen.sqlite3")
        try:
            await store.times("foo", ["foo-1.0.tar.gz"], 100.0)
            store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write needs room
            filler = fill(disk)
            names = [f"foo-{n}.0-py3-none-any.whl" for n in range(2, 200)]
            seen = await store.times("foo", ["foo-1.0.tar.gz", *names], 500.0)
            assert seen["foo-1.0.tar.gz"] == 100.0 and seen[names[0]] == 500.0
            again = await store.times("foo", names, 600.0)  # not kept: counted from now again
            assert again[names[0]] == 600.0
            filler.unlink()
            assert (await store.times("foo", names, 700.0))[names[0]] == 700.0  # recorded now
            assert (await store.times("foo", names, 800.0))[names[0]] == 700.0
        finally:
            store.close()
