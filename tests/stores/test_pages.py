"""The upstream page cache (pyproxy/stores/pages.py): records on disk, parsed pages in memory,
enumeration for `cache stats`/`describe`, and the export/import records. Pure store calls on a
temporary directory; fetching and freshness are tests/repository/test_upstream.py.

The tests taking `open_store` run on both backends: the disk (PageStore) and a cluster node's
PostgreSQL (ClusterPageStore, each "directory" an upstream name of its own in one database);
what only a cluster does is tests/stores/pg/test_pages.py.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import orjson
import pytest

from pyproxy import filenames
from pyproxy.model import ProjectPage
from pyproxy.stores import pages as page_store
from pyproxy.stores.pages import (
    INDEX_KEY,
    PageCache,
    PageRecord,
    PageStore,
    UpstreamFormatError,
    revision_of,
)
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.pages import ClusterPageStore
from tests.small_disk import fill, mounted

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ORIGIN = "http://127.0.0.1:9"


def page_body(name: str, *filenames: str) -> bytes:
    return orjson.dumps({
        "meta": {"api-version": "1.1"},
        "name": name,
        "files": [
            {"filename": f, "url": f"{ORIGIN}/f/{f}", "hashes": {"sha256": "ab" * 32}}
            for f in filenames
        ],
    })


def record(body: bytes, *, status: int = 200, url: str = f"{ORIGIN}/simple/proj/",
           fetched_at: float | None = None) -> PageRecord:
    return PageRecord(
        status=status,
        body=body,
        content_type=JSON_TYPE if status == 200 else None,
        url=url,
        etag='"e1"' if status == 200 else None,
        last_modified=None,
        fetched_at=time.time() if fetched_at is None else fetched_at,
        revision=revision_of(body) if status == 200 else "",
    )


INDEX = orjson.dumps(
    {"meta": {"api-version": "1.0"}, "projects": [{"name": "proj"}, {"name": "b"}]}
)


OpenStore = Callable[..., PageCache]


@pytest.fixture(params=["disk", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """`open_store(name="pages", **options)`: a page store of the backend; the same name again
    is the same records (a restart)."""
    opened: list[PageCache] = []
    databases: list[Database] = []

    def open_one(name: str = "pages", **options: Any) -> PageCache:
        if request.param == "disk":
            store: PageCache = PageStore(tmp_path / name, **options)
        else:
            if not databases:
                databases.append(Database(request.getfixturevalue("pg_dsn")))
            store = ClusterPageStore(databases[0], None, name, tmp_path / name, **options)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()
    for database in databases:
        database.close()


@pytest.fixture
def store(open_store: OpenStore) -> PageCache:
    return open_store()


def test_records_survive_a_reopen(store: PageCache, open_store: OpenStore) -> None:
    saved = record(page_body("proj", "proj-1.0.tar.gz"))
    store.save("proj", saved)
    store.close()
    reopened = open_store()
    assert reopened.load("proj") == saved
    assert reopened.load("other") is None
    assert open_store("elsewhere").load("proj") is None  # another directory (or upstream)


def test_a_large_record_round_trips(store: PageCache) -> None:
    """diskcache keeps big values in files of their own: that path is read back too."""
    body = page_body("proj", *(f"proj-{n}.0.tar.gz" for n in range(3000)))
    assert len(body) > 100_000
    store.save("proj", record(body))
    loaded = store.load("proj")
    assert loaded is not None and loaded.body == body


@pytest.mark.parametrize("module", ["pyproxy.upstream", "pyproxy.repository.upstream"])
def test_records_written_where_the_class_lived_before_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    """A cache written by an earlier pyproxy still serves after an upgrade (offline it is all
    there is): its pickles name the record class by its old module."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class _Entry:  # the earlier record, field for field
        status: int
        body: bytes
        content_type: str | None
        url: str
        etag: str | None
        last_modified: str | None
        fetched_at: float
        revision: str

    old = types.ModuleType(module)
    _Entry.__module__, _Entry.__qualname__ = module, "_Entry"
    old._Entry = _Entry  # type: ignore[attr-defined]
    fields = dataclasses.asdict(record(page_body("proj", "proj-1.0.tar.gz")))
    small, large = _Entry(**fields), _Entry(**{**fields, "body": b"x" * 200_000})
    with monkeypatch.context() as patched:  # the earlier module, while the cache is written
        patched.setitem(sys.modules, module, old)
        disk = diskcache.Cache(str(tmp_path / "pages"))
        disk.set("proj", small)
        disk.set("big", large)  # big enough for a file of its own
        disk.close()
        pickled = pickle.dumps(small)
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        pickle.loads(pickled)  # the class is not where the pickle says any more

    store = PageStore(tmp_path / "pages")
    try:
        assert store.load("proj") == PageRecord(**fields)
        loaded = store.load("big")
        assert loaded is not None and loaded.body == b"x" * 200_000
    finally:
        store.close()


