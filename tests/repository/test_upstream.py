"""The upstream repository (pyproxy/repository/upstream.py): parsing what the fake index serves,
the page cache (TTL, revalidation, restart), stale-on-error, coalescing and malformed answers.
Where credentials go is tests/repository/test_http.py.

Everything runs against real servers on 127.0.0.1: the FakeUpstream, or for what it cannot do
(send garbage bodies) the `Scripted` app of tests/repository/conftest.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

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
             page_ttl: float = 600.0, index_ttl: float = 600.0) -> UpstreamRepository:
        upstream = UpstreamRepository(
            UpstreamClient(index_url, timeout=timeout),
            PageStore(cache_dir or tmp_path / f"pages{len(made)}"),
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
        assert [name.lower() for name in projects.names] == ["foo_bar"]


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

    def counting_parse(key: str, entry: Any) -> Any:
        parses.append(key)
        return original(key, entry)

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


# ---------------------------------------------------------------------------- outages


async def _break(fake: FakeUpstream, how: str) -> None:
    if how == "503":
        fake.fail_status = 503
    elif how == "500":
        fake.fail_status = 500
    elif how == "stopped":
        await fake.stop()
    elif how == "timeout":
        fake.latency = 2.0
    else:
        raise AssertionError(how)


OUTAGES = ["503", "500", "stopped", "timeout"]


@pytest.mark.parametrize("how", OUTAGES)
async def test_outage_with_cached_copy_serves_stale(
    fake: FakeUpstream, make_upstream: MakeUpstream, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = make_upstream(fake.index_url, timeout=0.3, page_ttl=0.05, index_ttl=0.05)
    page = await upstream.project_page(_n("foo-bar"))
    projects = await upstream.list_projects()
    await asyncio.sleep(0.1)
    await _break(fake, how)
    with caplog.at_level(logging.WARNING, logger="pyproxy.upstream"):
        stale = await upstream.project_page(_n("foo-bar"))
        stale_list = await upstream.list_projects()
    assert stale.files == page.files
    assert stale_list.names == projects.names
    assert "stale" in caplog.text


async def test_after_a_failed_revalidation_the_stale_copy_is_served_without_waiting(
    fake: FakeUpstream, make_upstream: MakeUpstream
) -> None:
    """While upstream hangs, only one request per back-off period pays its timeout."""
    upstream = make_upstream(fake.index_url, timeout=0.3, page_ttl=1.0)
    page = await upstream.project_page(_n("foo-bar"))
    await asyncio.sleep(1.1)
    await _break(fake, "timeout")
    sent = fake.total
    started = time.monotonic()
    assert (await upstream.project_page(_n("foo-bar"))).files == page.files
    assert time.monotonic() - started >= 0.3  # this one waited for upstream's timeout
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
