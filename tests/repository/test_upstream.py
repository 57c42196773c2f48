"""The upstream repository (pyproxy/repository/upstream.py): parsing what the fake index serves,
the page cache (TTL, revalidation, restart), stale-on-error, coalescing and malformed answers.
Where credentials go is tests/repository/test_http.py.

Everything runs against real servers on 127.0.0.1: the FakeUpstream, or for what it cannot do
(send garbage bodies) the `Scripted` app of tests/repository/conftest.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from pyproxy import metrics
from pyproxy.model import NormalizedName, NotFound, Origin, Unavailable
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores import pages as page_store
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageStore
from tests.conftest import MakeClient
from tests.fake_upstream import FakeUpstream, Formats
from tests.repository.conftest import MakeScripted, good_page

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
MOMENT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
WHEEL = "foo_bar-1.0-py3-none-any.whl"
SDIST = "foo_bar-0.9.tar.gz"
METADATA = b"Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n"

MakeUpstream = Callable[..., UpstreamRepository]


def _n(name: str) -> NormalizedName:
    return NormalizedName(name)


def _fill(fake: FakeUpstream) -> None:
    fake.add_file("Foo_Bar", WHEEL, b"wheel " * 100, requires_python=">=3.8,<4",
                  metadata=METADATA, upload_time=MOMENT)
    fake.add_file("Foo_Bar", SDIST, b"sdist", yanked="broken", upload_time=MOMENT)
    fake.add_file("Foo_Bar", "foo_bar-0.8.tar.gz", b"older", yanked=True)


@pytest.fixture
async def make_upstream(tmp_path: Path) -> AsyncIterator[MakeUpstream]:
    """`make_upstream(index_url, **kwargs)`; each call its own cache dir unless `cache_dir` given."""
    made: list[UpstreamRepository] = []

    def make(index_url: str, *, cache_dir: Path | None = None, timeout: float = 2.0,
             page_ttl: float = 600.0, index_ttl: float = 600.0, deadline: float = 60.0,
             page_memory: int = page_store.MEMORY_BYTES) -> UpstreamRepository:
        upstream = UpstreamRepository(
            UpstreamClient(index_url, timeout=timeout, deadline=deadline),
            PageStore(cache_dir or tmp_path / f"pages{len(made)}", memory_bytes=page_memory),
            BlobCache(tmp_path / f"files{len(made)}", 2**30),
            page_ttl=page_ttl,
            index_ttl=index_ttl,
        )
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.close()


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    _fill(fake)
    return fake


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("formats", ["json", "html", "both"])
@pytest.mark.parametrize("relative", [False, True])
async def test_parsed_fields_equal_the_fixture(
    make_upstream: MakeUpstream, formats: Formats, relative: bool
) -> None:
    async with FakeUpstream(formats=formats, relative_file_urls=relative) as fake:
        _fill(fake)
        upstream = make_upstream(fake.index_url)
        page = await upstream.project_page(_n("foo-bar"))

        assert page.name == "foo-bar"
        assert sorted(page.versions) == ["0.8", "0.9", "1.0"]
        assert {d.filename for d in page.files} == {WHEEL, SDIST, "foo_bar-0.8.tar.gz"}
        with_size = formats != "html"  # PEP 700 fields exist only in JSON
        for dist in page.files:
            served = fake.file("foo_bar", dist.filename)
            assert dist.origin is Origin.UPSTREAM
            # relative links are resolved against the page URL
            assert dist.upstream_url == fake.file_url("foo_bar", dist.filename)
            assert dict(dist.hashes) == {"sha256": served.sha256}
            assert dist.size == (served.size if with_size else None)
        wheel = page.file(WHEEL)
        assert wheel is not None
        assert wheel.requires_python == ">=3.8,<4"
        assert wheel.core_metadata == {"sha256": fake.file("foo_bar", WHEEL).metadata_sha256}
        assert not wheel.yanked
        assert wheel.upload_time == (MOMENT if with_size else None)
        sdist = page.file(SDIST)
        assert sdist is not None and sdist.yanked and sdist.yanked_reason == "broken"
        assert sdist.core_metadata is False
        old = page.file("foo_bar-0.8.tar.gz")
        assert old is not None and old.yanked and old.yanked_reason == ""
        assert page.status.status == "active"

        projects = await upstream.list_projects()
        assert [shown.lower() for _, shown in projects.entries()] == ["foo_bar"]


async def test_project_status_is_parsed(make_upstream: MakeUpstream) -> None:
    for formats in ("json", "html"):
        async with FakeUpstream(formats=formats) as fake:  # type: ignore[arg-type]
            fake.add_file("q", "q-1.0.tar.gz", b"q")
            fake.set_status("q", "quarantined", "malware")
            page = await make_upstream(fake.index_url).project_page(_n("q"))
            assert page.files == ()
            assert (page.status.status, page.status.reason) == ("quarantined", "malware")
            assert not page.status.offers_files


# ---------------------------------------------------------------------------- page cache


async def test_second_request_within_ttl_is_not_sent(fake: FakeUpstream,
                                                     make_upstream: MakeUpstream) -> None:
    upstream = make_upstream(fake.index_url)
    first = await upstream.project_page(_n("foo-bar"))
    second = await upstream.project_page(_n("foo-bar"))
    assert second == first
    assert fake.count(fake.page_path("foo-bar")) == 1
    await upstream.list_projects()
    await upstream.list_projects()
    assert fake.count("/simple/") == 1


async def test_after_ttl_revalidates_with_304_and_no_reparse(
    fake: FakeUpstream, make_upstream: MakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[str] = []
    original = page_store.parse

    def counting_parse(key: str, entry: Any, **options: Any) -> Any:
        parses.append(key)
        return original(key, entry, **options)

    monkeypatch.setattr(page_store, "parse", counting_parse)
    upstream = make_upstream(fake.index_url, page_ttl=0.05)
    path = fake.page_path("foo-bar")
    first = await upstream.project_page(_n("foo-bar"))
    assert parses == ["foo-bar"]
    await asyncio.sleep(0.1)
    second = await upstream.project_page(_n("foo-bar"))
    assert fake.count(path) == 2
    assert fake.not_modified_count(path) == 1, "the revalidation was not answered 304"
    assert parses == ["foo-bar"], "a 304 re-parsed the page"
    assert second is first  # same parsed object, same revision: nothing re-rendered
    # and within the renewed TTL, no request at all
    await upstream.project_page(_n("foo-bar"))
    assert fake.count(path) == 2

    # a real change upstream is picked up at the next revalidation
    fake.add_file("foo_bar", "foo_bar-2.0.tar.gz", b"new")
    await asyncio.sleep(0.1)
    third = await upstream.project_page(_n("foo-bar"))
    assert third.file("foo_bar-2.0.tar.gz") is not None
    assert third.revision != first.revision
    assert fake.not_modified_count(path) == 1


async def test_page_cache_survives_a_restart(
    fake: FakeUpstream, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "shared-pages"
    first = make_upstream(fake.index_url, cache_dir=cache_dir)
    page = await first.project_page(_n("foo-bar"))
    await first.list_projects()
    await first.close()
    assert fake.total == 2

    second = make_upstream(fake.index_url, cache_dir=cache_dir)
    again = await second.project_page(_n("foo-bar"))
    await second.list_projects()
    assert fake.total == 2, f"refetched after a restart within the TTL: {fake.requests}"
    assert again.files == page.files and again.revision == page.revision
    await second.close()

    # after the TTL, the restarted process revalidates the stored copy (304), not a full fetch
    third = make_upstream(fake.index_url, cache_dir=cache_dir, page_ttl=0.0)
    await third.project_page(_n("foo-bar"))
    assert fake.count(fake.page_path("foo-bar")) == 2
    assert fake.not_modified_count(fake.page_path("foo-bar")) == 1


async def test_upstream_404_is_not_found(fake: FakeUpstream, make_upstream: MakeUpstream) -> None:
    upstream = make_upstream(fake.index_url)
    with pytest.raises(NotFound):
        await upstream.project_page(_n("does-not-exist"))
    with pytest.raises(NotFound):  # remembered for the TTL like any page
        await upstream.project_page(_n("does-not-exist"))
    assert fake.count(fake.page_path("does-not-exist")) == 1


async def test_parsed_pages_in_memory_are_bounded_by_bytes(
    fake: FakeUpstream, make_upstream: MakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many big pages: the memory holds what fits in its bound in bytes, the rest is parsed
    again from the disk cache when asked for, without asking upstream."""
    names = [f"big-{n}" for n in range(8)]
    for name in names:
        for n in range(300):
            fake.add_file(name, f"{name}-{n}.0.tar.gz", b"x")
    measuring = make_upstream(fake.index_url)
    await measuring.project_page(_n(names[0]))
    known = measuring.pages.known(names[0])
    assert known is not None
    bound = 3 * known.cost + known.cost // 2  # three of them fit
    parses: list[str] = []
    original = page_store.parse

    def counting_parse(key: str, entry: Any, **options: Any) -> Any:
        parses.append(key)
        return original(key, entry, **options)

    monkeypatch.setattr(page_store, "parse", counting_parse)
    upstream = make_upstream(fake.index_url, page_memory=bound)
    pages = {}
    for name in names:
        pages[name] = await upstream.project_page(_n(name))
        assert upstream.pages.memory_bytes <= bound
    assert [n for n in names if upstream.pages.known(n) is not None] == names[-3:]
    asked = fake.total
    again = await upstream.project_page(_n(names[0]))  # evicted: from disk, parsed again
    assert again.files == pages[names[0]].files and len(again.files) == 300
    assert fake.total == asked, "an evicted page was fetched from upstream again"
    assert parses.count(names[0]) == 2
    assert upstream.pages.memory_bytes <= bound