def test_project_names_and_pages_leave_out_the_index_404s_and_garbage(store: PageCache) -> None:
    store.save(INDEX_KEY, record(INDEX, url=f"{ORIGIN}/simple/"))
    store.save("proj", record(page_body("proj", "proj-1.0.tar.gz")))
    store.save("b", record(page_body("b", "b-1.0.tar.gz")))
    store.save("missing", record(b"", status=404))
    store.save("broken", record(b"{not json"))
    assert store.project_names() == ["b", "broken", "proj"]  # its page is cached, if unusable
    pages = sorted(store.pages(), key=lambda p: p.name)
    assert [(p.name, [d.filename for d in p.files]) for p in pages] == [
        ("b", ["b-1.0.tar.gz"]), ("proj", ["proj-1.0.tar.gz"]),
    ]


async def test_remember_parses_once_per_revision(
    store: PageCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[str] = []
    original = page_store.parse

    def counting(key: str, held: PageRecord, **options: Any) -> ProjectPage:
        parses.append(key)
        return original(key, held, **options)

    monkeypatch.setattr(page_store, "parse", counting)
    first = record(page_body("proj", "proj-1.0.tar.gz"), fetched_at=100.0)
    known = await store.remember("proj", first)
    assert isinstance(known.result, ProjectPage) and known.result.revision == f"u{first.revision}"
    revalidated = await store.remember("proj", dataclasses.replace(first, fetched_at=200.0))
    assert parses == ["proj"]  # a 304 keeps the revision: nothing parsed again
    assert revalidated.result is known.result and revalidated.fetched_at == 200.0
    assert store.known("proj") == revalidated
    changed = await store.remember("proj", record(page_body("proj", "proj-2.0.tar.gz")))
    assert parses == ["proj", "proj"] and changed.result != known.result


async def test_a_404_record_is_remembered_as_no_project(store: PageCache) -> None:
    known = await store.remember("missing", record(b"", status=404))
    assert known.result is None and store.known("missing") == known


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"meta": {"api-version": "2.0"}}'])
async def test_a_malformed_record_is_a_format_error_and_not_remembered(
    store: PageCache, body: bytes
) -> None:
    with pytest.raises(UpstreamFormatError):
        await store.remember("proj", record(body))
    assert store.known("proj") is None


def _files(name: str, count: int) -> list[str]:
    return [f"{name}-{n}.0.tar.gz" for n in range(count)]


async def test_memory_is_bounded_by_bytes_not_pages(open_store: OpenStore) -> None:
    pages = {name: record(page_body(name, *_files(name, 200))) for name in "abcdefghij"}
    cost = (await open_store("measure").parsed("a", pages["a"])).cost
    bound = 3 * cost + cost // 2  # room for three such pages
    store = open_store(memory_bytes=bound)
    for name, held in pages.items():
        await store.remember(name, held)
        assert store.memory_bytes <= bound
    kept = [name for name in pages if store.known(name) is not None]
    assert kept == ["h", "i", "j"] and store.memory_bytes == 3 * cost
    assert store.load("a") is None  # remembering is not saving

    # a page larger than the whole bound is parsed and returned, and not kept
    big = record(page_body("big", *_files("big", 1000)))
    parsed = await store.remember("big", big)
    assert parsed.cost > bound
    assert isinstance(parsed.result, ProjectPage) and len(parsed.result.files) == 1000
    assert store.known("big") is None
    assert [name for name in pages if store.known(name) is not None] == ["h", "i", "j"]


def _verbose_entry(filename: str) -> dict[str, Any]:
    return {"filename": filename, "url": f"{ORIGIN}/packages/ab/cd/{'ef' * 30}/{filename}",
            "hashes": {"sha256": "ab" * 32, "blake2b_256": "cd" * 32}, "size": 12345,
            "upload-time": "2024-05-06T07:08:09.123456Z", "requires-python": ">=3.8",
            "core-metadata": {"sha256": "ef" * 32}, "yanked": False}


def _measured_record(kind: str) -> PageRecord:
    files = _files("proj", 2000)
    if kind == "terse json":
        return record(page_body("proj", *files))
    if kind == "verbose json":
        document = {"meta": {"api-version": "1.1"}, "name": "proj",
                    "files": [_verbose_entry(f) for f in files],
                    "versions": [f"{n}.0" for n in range(2000)]}
        return record(orjson.dumps(document))
    anchors = "".join(
        f'<a href="{ORIGIN}/f/{f}#sha256={"ab" * 32}" data-requires-python="&gt;=3.8">{f}</a>'
        for f in files
    )
    head = '<meta name="pypi:repository-version" content="1.1">'
    body = f"<html><head>{head}</head><body>{anchors}</body></html>".encode()
    return dataclasses.replace(record(body), content_type="text/html")


