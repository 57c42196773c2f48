"""The fake upstream itself: formats, counters and switches, seen through a real aiohttp client."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fake_upstream import HTML_TYPE, JSON_TYPE, FakeUpstream, Formats

WHEEL = "foo_bar-1.0-py3-none-any.whl"
WHEEL_BODY = b"wheel bytes " * 1000
METADATA = b"Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n"
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        fake.add_file("Foo_Bar", WHEEL, WHEEL_BODY, metadata=METADATA, requires_python=">=3.8")
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


@pytest.mark.parametrize(
    ("formats", "accept", "content_type"),
    [
        ("both", None, HTML_TYPE),
        ("both", PIP_ACCEPT, JSON_TYPE),
        ("both", "text/html", HTML_TYPE),
        ("both", "*/*", HTML_TYPE),
        ("both", f"{JSON_TYPE};q=0, text/html", HTML_TYPE),
        ("json", "text/html", JSON_TYPE),
        ("html", JSON_TYPE, HTML_TYPE),
    ],
)
async def test_formats_and_negotiation(
    session: aiohttp.ClientSession, formats: Formats, accept: str | None, content_type: str
) -> None:
    async with FakeUpstream(formats=formats) as fake:
        fake.add_file("foo", "foo-1.0.tar.gz", b"sdist")
        headers = {"Accept": accept} if accept else {}
        for url in (fake.index_url, fake.page_url("foo")):
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == content_type
                assert response.headers["Vary"] == "Accept"


async def test_json_page_describes_the_file(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    async with session.get(upstream.page_url("foo-bar"), headers={"Accept": JSON_TYPE}) as response:
        page = await response.json(content_type=None)
    [entry] = page["files"]
    assert page["name"] == "foo-bar" and page["versions"] == ["1.0"]
    assert entry["url"] == upstream.file_url("foo-bar", WHEEL)
    assert entry["url"].startswith(f"http://127.0.0.1:{upstream.files_port}/")
    assert upstream.files_port != upstream.index_port
    assert entry["hashes"] == {"sha256": hashlib.sha256(WHEEL_BODY).hexdigest()}
    assert entry["size"] == len(WHEEL_BODY) and entry["requires-python"] == ">=3.8"
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(METADATA).hexdigest()}
    async with session.get(entry["url"]) as response:
        assert await response.read() == WHEEL_BODY
    async with session.get(entry["url"] + ".metadata") as response:
        assert await response.read() == METADATA


async def test_html_page_escapes_and_marks(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.add_file("foo-bar", "foo_bar-0.9.tar.gz", b"old", yanked="broken <build>")
    upstream.set_status("foo-bar", "deprecated", "use baz")
    async with session.get(upstream.page_url("foo-bar")) as response:
        text = await response.text()
    assert 'data-requires-python="&gt;=3.8"' in text
    assert 'data-yanked="broken &lt;build&gt;"' in text
    assert '<meta name="pypi:project-status" content="deprecated">' in text
    assert '<meta name="pypi:project-status-reason" content="use baz">' in text
    assert f"#sha256={hashlib.sha256(b'old').hexdigest()}" in text


async def test_redirects_and_not_found(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    base = f"http://127.0.0.1:{upstream.index_port}"
    redirects = [
        ("/simple/Foo.Bar/", "/simple/foo-bar/"),
        ("/simple/foo-bar", "/simple/foo-bar/"),
        ("/simple", "/simple/"),
    ]
    for path, location in redirects:
        async with session.get(base + path, allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (301, location)
    async with session.get(upstream.page_url("nothing-here")) as response:
        assert response.status == 404


async def test_quarantined_project_lists_no_files(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.set_status("foo-bar", "quarantined")
    async with session.get(upstream.page_url("foo-bar"), headers={"Accept": JSON_TYPE}) as response:
        page = await response.json(content_type=None)
    assert page["files"] == [] and page["project-status"]["status"] == "quarantined"


async def test_counters_and_conditional_requests(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    page = upstream.page_url("foo-bar")
    async with session.get(page) as response:
        etag = response.headers["ETag"]
        assert response.headers["Last-Modified"].endswith("GMT")
    async with session.get(page, headers={"If-None-Match": etag}) as response:
        assert response.status == 304 and response.headers["ETag"] == etag
    async with session.get(page, headers={"If-None-Match": etag, "Accept": JSON_TYPE}) as response:
        assert response.status == 200  # another representation, another ETag
    upstream.add_file("foo-bar", "foo_bar-2.0.tar.gz", b"new")
    async with session.get(page, headers={"If-None-Match": etag}) as response:
        assert response.status == 200  # the page changed
    async with session.head(upstream.file_url("foo-bar", WHEEL)) as response:
        assert response.headers["Content-Length"] == str(len(WHEEL_BODY))

    path = upstream.page_path("foo-bar")
    assert upstream.count(path) == 4 and upstream.count(path, "GET") == 4
    assert upstream.not_modified_count(path) == 1 and upstream.not_modified_count() == 1
    assert upstream.count(upstream.file_path("foo-bar", WHEEL), "HEAD") == 1
    assert upstream.total == 5
    upstream.reset_counters()
    assert upstream.total == 0 and upstream.requests == []


async def test_fail_status_global_and_per_path(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    file_url = upstream.file_url("foo-bar", WHEEL)
    upstream.fail_paths[upstream.file_path("foo-bar", WHEEL)] = 500
    async with session.get(file_url) as response:
        assert response.status == 500
    async with session.get(upstream.page_url("foo-bar")) as response:
        assert response.status == 200
    upstream.fail_paths.clear()
    upstream.fail_status = 503
    async with session.get(upstream.index_url) as response:
        assert response.status == 503
    upstream.fail_status = None
    async with session.get(file_url) as response:
        assert response.status == 200
    assert upstream.count(upstream.file_path("foo-bar", WHEEL)) == 2


async def test_latency(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.latency = 0.2
    started = time.monotonic()
    async with session.get(upstream.index_url) as response:
        await response.read()
    assert time.monotonic() - started >= 0.2


async def test_redirect_paths(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    elsewhere = "http://127.0.0.1:9/elsewhere"
    upstream.redirect_paths[upstream.file_path("foo_bar", WHEEL)] = elsewhere
    url = upstream.file_url("foo_bar", WHEEL)
    async with session.get(url, allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (302, elsewhere)


async def test_drip_sends_the_same_bytes_in_small_slow_pieces(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    async with session.get(upstream.page_url("foo_bar")) as response:
        page = await response.read()
    upstream.drip = (256, 0.02)
    for url, expected in ((upstream.page_url("foo_bar"), page),
                          (upstream.file_url("foo_bar", WHEEL), WHEEL_BODY)):
        started = time.monotonic()
        async with session.get(url) as response:
            assert await response.read() == expected
        pauses = (len(expected) - 1) // 256
        assert time.monotonic() - started >= 0.02 * pauses


@pytest.mark.parametrize("switch", ["drop_connection", "truncate_files"])
async def test_broken_bodies(
    upstream: FakeUpstream, session: aiohttp.ClientSession, switch: str
) -> None:
    setattr(upstream, switch, True)
    async with session.get(upstream.file_url("foo-bar", WHEEL)) as response:
        assert response.headers["Content-Length"] == str(len(WHEEL_BODY))
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    setattr(upstream, switch, False)
    async with session.get(upstream.file_url("foo-bar", WHEEL)) as response:
        assert await response.read() == WHEEL_BODY


async def test_ranges_when_switched_on(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    url = upstream.file_url("foo-bar", WHEEL)
    async with session.get(url, headers={"Range": "bytes=-100"}) as response:
        assert response.status == 200  # by default, as many upstreams: the whole file
        assert await response.read() == WHEEL_BODY
    upstream.serve_ranges = True
    generated = upstream.add_generated_file("foo-bar", "foo_bar-2.0-py3-none-any.whl", 300_000)
    whole = b"".join(generated.chunks())
    for wanted, first, last in (("bytes=-100", 299_900, 299_999), ("bytes=65530-65545", 65530, 65545),
                                ("bytes=299990-", 299_990, 299_999)):
        async with session.get(upstream.file_url("foo-bar", generated.filename),
                               headers={"Range": wanted}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes {first}-{last}/300000"
            assert await response.read() == whole[first : last + 1]
    async with session.get(url, headers={"Range": "bytes=99999999-"}) as response:
        assert response.status == 416
    upstream.range_status = 500
    async with session.get(url, headers={"Range": "bytes=-10"}) as response:
        assert response.status == 500
    async with session.get(url) as response:  # only ranged requests fail
        assert await response.read() == WHEEL_BODY
    assert upstream.ranges_of(upstream.file_path("foo-bar", WHEEL)) == [
        "bytes=-100", "bytes=99999999-", "bytes=-10"]


async def test_offering_no_metadata(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.offer_metadata = False
    async with session.get(upstream.page_url("foo-bar"), headers={"Accept": JSON_TYPE}) as response:
        (entry,) = (await response.json(content_type=None))["files"]
    assert "core-metadata" not in entry
    async with session.get(upstream.page_url("foo-bar"), headers={"Accept": "text/html"}) as response:
        assert "core-metadata" not in await response.text()
    async with session.get(upstream.file_url("foo-bar", WHEEL) + ".metadata") as response:
        assert response.status == 404


async def test_wrong_bytes(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.wrong_bytes = True
    async with session.get(upstream.file_url("foo-bar", WHEEL)) as response:
        body = await response.read()
    assert len(body) == len(WHEEL_BODY) and body != WHEEL_BODY


async def test_generated_file_streams_its_hash(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    size = 3 * 1024 * 1024 + 17
    dist = upstream.add_generated_file("big", "big-1.0.tar.gz", size)
    assert dist.body is None
    digest, received = hashlib.sha256(), 0
    async with session.get(upstream.file_url("big", "big-1.0.tar.gz")) as response:
        assert response.headers["Content-Length"] == str(size)
        async for chunk in response.content.iter_chunked(256 * 1024):
            digest.update(chunk)
            received += len(chunk)
    assert (received, digest.hexdigest()) == (size, dist.sha256)


async def test_relative_file_urls(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(formats="json", relative_file_urls=True) as fake:
        fake.add_file("foo", "foo-1.0.tar.gz", b"sdist")
        async with session.get(fake.page_url("foo")) as response:
            [entry] = (await response.json(content_type=None))["files"]
        assert entry["url"] == "../../files/foo/foo-1.0.tar.gz"
        async with session.get(fake.page_url("foo") + entry["url"]) as response:
            assert await response.read() == b"sdist"
        assert fake.count("/files/foo/foo-1.0.tar.gz") == 1


async def test_stop_and_start_on_the_same_ports(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    ports = (upstream.index_port, upstream.files_port)
    await upstream.stop()
    assert not upstream.is_running
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(upstream.index_url):
            pass
    await upstream.start()
    assert (upstream.index_port, upstream.files_port) == ports
    async with session.get(upstream.index_url) as response:
        assert response.status == 200


def test_running_in_thread_for_synchronous_tests() -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from env
    with FakeUpstream.running_in_thread(formats="html") as fake:
        fake.add_file("foo", "foo-1.0.tar.gz", b"sdist")
        with opener.open(fake.page_url("foo"), timeout=5) as response:
            assert b"foo-1.0.tar.gz" in response.read()
        fake.stop_blocking()
        with pytest.raises(urllib.error.URLError):
            opener.open(fake.index_url, timeout=5)
        fake.start_blocking()
        with opener.open(fake.file_url("foo", "foo-1.0.tar.gz"), timeout=5) as response:
            assert response.read() == b"sdist"
        assert fake.count("/simple/foo/") == 1


async def test_stop_cuts_a_download_in_flight(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.add_generated_file("big", "big-1.0.tar.gz", 1024 * 1024)
    upstream.chunk_delay = 0.05
    async with session.get(upstream.file_url("big", "big-1.0.tar.gz")) as response:
        await response.content.readexactly(64 * 1024)
        await upstream.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_ranges_only_when_switched_on(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    url = upstream.file_url("Foo_Bar", WHEEL)
    size = len(WHEEL_BODY)
    async with session.get(url, headers={"Range": "bytes=0-9"}) as response:
        assert response.status == 200 and await response.read() == WHEEL_BODY  # the default
    upstream.serve_ranges = True
    for spec, expected, first in (("bytes=0-9", WHEEL_BODY[:10], 0), ("bytes=-7", WHEEL_BODY[-7:], size - 7),
                                  (f"bytes={size - 3}-", WHEEL_BODY[-3:], size - 3)):
        async with session.get(url, headers={"Range": spec}) as response:
            assert response.status == 206, spec
            assert response.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{size}"
            assert await response.read() == expected, spec
    big = upstream.add_generated_file("Foo_Bar", "foo_bar-2.0.tar.gz", 300_000)
    async with session.get(upstream.file_url("Foo_Bar", big.filename), headers={"Range": "bytes=65530-65545"}) as r:
        assert await r.read() == b"".join(big.chunks())[65530:65546]  # across two chunks
    async with session.get(url, headers={"Range": f"bytes={size}-"}) as response:
        assert response.status == 416 and response.headers["Content-Range"] == f"bytes */{size}"
    path = upstream.file_path("Foo_Bar", WHEEL)
    assert [spec for p, spec in upstream.ranged if p == path] == [
        "bytes=0-9", "bytes=0-9", "bytes=-7", f"bytes={size - 3}-", f"bytes={size}-"
    ]
