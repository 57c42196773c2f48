"""pyproxy.stores.project_list: an upstream list from a body on disk into an ordered on-disk
table; garbage or an emptied list never replaces the good copy."""

from __future__ import annotations

import dataclasses
import gzip
import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from pyproxy.formats.answers import JSON_TYPE, UpstreamFormatError
from pyproxy.model import normalize
from pyproxy.stores.project_list import KEEP, SUBPROCESS_BYTES, ListEmptied, ListRecord, ProjectListStore

RECORD = ListRecord(
    revision="r1", url="http://127.0.0.1:1/simple/", content_type=JSON_TYPE, etag='"e1"',
    last_modified=None, fetched_at=100.0, count=0, database="",
)


@pytest.fixture
def store(tmp_path: Path) -> ProjectListStore:
    return ProjectListStore(tmp_path / "list")


def body_of(store: ProjectListStore, names: list[str] | bytes) -> Path:
    path, writer = store.download()
    with writer:
        if isinstance(names, bytes):
            writer.write(names)
        else:
            writer.write(orjson.dumps({"meta": {"api-version": "1.4"},
                                       "projects": [{"name": n} for n in names]}))
    return path


def build(store: ProjectListStore, names: list[str] | bytes, revision: str = "r1",
          previous: ListRecord | None = None) -> ListRecord:
    record = dataclasses.replace(RECORD, revision=revision)
    body = body_of(store, names)
    try:
        return store.build(body, record, previous=previous)
    finally:
        assert body.is_file()  # the caller's: a cluster node shares it after the build
        body.unlink()


def test_names_are_ordered_by_normalised_name_each_once_in_its_first_spelling(
    store: ProjectListStore,
) -> None:
    # in order at first (inserted as they come), then out of order (sorted by SQLite)
    names = ["a", "B_b", "b.B", "c", "Zed", "b-b", "Aardvark", "zed", "m"]
    built = build(store, names)
    assert built.count == 6 and built.revision == "r1"
    assert list(store.names(built).entries()) == [
        ("a", "a"), ("aardvark", "Aardvark"), ("b-b", "B_b"), ("c", "c"), ("m", "m"),
        ("zed", "Zed"),
    ]
    assert store.names(built).has(normalize("B.B")) and not store.names(built).has(normalize("q"))
    assert store.load() == built
    assert not list((store.directory / "tmp").iterdir())  # the build's temp files are gone


@pytest.mark.parametrize(
    "garbage",
    [b'{"projects": [{"name": "a"}, {"name": 7}]}', b'{"projects": [{"name": "a"}',
     b"<html>maintenance</html>", b""],
)
def test_garbage_never_replaces_the_good_copy(store: ProjectListStore, garbage: bytes) -> None:
    good = build(store, ["a", "b"])
    with pytest.raises(UpstreamFormatError):
        build(store, garbage, revision="r2", previous=good)
    assert store.load() == good
    assert [name for name, _ in store.names(good).entries()] == ["a", "b"]
    assert not list((store.directory / "tmp").iterdir())


def test_a_list_that_suddenly_names_nothing_is_refused_but_an_empty_first_list_is_kept(
    store: ProjectListStore,
) -> None:
    empty = build(store, [])
    assert empty.count == 0 and list(store.names(empty).entries()) == []
    good = build(store, ["a"], revision="r2", previous=empty)
    with pytest.raises(ListEmptied):
        build(store, [], revision="r3", previous=good)
    assert store.load() == good


def test_a_revalidated_list_keeps_its_names(store: ProjectListStore) -> None:
    good = build(store, ["a"])
    renewed = store.refreshed(good, 200.0)
    assert renewed.fetched_at == 200.0 and renewed.database == good.database
    assert store.load() == renewed


def test_old_databases_are_removed_but_the_last_few_kept(store: ProjectListStore) -> None:
    built = []
    for n in range(KEEP + 3):
        built.append(build(store, [f"p{n}"], revision=f"r{n}"))
        os.utime(store.directory / built[-1].database, (n, n))  # oldest first
    kept = {path.name for path in store.directory.glob("*.sqlite3")}
    assert kept == {record.database for record in built[-KEEP:]}


def test_an_unreadable_record_or_a_missing_database_is_no_copy(store: ProjectListStore) -> None:
    good = build(store, ["a"])
    (store.directory / good.database).unlink()
    assert store.load() is None
    (store.directory / "current.json").write_text("{not json")
    assert store.load() is None


def test_a_gzipd_body_is_read_decompressed_and_a_broken_one_refused(
    store: ProjectListStore,
) -> None:
    document = orjson.dumps({"meta": {"api-version": "1.4"},
                             "projects": [{"name": n} for n in ("b", "A")]})
    good = build(store, gzip.compress(document))
    assert list(store.names(good).entries()) == [("a", "A"), ("b", "b")]
    with pytest.raises(UpstreamFormatError, match="gzip"):
        build(store, gzip.compress(document)[:-12], revision="r2", previous=good)
    assert store.load() == good


def test_the_database_is_opened_read_only(store: ProjectListStore) -> None:
    good = build(store, ["a"])
    names = store.names(good)
    with pytest.raises(sqlite3.OperationalError):
        names._connect().execute("DELETE FROM names")


def test_a_large_list_is_read_in_a_process_of_its_own(store: ProjectListStore) -> None:
    names = [f"project-{n:06d}-{'x' * 1000}" for n in range(SUBPROCESS_BYTES // 1000 + 1)]
    body = body_of(store, names)
    assert body.stat().st_size >= SUBPROCESS_BYTES
    built = store.build(body, RECORD, previous=None)
    assert built.count == len(names) and store.names(built).has(normalize(names[-1]))
    # and garbage is refused from there as from here, the copy kept
    long_name = b'{"name": "' + b"a" * 1000 + b'"},'
    garbage = body_of(store, b'{"projects": [' + long_name * (SUBPROCESS_BYTES // 1000) + b"7]}")
    with pytest.raises(UpstreamFormatError, match=r"projects\[\d+\] is a number"):
        store.build(garbage, dataclasses.replace(RECORD, revision="r2"), previous=built)
    assert store.load() == built