@pytest.mark.parametrize("kind", ["terse json", "verbose json", "html"])
async def test_the_estimate_is_not_below_what_a_parsed_page_takes(
    kind: str, tmp_path: Path
) -> None:
    """The bound is only as good as the estimate: measured, a parsed page takes no more, and
    not much less (a 100,000-file page is not costed like ten of them)."""
    held = _measured_record(kind)
    key = "proj"
    gc.collect()
    tracemalloc.start()
    try:
        result = page_store.parse(key, held)
        # the process-wide, bounded caches of parsed versions and tags (pyproxy/filenames.py)
        # are no page's cost: what they took here is let go before the page's is counted
        filenames._canonical_version.cache_clear()
        filenames._valid_name_and_tags.cache_clear()
        gc.collect()
        taken, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.files) > 1000
    store = PageStore(tmp_path / "pages")
    try:
        cost = (await store.parsed(key, held)).cost
    finally:
        store.close()
    assert taken <= cost <= 2.5 * taken, (kind, taken, cost, len(held.body))


# ---------------------------------------------------------------------------- export / import


@pytest.mark.parametrize("target_kind", ["disk", "postgresql"])
def test_exported_records_import_into_another_store(
    store: PageCache, open_store: OpenStore, target_kind: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Between a data dir and a cluster, either way (and within either)."""
    store.save("proj", record(page_body("proj", "proj-1.0.tar.gz")))
    store.save("missing", record(b"", status=404))
    database = None
    if target_kind == "disk":
        target: PageCache = PageStore(tmp_path / "target")
    else:
        database = Database(request.getfixturevalue("pg_dsn"))
        target = ClusterPageStore(database, None, "target", tmp_path / "target")
    try:
        exported = sorted(store.export_records())
        assert [key for key, _fields, _body in exported] == ["missing", "proj"]
        for key, fields, body in exported:
            assert "body" not in fields
            assert target.import_record(key, fields, body)
        assert target.load("proj") == store.load("proj")
        assert target.load("missing") == store.load("missing")
        # the same records again: the held copies are as new, nothing is replaced
        assert not any(target.import_record(k, f, b) for k, f, b in exported)
    finally:
        target.close()
        if database is not None:
            database.close()


def test_an_import_never_replaces_a_newer_copy(store: PageCache) -> None:
    newer = record(page_body("proj", "proj-2.0.tar.gz"), fetched_at=200.0)
    store.save("proj", newer)
    older = record(page_body("proj", "proj-1.0.tar.gz"), fetched_at=100.0)
    fields = dataclasses.asdict(older)
    body = fields.pop("body")
    assert not store.import_record("proj", fields, body)
    assert store.load("proj") == newer


def _fields(**changes: Any) -> tuple[dict[str, Any], bytes]:
    fields = dataclasses.asdict(record(page_body("proj", "proj-1.0.tar.gz")))
    body = fields.pop("body")
    fields.update(changes)
    return fields, body


@pytest.mark.parametrize(
    ("fields", "body", "message"),
    [
        (*_fields(colour="red"), "not a page record"),
        ({"status": 200}, b"", "not a page record"),
        (*_fields(status=500), "not a page record"),
        (*_fields(fetched_at="yesterday"), "not a page record"),
        (*_fields(revision="0" * 24), "does not match its recorded revision"),
        (_fields()[0] | {"revision": revision_of(b"{no")}, b"{no", "sent a malformed page"),
    ],
    ids=["unknown-field", "missing-fields", "bad-status", "bad-time", "wrong-revision", "garbage"],
)
def test_an_unusable_record_is_refused(
    store: PageCache, fields: dict[str, object], body: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        store.import_record("proj", fields, body)
    assert store.load("proj") is None


def test_a_page_the_disk_fills_up_under_leaves_no_partial_file(tmp_path: Path) -> None:
    with mounted(tmp_path / "disk", "4m") as disk:
        store = PageStore(disk / "pages")
        try:
            big = record(page_body("big", *(f"big-{n}.0.tar.gz" for n in range(2000))))
            assert len(pickle.dumps(big)) > 128 * 1024
            filler = fill(disk)
            os.truncate(filler, filler.stat().st_size - 64 * 1024)  # room for part of it
            store.save("big", big)
            assert store.load("big") is None
            left = [p for p in (disk / "pages").rglob("*.val")]
            assert left == [], f"partial page files left behind: {left}"
        finally:
            store.close()


def test_save_on_a_full_disk_keeps_the_page_in_memory_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mounted(tmp_path / "disk", "4m") as disk:
        store = PageStore(disk / "pages")
        try:
            small = record(page_body("proj", "proj-1.0.tar.gz"))
            big = record(page_body("big", *(f"big-{n}.0.tar.gz" for n in range(500))))
            assert len(pickle.dumps(big)) > 32 * 1024  # a file of its own in the cache
            filler = fill(disk)
            store.save("proj", small)  # no exception: the caller serves it from memory
            store.save("big", big)
            assert caplog.text.count("the disk is full") == 2
            filler.unlink()
            assert store.load("proj") is None and store.load("big") is None
            store.save("proj", small)  # and with room again, on disk as before
            assert store.load("proj") == small
        finally:
            store.close()