# ---------------------------------------------------------------------------- outages


async def _break(fake: FakeUpstream, how: str) -> None:
    if how == "503":
        fake.fail_status = 503
    elif how == "500":
        fake.fail_status = 500
    elif how == "stopped":
        await fake.stop()
    elif how == "timeout":
        fake.latency = 3.0
    else:
        raise AssertionError(how)


OUTAGES = ["503", "500", "stopped", "timeout"]


@pytest.mark.parametrize("how", OUTAGES)
async def test_outage_with_cached_copy_serves_stale(
    fake: FakeUpstream, make_upstream: MakeUpstream, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the healthy fetches come first: a timeout they can meet on a loaded machine
    upstream = make_upstream(fake.index_url, timeout=1.0, page_ttl=0.05, index_ttl=0.05)
    page = await upstream.project_page(_n("foo-bar"))
    projects = await upstream.list_projects()
    await asyncio.sleep(0.1)
    await _break(fake, how)
    with caplog.at_level(logging.WARNING, logger="pyproxy.upstream"):
        stale = await upstream.project_page(_n("foo-bar"))
        stale_list = await upstream.list_projects()
    assert stale.files == page.files
    assert list(stale_list.entries()) == list(projects.entries())
    assert "stale" in caplog.text


async def test_after_a_failed_revalidation_the_stale_copy_is_served_without_waiting(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    """While upstream hangs, only one request per back-off period pays its timeout."""
    upstream = make_upstream(fake.index_url, timeout=1.0, page_ttl=1.0)
    page = await upstream.project_page(_n("foo-bar"))
    await asyncio.sleep(1.1)
    await _break(fake, "timeout")
    sent = fake.total
    started = time.monotonic()
    assert (await upstream.project_page(_n("foo-bar"))).files == page.files
    assert time.monotonic() - started >= 1.0  # this one waited for upstream's timeout
    assert fake.total == sent + 1
    for _ in range(5):  # served from the stale copy: nothing sent, so nothing waited for
        assert (await upstream.project_page(_n("foo-bar"))).files == page.files
    assert fake.total == sent + 1  # no request while backing off


@pytest.mark.parametrize("how", OUTAGES)
async def test_outage_without_copy_is_unavailable(
    fake: FakeUpstream, make_upstream: MakeUpstream, how: str
) -> None:
    upstream = make_upstream(fake.index_url, timeout=0.3)
    await _break(fake, how)
    with pytest.raises(Unavailable):
        await upstream.project_page(_n("foo-bar"))
    with pytest.raises(Unavailable):
        await upstream.list_projects()


@pytest.mark.parametrize("how", OUTAGES)
async def test_outage_without_copy_is_503_over_http(
    fake: FakeUpstream, make_client: MakeClient, how: str
) -> None:
    client, _ = await make_client(upstream_url=fake.index_url, upstream_timeout=0.3)
    await _break(fake, how)
    for accept in (JSON_TYPE, "text/html"):
        response = await client.get("/simple/uncached/", headers={"Accept": accept})
        assert response.status == 503, (accept, response.status, await response.text())
        # pip honours Retry-After by sleeping before each retry: a 503 must not set it
        assert "Retry-After" not in response.headers


async def test_a_dripping_page_counts_as_down(
    fake: FakeUpstream, make_upstream: MakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes arrive well within the read timeout, but the page would take seconds in all: past
    the deadline the stale copy is served (503 without one), not the page that was dripping."""
    upstream = make_upstream(fake.index_url, timeout=2.0, deadline=0.5, page_ttl=0.05)
    page = await upstream.project_page(_n("foo-bar"))
    fake.add_file("foo_bar", "foo_bar-3.0.tar.gz", b"new")  # what the dripped page would add
    fake.drip = (16, 0.05)  # a page of ~1.5 kB: about 5 s
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="pyproxy.upstream"):
        stale = await upstream.project_page(_n("foo-bar"))
    assert stale.files == page.files
    assert "no complete page within 0.5 s" in caplog.text
    fake.add_file("other", "other-1.0.tar.gz", b"other")
    with pytest.raises(Unavailable, match=r"no complete page within 0\.5 s"):
        await upstream.project_page(_n("other"))  # never fetched: no copy


# ---------------------------------------------------------------------------- malformed answers


MALFORMED: dict[str, tuple[bytes, str | None]] = {
    "garbage json": (b"{not json at all", JSON_TYPE),
    "json array": (b"[1, 2, 3]", JSON_TYPE),
    "files not a list": (b'{"meta": {"api-version": "1.0"}, "files": "nope"}', JSON_TYPE),
    "file without url": (b'{"meta": {"api-version": "1.0"}, "files": [{"filename": "a.tar.gz"}]}',
                         JSON_TYPE),
    "api version 2": (b'{"meta": {"api-version": "2.0"}, "name": "proj", "files": []}', JSON_TYPE),
    "application/json": (orjson.dumps({"meta": {"api-version": "1.0"}, "files": []}),
                         "application/json"),
    "text/plain html": (b"<html><body><a href='x-1.0.tar.gz'>x</a></body></html>", "text/plain"),
    "no content type": (b"<html><body></body></html>", None),
    "empty html": (b"", "text/html"),
    "binary junk": (bytes(range(256)) * 4, "application/octet-stream"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_answer_without_copy_is_unavailable(
    scripted_server: MakeScripted, make_upstream: MakeUpstream, case: str
) -> None:
    scripted, origin = await scripted_server()
    body, content_type = MALFORMED[case]
    scripted.set("/simple/proj/", body, content_type)
    scripted.set("/simple/", body, content_type)
    upstream = make_upstream(f"{origin}/simple/")
    with pytest.raises(Unavailable):
        await upstream.project_page(_n("proj"))
    with pytest.raises(Unavailable):
        await upstream.list_projects()


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_answer_with_copy_serves_stale(
    scripted_server: MakeScripted, make_upstream: MakeUpstream, tmp_path: Path, case: str
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", good_page(origin))
    cache_dir = tmp_path / "pages-malformed"
    upstream = make_upstream(f"{origin}/simple/", page_ttl=0.05, cache_dir=cache_dir)
    good = await upstream.project_page(_n("proj"))
    await asyncio.sleep(0.1)
    body, content_type = MALFORMED[case]
    scripted.set("/simple/proj/", body, content_type)
    stale = await upstream.project_page(_n("proj"))
    assert stale.files == good.files
    assert len(scripted.headers_for("/simple/proj/")) == 2
    await upstream.close()
    # the garbage was not stored: a restarted process still has the good copy on disk
    restarted = make_upstream(f"{origin}/simple/", page_ttl=600.0, cache_dir=cache_dir)
    assert (await restarted.project_page(_n("proj"))).files == good.files
    assert len(scripted.headers_for("/simple/proj/")) == 2


async def test_malformed_answer_is_503_over_http(
    scripted_server: MakeScripted, make_client: MakeClient
) -> None:
    scripted, origin = await scripted_server()
    for index, (body, content_type) in enumerate(MALFORMED.values()):
        scripted.set(f"/simple/case{index}/", body, content_type)
    client, _ = await make_client(upstream_url=f"{origin}/simple/")
    for index, case in enumerate(MALFORMED):
        response = await client.get(f"/simple/case{index}/", headers={"Accept": JSON_TYPE})
        assert response.status == 503, (case, response.status, await response.text())


# ---------------------------------------------------------------------------- coalescing


async def test_concurrent_requests_for_one_page_send_one(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    fake.latency = 0.2
    upstream = make_upstream(fake.index_url)
    pages = await asyncio.gather(*(upstream.project_page(_n("foo-bar")) for _ in range(20)))
    assert fake.count(fake.page_path("foo-bar")) == 1
    assert all(page == pages[0] for page in pages)


async def test_concurrent_requests_for_a_missing_page_send_one(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    fake.latency = 0.2
    upstream = make_upstream(fake.index_url)
    results = await asyncio.gather(
        *(upstream.project_page(_n("missing")) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(result, NotFound) for result in results), results
    assert fake.count(fake.page_path("missing")) == 1


async def test_concurrent_requests_during_an_outage_send_one_and_all_fail_cleanly(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    fake.latency = 0.2
    fake.fail_status = 502
    upstream = make_upstream(fake.index_url)
    results = await asyncio.gather(
        *(upstream.project_page(_n("foo-bar")) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(result, Unavailable) for result in results), results
    assert fake.count(fake.page_path("foo-bar")) == 1


@pytest.mark.parametrize("outcome", ["answered", "failed"])
async def test_repositories_sharing_a_cache_send_one_request(
    fake: FakeUpstream, make_upstream: MakeUpstream, tmp_path: Path, outcome: str
) -> None:
    """Two repositories on one page cache stand for two worker processes: the one that waited
    takes the other's answer from disk, or its failure, instead of asking upstream itself."""
    fake.latency = 0.3
    if outcome == "failed":
        fake.fail_status = 502
    shared = tmp_path / "shared-pages"
    one, two = (make_upstream(fake.index_url, cache_dir=shared) for _ in range(2))
    results = await asyncio.gather(
        one.project_page(_n("foo-bar")), two.project_page(_n("foo-bar")), return_exceptions=True
    )
    assert fake.count(fake.page_path("foo-bar")) == 1
    if outcome == "answered":
        assert results[0] == results[1]
    else:
        assert all(isinstance(result, Unavailable) for result in results), results
        assert any("by another worker" in str(result) for result in results), results


async def test_cancelled_waiter_does_not_break_the_shared_fetch(
    make_upstream: MakeUpstream
) -> None:
    """Ordered by events, not by sleeps: upstream holds its answer until the caller that started
    the fetch has been cancelled, while a second caller waits for the same page."""
    arrived, release = asyncio.Event(), asyncio.Event()
    requests = []

    async def held(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        arrived.set()
        await release.wait()
        return web.json_response(good_page(origin), content_type=JSON_TYPE)

    app = web.Application()
    app.router.add_get("/simple/proj/", held)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    origin = f"http://127.0.0.1:{server.port}"
    try:
        upstream = make_upstream(f"{origin}/simple/")
        first = asyncio.ensure_future(upstream.project_page(_n("proj")))
        await asyncio.wait_for(arrived.wait(), 10)  # the shared fetch is at upstream
        second = asyncio.ensure_future(upstream.project_page(_n("proj")))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not second.done()
        release.set()
        page = await asyncio.wait_for(second, 10)
        assert page.file("proj-1.0.tar.gz") is not None
        assert requests == ["/simple/proj/"]  # the second caller joined the first one's fetch
    finally:
        release.set()
        await server.close()


# ---------------------------------------------------------------------------- garbage with 200


FILE_BODY = b"proj's sdist"
MAINTENANCE = b"<html><head><title>Maintenance</title></head><body><h1>Back soon</h1></body></html>"
LOGIN = b'<html><body><h1>Access denied</h1><a href="/login">Sign in</a></body></html>'


def _page_with_a_file(origin: str, **extra: Any) -> dict[str, Any]:
    return {
        "meta": {"api-version": "1.1"}, "name": "proj", **extra,
        "files": [{"filename": "proj-1.0.tar.gz", "url": f"{origin}/f/proj-1.0.tar.gz",
                   "hashes": {"sha256": hashlib.sha256(FILE_BODY).hexdigest()},
                   "size": len(FILE_BODY)}],
    }


def _garbage(origin: str, case: str) -> tuple[bytes | dict[str, Any], str, str]:
    """(body, content type, the refusal's metric reason) for a 200 that is not the page."""
    no_marker = (  # a real link to the file, but none of the page's declarations
        f'<html><body><a href="{origin}/f/proj-1.0.tar.gz">proj-1.0.tar.gz</a></body></html>'
    ).encode()
    return {
        "maintenance page": (MAINTENANCE, "text/html", "not_a_page"),
        "login page": (LOGIN, "text/html; charset=utf-8", "not_a_page"),
        "html without marker from a json upstream": (no_marker, "text/html", "not_a_page"),
        "no files any more": ({**_page_with_a_file(origin), "files": []}, JSON_TYPE, "emptied"),
    }[case]


def _refused(reason: str) -> float:
    text, _ = metrics.scrape("text/plain", lambda: ())
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "pyproxy_upstream_pages_refused_total" and sample.labels == {
                "reason": reason
            }:
                return float(sample.value)
    raise AssertionError("no pyproxy_upstream_pages_refused_total sample")


async def _filenames(client: TestClient, path: str = "/simple/proj/") -> list[str]:
    response = await client.get(path, headers={"Accept": JSON_TYPE})
    assert response.status == 200, await response.text()
    return [entry["filename"] for entry in (await response.json(content_type=None))["files"]]


GARBAGE = ["maintenance page", "login page", "html without marker from a json upstream",
           "no files any more"]


@pytest.mark.parametrize("case", GARBAGE)
async def test_garbage_never_replaces_a_good_page(
    scripted_server: MakeScripted, make_client: MakeClient, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, case: str,
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", _page_with_a_file(origin))
    scripted.set("/f/proj-1.0.tar.gz", FILE_BODY, "application/octet-stream")
    data_dir = tmp_path / "data"
    # page_ttl 0: every request asks upstream again
    client, _ = await make_client(
        data_dir=data_dir, upstream_url=f"{origin}/simple/", upstream_page_ttl=0
    )
    assert await _filenames(client) == ["proj-1.0.tar.gz"]
    assert await (await client.get("/files/proj/proj-1.0.tar.gz")).read() == FILE_BODY

    body, content_type, reason = _garbage(origin, case)
    scripted.set("/simple/proj/", body, content_type)
    before = _refused(reason)
    with caplog.at_level(logging.WARNING, logger="pyproxy.upstream"):
        for _ in range(2):  # neither the memory nor the disk took the garbage
            assert await _filenames(client) == ["proj-1.0.tar.gz"]
    assert _refused(reason) == before + 2
    assert "serving a stale copy" in caplog.text and "not the page" in caplog.text
    asked = len(scripted.headers_for("/simple/proj/"))  # the file's request asked too
    await make_client.close(client)

    # a later offline start still has the good page (and its cached file)
    offline, _ = await make_client(
        data_dir=data_dir, upstream_url=f"{origin}/simple/", offline=True
    )
    assert await _filenames(offline) == ["proj-1.0.tar.gz"]
    assert len(scripted.headers_for("/simple/proj/")) == asked


async def test_a_project_list_that_suddenly_names_nothing_is_garbage(
    scripted_server: MakeScripted, make_upstream: MakeUpstream
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/", {"meta": {"api-version": "1.1"}, "projects": [{"name": "proj"}]})
    upstream = make_upstream(f"{origin}/simple/", index_ttl=0.0)
    assert list((await upstream.list_projects()).entries()) == [("proj", "proj")]
    scripted.set("/simple/", {"meta": {"api-version": "1.1"}, "projects": []})
    before = _refused("emptied")
    assert list((await upstream.list_projects()).entries()) == [("proj", "proj")]
    assert _refused("emptied") == before + 1


@pytest.mark.parametrize("case", ["maintenance page", "login page"])
async def test_garbage_without_a_copy_is_503(
    scripted_server: MakeScripted, make_client: MakeClient, case: str
) -> None:
    scripted, origin = await scripted_server()
    body, content_type, reason = _garbage(origin, case)
    scripted.set("/simple/proj/", body, content_type)
    scripted.set("/simple/", body, content_type)
    client, _ = await make_client(upstream_url=f"{origin}/simple/")
    before = _refused(reason)
    response = await client.get("/simple/proj/", headers={"Accept": JSON_TYPE})
    assert response.status == 503, await response.text()
    assert "not the page" in await response.text()
    # the project list goes on without upstream's names (as in an outage), none made up
    response = await client.get("/simple/", headers={"Accept": JSON_TYPE})
    assert response.status == 200
    assert (await response.json(content_type=None))["projects"] == []
    assert _refused(reason) == before + 2


async def test_what_is_not_garbage(
    scripted_server: MakeScripted, make_client: MakeClient
) -> None:
    """An index without the marker that links files, an empty project that declares its
    version, and a page emptied by a PEP 792 quarantine are pages."""
    scripted, origin = await scripted_server()
    no_marker = _garbage(origin, "html without marker from a json upstream")[0]
    assert isinstance(no_marker, bytes)
    scripted.set("/simple/old-index/", no_marker, "text/html")
    scripted.set("/simple/empty/", b'<html><head><meta name="pypi:repository-version" '
                 b'content="1.0"></head><body></body></html>', "text/html")
    scripted.set("/simple/proj/", _page_with_a_file(origin))
    client, _ = await make_client(upstream_url=f"{origin}/simple/", upstream_page_ttl=0)
    assert await _filenames(client, "/simple/old-index/") == ["proj-1.0.tar.gz"]
    assert await _filenames(client, "/simple/empty/") == []
    assert await _filenames(client, "/simple/proj/") == ["proj-1.0.tar.gz"]
    quarantined = {**_page_with_a_file(origin), "files": [],
                   "project-status": {"status": "quarantined", "reason": "malware"}}
    scripted.set("/simple/proj/", {**quarantined, "meta": {"api-version": "1.4"}})
    assert await _filenames(client, "/simple/proj/") == []


async def test_an_index_without_a_project_list_is_unavailable_not_an_error(
    scripted_server: MakeScripted, make_upstream: MakeUpstream
) -> None:
    _scripted, origin = await scripted_server()  # answers 404 for every path not set
    upstream = make_upstream(f"{origin}/simple/")
    with pytest.raises(Unavailable, match="has no project list"):
        await upstream.list_projects()
