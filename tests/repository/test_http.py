"""The upstream HTTP client (pyproxy/repository/http.py): what each answer of the index
becomes, conditional requests, file bodies, the probe, and where credentials go (and never
show). Against real servers on 127.0.0.1 (see tests/repository/conftest.py).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestServer

from pyproxy.model import Unavailable
from pyproxy.repository import http
from pyproxy.repository.http import UpstreamClient, redact
from pyproxy.repository.http_answers import PageAnswer, RangeAnswer, UpstreamError, WholeAnswer
from tests.conftest import MakeClient, StartFake
from tests.dists import make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.repository.conftest import JSON_TYPE, MakeScripted, Scripted, good_page

OpenClient = Callable[..., UpstreamClient]


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """`open_client(index_url, timeout=2.0)`; every client opened is closed at teardown."""
    made: list[UpstreamClient] = []

    def make(index_url: str, *, timeout: float = 2.0) -> UpstreamClient:
        made.append(UpstreamClient(index_url, timeout=timeout))
        return made[-1]

    yield make
    for client in made:
        await client.close()


# ---------------------------------------------------------------------------- pages


@pytest.mark.parametrize(
    ("status", "expected"), [(200, 200), (404, 404), (410, 404)], ids=["ok", "404", "410-gone"]
)
async def test_page_answers(
    scripted_server: MakeScripted, open_client: OpenClient, status: int, expected: int
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"<html></html>", "text/html", status=status)
    answer = await open_client(f"{origin}/simple/").get_page(f"{origin}/simple/proj/")
    assert answer.status == expected
    assert answer.url == f"{origin}/simple/proj/"
    if expected == 200:
        assert (answer.body, answer.content_type) == (b"<html></html>", "text/html")


@pytest.mark.parametrize("status", [301, 304, 401, 403, 500, 502, 503])
async def test_other_answers_are_upstream_errors(
    scripted_server: MakeScripted, open_client: OpenClient, status: int
) -> None:
    """A 304 without validators asked for nothing; redirects are followed, so a 301 here is one
    without a Location."""
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"", None, status=status)
    client = open_client(f"{origin}/simple/")
    with pytest.raises(UpstreamError, match=f"^answered HTTP {status}$"):
        await client.get_page(f"{origin}/simple/proj/")
    assert client.last_failure is not None and client.last_success is None


async def test_validators_are_sent_and_304_is_not_modified(
    scripted_server: MakeScripted, open_client: OpenClient
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"", None, status=304)
    client = open_client(f"{origin}/simple/")
    answer = await client.get_page(
        f"{origin}/simple/proj/", etag='"v1"', last_modified="Mon, 06 May 2024 07:08:09 GMT"
    )
    assert answer == PageAnswer(304, f"{origin}/simple/proj/")
    (headers,) = scripted.headers_for("/simple/proj/")
    assert headers["If-None-Match"] == '"v1"'
    assert headers["If-Modified-Since"] == "Mon, 06 May 2024 07:08:09 GMT"
    assert headers["Accept"].startswith("application/vnd.pypi.simple.v1+json")
    assert client.last_success is not None and client.last_failure is None


async def test_a_page_past_the_limit_is_an_upstream_error(
    scripted_server: MakeScripted, open_client: OpenClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "PAGE_MAX_BYTES", 2**20)
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"<html>" + b" " * 2**20, "text/html")
    scripted.set("/simple/small/", b"<html>" + b" " * (2**20 - 6), "text/html")
    client = open_client(f"{origin}/simple/")
    with pytest.raises(UpstreamError, match=f"more than {2**20} a page may have"):
        await client.get_page(f"{origin}/simple/proj/")
    assert len((await client.get_page(f"{origin}/simple/small/")).body) == 2**20


async def test_a_gzip_bomb_is_refused_as_it_inflates(
    open_client: OpenClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "PAGE_MAX_BYTES", 2**20)
    bomb = gzip.compress(b"<html>" + b" " * 64 * 2**20)  # 64 KiB on the wire

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "text/html"})

    app = web.Application()
    app.router.add_get("/simple/proj/", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        origin = f"http://127.0.0.1:{server.port}"
        with pytest.raises(UpstreamError, match="more than 1048576 bytes \\(as decompressed\\)"):
            await open_client(f"{origin}/simple/").get_page(f"{origin}/simple/proj/")
    finally:
        await server.close()


async def test_failures_are_said_in_words_not_aiohttps_reprs(open_client: OpenClient) -> None:
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/simple/loop/")

    async def script(request: web.Request) -> web.Response:
        raise web.HTTPFound("javascript:alert(1)")

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"not gzip at all", headers={"Content-Encoding": "gzip",
                                                              "Content-Type": "text/html"})

    app = web.Application()
    for path, handler in (("loop", loop), ("script", script), ("garbage", garbage)):
        app.router.add_get(f"/simple/{path}/", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        origin = f"http://127.0.0.1:{server.port}"
        client = open_client(f"{origin}/simple/")
        for path, said in (
            ("loop", "^redirected too many times$"),
            ("script", "^redirected to 'javascript:alert\\(1\\)', not a URL pyproxy fetches$"),
            ("garbage", "^sent a malformed body \\(Can not decode content-encoding: gzip\\)$"),
        ):
            with pytest.raises(UpstreamError, match=said):
                await client.get_page(f"{origin}/simple/{path}/")
    finally:
        await server.close()


async def test_a_refused_connection_is_an_upstream_error(open_client: OpenClient) -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    port = server.port
    await server.close()  # nothing listens there now
    with pytest.raises(UpstreamError):
        await open_client(f"http://127.0.0.1:{port}/simple/").get_page(
            f"http://127.0.0.1:{port}/simple/proj/"
        )


# ---------------------------------------------------------------------------- file bodies


async def test_opener_streams_the_body_and_refuses_other_answers(
    scripted_server: MakeScripted, open_client: OpenClient
) -> None:
    scripted, origin = await scripted_server()
    body = bytes(range(256)) * 4096  # 1 MiB: more than one chunk
    scripted.set("/f/proj-1.0.tar.gz", body, "application/octet-stream")
    client = open_client(f"{origin}/simple/")
    async with client.opener(f"{origin}/f/proj-1.0.tar.gz")() as chunks:
        received = [chunk async for chunk in chunks]
    assert b"".join(received) == body and len(received) > 1
    (headers,) = scripted.headers_for("/f/proj-1.0.tar.gz")
    assert headers["Accept-Encoding"] == "identity"
    with pytest.raises(Unavailable, match="upstream answered HTTP 404 for a file"):
        async with client.opener(f"{origin}/f/missing.tar.gz")():
            raise AssertionError("opened a missing file")


# ---------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p%40ss@index.example.test/simple/", "https://index.example.test/simple/"),
        ("https://u@index.example.test:8443/simple/", "https://index.example.test:8443/simple/"),
        ("https://index.example.test/simple/", "https://index.example.test/simple/"),
    ],
)
def test_redact_drops_user_and_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("user", "password"),
    [("ci-user", "plain-S3cret"), ("ci@corp", "p@ss:w/rd%")],
    ids=["plain", "percent-encoded"],
)
async def test_credentials_go_to_the_index_only_and_never_show(
    scripted_server: MakeScripted, make_client: MakeClient, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, user: str, password: str,
) -> None:
    index, index_origin = await scripted_server()
    files, files_origin = await scripted_server()
    # listed without a hash, so they must be real sdists to be served
    sdist = make_sdist(tmp_path / "dists", "proj", "1.0").read_bytes()
    other_sdist = make_sdist(tmp_path / "dists", "proj", "1.1").read_bytes()
    page = {
        "meta": {"api-version": "1.1"},
        "name": "proj",
        "files": [
            {"filename": "proj-1.0.tar.gz", "url": f"{files_origin}/f/proj-1.0.tar.gz",
             "hashes": {}, "size": len(sdist)},
            # a file on the index origin itself (relative URL): credentials may go there
            {"filename": "proj-1.1.tar.gz", "url": "../../f/proj-1.1.tar.gz", "hashes": {},
             "size": len(other_sdist)},
        ],
    }
    index.set("/simple/proj/", page)
    index.set("/simple/", {"meta": {"api-version": "1.0"}, "projects": [{"name": "proj"}]})
    index.set("/f/proj-1.1.tar.gz", other_sdist, "application/octet-stream")
    files.set("/f/proj-1.0.tar.gz", sdist, "application/octet-stream")
    netloc = index_origin.removeprefix("http://")
    url = f"http://{quote(user, safe='')}:{quote(password, safe='')}@{netloc}/simple/"
    secrets = [password, quote(password, safe=""), quote(user, safe="") + ":",
               base64.b64encode(f"{user}:{password}".encode()).decode()]

    with caplog.at_level(logging.DEBUG):
        client, services = await make_client(upstream_url=url, upstream_page_ttl=0)
        bodies = []
        for path, accept in (("/simple/proj/", JSON_TYPE), ("/simple/proj/", "text/html"),
                             ("/simple/", JSON_TYPE), ("/simple/", "text/html"), ("/", None)):
            response = await client.get(path, headers={"Accept": accept} if accept else {})
            assert response.status == 200, (path, await response.text())
            bodies.append(await response.text())
        response = await client.get("/files/proj/proj-1.0.tar.gz")
        assert response.status == 200 and await response.read() == sdist
        response = await client.get("/files/proj/proj-1.1.tar.gz")
        assert response.status == 200 and await response.read() == other_sdist
        # an outage: the stale path logs the URL it failed on
        index.set("/simple/proj/", b"", None, status=503)
        index.set("/simple/other/", b"", None, status=503)
        response = await client.get("/simple/proj/", headers={"Accept": JSON_TYPE})
        assert response.status == 200
        response = await client.get("/simple/other/", headers={"Accept": JSON_TYPE})
        assert response.status == 503
        bodies.append(await response.text())
        # stopped inside the block: what the shutdown logs is checked too
        await make_client.close(client)

    for secret in secrets:
        for body in bodies:
            assert secret not in body
        assert secret not in caplog.text, f"{secret!r} in the logs"
        assert secret not in services.upstream_description
    assert files.seen, "the file was never fetched from the files origin"
    assert all("Authorization" not in headers for _p, headers in files.seen), files.seen
    # like pip, the userinfo of the URL is percent-decoded before it is sent
    sent = {
        base64.b64decode(value.removeprefix("Basic ")).decode() if value else None
        for value in (h.get("Authorization") for _p, h in index.seen)
    }
    assert sent == {f"{user}:{password}"}, f"index got credentials {sent}"


async def test_credentials_are_not_sent_after_a_redirect_to_another_origin(
    scripted_server: MakeScripted, open_client: OpenClient
) -> None:
    elsewhere, elsewhere_origin = await scripted_server()
    elsewhere.set("/moved/proj/", good_page(elsewhere_origin))
    seen: list[dict[str, str]] = []

    async def moved(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        raise web.HTTPFound(f"{elsewhere_origin}/moved/proj/")

    redirecting = web.Application()
    redirecting.router.add_get("/simple/proj/", moved)
    server = TestServer(redirecting, host="127.0.0.1")
    await server.start_server()
    try:
        client = open_client(f"http://u:pw@127.0.0.1:{server.port}/simple/")
        answer = await client.get_page(client.index_url + "proj/")
        assert (answer.status, answer.url) == (200, f"{elsewhere_origin}/moved/proj/")
        assert seen and seen[0].get("Authorization") == _basic("u", "pw")
        followed = elsewhere.headers_for("/moved/proj/")
        assert followed and all("Authorization" not in h for h in followed), followed
    finally:
        await server.close()


# ---------------------------------------------------------------------------- file redirects


SDIST_NAME = "foo-1.0.tar.gz"
BODY = b"the sdist's bytes"


async def _redirecting(fake_upstream: StartFake, scripted_server: MakeScripted
                       ) -> tuple[FakeUpstream, Scripted, str]:
    """A fake upstream whose file is also served by a third server (on another port), which
    nobody configured; every request to it is recorded."""
    fake = await fake_upstream()
    fake.add_file("foo", SDIST_NAME, BODY)
    fake.add_file("foo", "foo-1.1.tar.gz", BODY)  # same bytes, so a redirect to it is good
    third, third_origin = await scripted_server()
    third.set(f"/elsewhere/{SDIST_NAME}", BODY, "application/octet-stream")
    return fake, third, third_origin


@pytest.mark.parametrize("target", ["third host", "not http", "a loop"])
async def test_a_file_redirect_nobody_allowed_is_refused_unasked(
    fake_upstream: StartFake, scripted_server: MakeScripted, make_client: MakeClient,
    target: str,
) -> None:
    fake, third, third_origin = await _redirecting(fake_upstream, scripted_server)
    path, other = fake.file_path("foo", SDIST_NAME), fake.file_path("foo", "foo-1.1.tar.gz")
    fake.redirect_paths[path] = {
        "third host": f"{third_origin}/elsewhere/{SDIST_NAME}",
        "not http": "file:///etc/passwd",
        "a loop": other,  # relative: the same origin, then back, and again
    }[target]
    fake.redirect_paths[other] = path
    client, _ = await make_client(upstream_url=fake.index_url)
    response = await client.get(f"/files/foo/{SDIST_NAME}")
    assert response.status == 503, await response.text()
    assert "redirected" in await response.text()
    assert third.seen == [], "the unconfigured host was asked"
    if target == "a loop":  # at most MAX_FILE_REDIRECTS hops were followed
        assert fake.count(path) + fake.count(other) == 4
    # nothing was cached: once upstream serves the file, it is asked again
    fake.redirect_paths.clear()
    response = await client.get(f"/files/foo/{SDIST_NAME}")
    assert response.status == 200 and await response.read() == BODY


@pytest.mark.parametrize("where", ["configured host", "the page's file host", "the index"])
async def test_a_file_redirect_to_an_allowed_origin_is_followed(
    fake_upstream: StartFake, scripted_server: MakeScripted, make_client: MakeClient,
    where: str,
) -> None:
    fake, third, third_origin = await _redirecting(fake_upstream, scripted_server)
    index_origin = f"http://127.0.0.1:{fake.index_port}"
    files_from: tuple[str, ...] = ()
    if where == "configured host":
        location = f"{third_origin}/elsewhere/{SDIST_NAME}"
        files_from = (third_origin.removeprefix("http://"),)  # "127.0.0.1:PORT": that port only
    elif where == "the page's file host":
        location = fake.file_url("foo", "foo-1.1.tar.gz")
    else:  # the index's origin, which serves no file here: 404 shows the hop was made
        location = f"{index_origin}/simple/no-such-file/"
    fake.redirect_paths[fake.file_path("foo", SDIST_NAME)] = location
    client, _ = await make_client(upstream_url=fake.index_url, upstream_files_from=files_from)
    response = await client.get(f"/files/foo/{SDIST_NAME}")
    if where == "the index":
        assert response.status == 503
        assert "HTTP 404" in await response.text()
        assert fake.count("/simple/no-such-file/") == 1
        return
    assert response.status == 200, await response.text()
    assert await response.read() == BODY
    assert len(third.seen) == (1 if where == "configured host" else 0)


# ---------------------------------------------------------------------------- slow file bodies


async def test_a_dripping_file_is_aborted_and_never_cached(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """Below [upstream] min_rate over a window of waiting, the download is aborted: the client
    sees an aborted body, nothing is cached, and a later full-speed download works."""
    dist = fake.add_generated_file("foo", "foo-1.0.tar.gz", 64 * 1024)
    client, _ = await make_client(
        upstream_url=fake.index_url, upstream_min_rate=1_000_000, upstream_rate_window=0.2
    )
    fake.drip = (1024, 0.05)  # 20 kB/s: the whole file would take over 3 s
    response = await client.get(f"/files/foo/{dist.filename}")
    with pytest.raises(ClientPayloadError):
        await response.read()
    fake.drip = None
    response = await client.get(f"/files/foo/{dist.filename}")
    assert response.status == 200
    assert hashlib.sha256(await response.read()).hexdigest() == dist.sha256
    assert fake.count(fake.file_path("foo", dist.filename)) == 2  # the first was not kept


async def test_file_headers_have_the_deadline_too(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    dist = fake.add_generated_file("foo", "foo-1.0.tar.gz", 1000)
    # the deadline also bounds the page fetch first: room for it on a loaded machine
    client, _ = await make_client(upstream_url=fake.index_url, upstream_deadline=2.0)
    assert (await client.get("/simple/foo/")).status == 200
    fake.latency = 4.0  # before any answer, within the 30 s read timeout
    response = await client.get(f"/files/foo/{dist.filename}")
    assert response.status == 503
    assert "no answer for a file within 2 s" in await response.text()


# ---------------------------------------------------------------------------- ranges

BODY = bytes(range(256)) * 40  # 10240 bytes


async def ranged_server(mode: str) -> TestServer:
    """A file host: "ranges" answers ranges as RFC 9110 says, "whole" ignores them (200),
    "lying" answers a 206 for bytes it was not asked, "short" announces more than it sends."""

    async def handle(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Range", "")
        if mode == "whole" or not header:
            return web.Response(body=BODY)
        first_text, _, last_text = header.removeprefix("bytes=").partition("-")
        if not first_text:
            first, last = len(BODY) - int(last_text), len(BODY) - 1
        else:
            first, last = int(first_text), min(int(last_text), len(BODY) - 1)
        if mode == "lying":
            first, last = 0, len(BODY) - 1
        body = BODY[first:last + 1]
        response = web.StreamResponse(status=206, headers={
            "Content-Range": f"bytes {first}-{last}/{len(BODY)}",
            "Content-Length": str(len(body)),
        })
        await response.prepare(request)
        await response.write(body[:-3] if mode == "short" else body)
        if mode == "short":
            assert request.transport is not None
            request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/files/f.whl", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_read_range_reads_a_range_and_a_suffix(open_client: OpenClient) -> None:
    server = await ranged_server("ranges")
    try:
        client = open_client(str(server.make_url("/simple/")))
        url = str(server.make_url("/files/f.whl"))
        middle = await client.read_range(url, 100, 50)
        assert middle is not None
        assert (middle.body, middle.start, middle.total) == (BODY[100:150], 100, len(BODY))
        tail = await client.read_range(url, -64, 64)
        assert tail is not None
        assert (tail.body, tail.start, tail.total) == (BODY[-64:], len(BODY) - 64, len(BODY))
    finally:
        await server.close()


async def test_read_range_is_none_when_upstream_sends_the_whole_file(
    open_client: OpenClient,
) -> None:
    server = await ranged_server("whole")
    try:
        client = open_client(str(server.make_url("/simple/")))
        assert await client.read_range(str(server.make_url("/files/f.whl")), 0, 10) is None
    finally:
        await server.close()


async def test_read_tail_keeps_an_answer_of_the_whole_file_unread(open_client: OpenClient) -> None:
    server = await ranged_server("whole")
    try:
        client = open_client(str(server.make_url("/simple/")))
        url = str(server.make_url("/files/f.whl"))
        whole = await client.read_tail(url, 64)
        assert isinstance(whole, WholeAnswer) and whole.size == len(BODY)
        for _ in range(2):  # that answer's body, then (taken) a request of its own
            async with whole.opener() as chunks:
                assert b"".join([chunk async for chunk in chunks]) == BODY
        dropped = await client.read_tail(url, 64)
        assert isinstance(dropped, WholeAnswer)
        dropped.close()  # not taken: the connection goes, unread
        dropped.close()
        assert await client.read_range(url, 0, 10) is None  # the connection pool still serves
    finally:
        await server.close()
    server = await ranged_server("ranges")
    try:
        client = open_client(str(server.make_url("/simple/")))
        tail = await client.read_tail(str(server.make_url("/files/f.whl")), 64)
        assert isinstance(tail, RangeAnswer) and tail.body == BODY[-64:]
    finally:
        await server.close()


@pytest.mark.parametrize("mode", ["lying", "short"])
async def test_a_range_other_than_asked_is_unavailable(open_client: OpenClient, mode: str) -> None:
    server = await ranged_server(mode)
    try:
        client = open_client(str(server.make_url("/simple/")))
        with pytest.raises(Unavailable):
            await client.read_range(str(server.make_url("/files/f.whl")), 0, 10)
    finally:
        await server.close()


async def test_a_gzip_file_labelled_gzip_is_kept_as_sent_other_files_are_undone(
    open_client: OpenClient, tmp_path: Path
) -> None:
    """`Content-Encoding: gzip` on an sdist names its own compression (S3, Apache's
    AddEncoding): pip keeps the bytes as sent, and the listed sha256 is theirs. A wheel a host
    compresses anyway (though asked for identity) is undone, as before."""
    sdist = make_sdist(tmp_path, "demo", "1.0").read_bytes()
    wheel = make_wheel(tmp_path, "demo", "1.0").read_bytes()

    async def labelled(request: web.Request) -> web.Response:
        return web.Response(body=sdist, headers={"Content-Encoding": "gzip"})

    async def compressed(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(wheel), headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/f/demo-1.0.tar.gz", labelled)
    app.router.add_get("/f/demo-1.0-py3-none-any.whl", compressed)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        origin = f"http://127.0.0.1:{server.port}"
        client = open_client(f"{origin}/simple/")
        for name, expected in (("demo-1.0.tar.gz", sdist), ("demo-1.0-py3-none-any.whl", wheel)):
            async with client.opener(f"{origin}/f/{name}")() as body:
                assert b"".join([chunk async for chunk in body]) == expected, name
        whole = await client.read_whole(f"{origin}/f/demo-1.0.tar.gz")
        assert whole.size == len(sdist)
        whole.close()
        whole = await client.read_whole(f"{origin}/f/demo-1.0-py3-none-any.whl")
        assert whole.size is None
        whole.close()
    finally:
        await server.close()
