"""The upstream HTTP client (pyproxy/repository/http.py): what each answer of the index
becomes, conditional requests, file bodies, the probe, and where credentials go (and never
show). Against real servers on 127.0.0.1 (see tests/repository/conftest.py).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pyproxy.config import Settings
from pyproxy.model import Unavailable
from pyproxy.repository.http import PageAnswer, UpstreamClient, UpstreamError, redact
from pyproxy.web.app import build_app
from pyproxy.web.context import Services
from pyproxy.compose import build_services
from tests.repository.conftest import JSON_TYPE, MakeScripted, good_page

MakeClient = Callable[..., UpstreamClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """`make_client(index_url, timeout=2.0)`; every client made is closed at teardown."""
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
    scripted_server: MakeScripted, make_client: MakeClient, status: int, expected: int
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"<html></html>", "text/html", status=status)
    answer = await make_client(f"{origin}/simple/").get_page(f"{origin}/simple/proj/")
    assert answer.status == expected
    assert answer.url == f"{origin}/simple/proj/"
    if expected == 200:
        assert (answer.body, answer.content_type) == (b"<html></html>", "text/html")


@pytest.mark.parametrize("status", [301, 304, 401, 403, 500, 502, 503])
async def test_other_answers_are_upstream_errors(
    scripted_server: MakeScripted, make_client: MakeClient, status: int
) -> None:
    """A 304 without validators asked for nothing; redirects are followed, so a 301 here is one
    without a Location."""
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"", None, status=status)
    client = make_client(f"{origin}/simple/")
    with pytest.raises(UpstreamError, match=f"^answered HTTP {status}$"):
        await client.get_page(f"{origin}/simple/proj/")
    assert client.last_failure is not None and client.last_success is None


async def test_validators_are_sent_and_304_is_not_modified(
    scripted_server: MakeScripted, make_client: MakeClient
) -> None:
    scripted, origin = await scripted_server()
    scripted.set("/simple/proj/", b"", None, status=304)
    client = make_client(f"{origin}/simple/")
    answer = await client.get_page(
        f"{origin}/simple/proj/", etag='"v1"', last_modified="Mon, 06 May 2024 07:08:09 GMT"
    )
    assert answer == PageAnswer(304, f"{origin}/simple/proj/")
    (headers,) = scripted.headers_for("/simple/proj/")
    assert headers["If-None-Match"] == '"v1"'
    assert headers["If-Modified-Since"] == "Mon, 06 May 2024 07:08:09 GMT"
    assert headers["Accept"].startswith("application/vnd.pypi.simple.v1+json")
    assert client.last_success is not None and client.last_failure is None


async def test_a_refused_connection_is_an_upstream_error(make_client: MakeClient) -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    port = server.port
    await server.close()  # nothing listens there now
    with pytest.raises(UpstreamError):
        await make_client(f"http://127.0.0.1:{port}/simple/").get_page(
            f"http://127.0.0.1:{port}/simple/proj/"
        )


# ---------------------------------------------------------------------------- file bodies


async def test_opener_streams_the_body_and_refuses_other_answers(
    scripted_server: MakeScripted, make_client: MakeClient
) -> None:
    scripted, origin = await scripted_server()
    body = bytes(range(256)) * 4096  # 1 MiB: more than one chunk
    scripted.set("/f/proj-1.0.tar.gz", body, "application/octet-stream")
    client = make_client(f"{origin}/simple/")
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
    scripted_server: MakeScripted, tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient]], caplog: pytest.LogCaptureFixture,
    user: str, password: str,
) -> None:
    index, index_origin = await scripted_server()
    files, files_origin = await scripted_server()
    page = {
        "meta": {"api-version": "1.1"},
        "name": "proj",
        "files": [
            {"filename": "proj-1.0.tar.gz", "url": f"{files_origin}/f/proj-1.0.tar.gz",
             "hashes": {}, "size": 4},
            # a file on the index origin itself (relative URL): credentials may go there
            {"filename": "proj-1.1.tar.gz", "url": "../../f/proj-1.1.tar.gz", "hashes": {},
             "size": 4},
        ],
    }
    index.set("/simple/proj/", page)
    index.set("/simple/", {"meta": {"api-version": "1.0"}, "projects": [{"name": "proj"}]})
    index.set("/f/proj-1.1.tar.gz", b"same", "application/octet-stream")
    files.set("/f/proj-1.0.tar.gz", b"body", "application/octet-stream")
    netloc = index_origin.removeprefix("http://")
    url = f"http://{quote(user, safe='')}:{quote(password, safe='')}@{netloc}/simple/"
    secrets = [password, quote(password, safe=""), quote(user, safe="") + ":",
               base64.b64encode(f"{user}:{password}".encode()).decode()]

    settings = Settings(data_dir=tmp_path / "data", upstream_url=url, upstream_page_ttl=0)
    with caplog.at_level(logging.DEBUG):
        services: Services = build_services(settings)
        try:
            client = await aiohttp_client(build_app(services))
            bodies = []
            for path, accept in (("/simple/proj/", JSON_TYPE), ("/simple/proj/", "text/html"),
                                 ("/simple/", JSON_TYPE), ("/simple/", "text/html"), ("/", None)):
                response = await client.get(path, headers={"Accept": accept} if accept else {})
                assert response.status == 200, (path, await response.text())
                bodies.append(await response.text())
            response = await client.get("/files/proj/proj-1.0.tar.gz")
            assert response.status == 200 and await response.read() == b"body"
            response = await client.get("/files/proj/proj-1.1.tar.gz")
            assert response.status == 200 and await response.read() == b"same"
            # an outage: the stale path logs the URL it failed on
            index.set("/simple/proj/", b"", None, status=503)
            index.set("/simple/other/", b"", None, status=503)
            response = await client.get("/simple/proj/", headers={"Accept": JSON_TYPE})
            assert response.status == 200
            response = await client.get("/simple/other/", headers={"Accept": JSON_TYPE})
            assert response.status == 503
            bodies.append(await response.text())
            await client.close()
        finally:
            await services.close()

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
    scripted_server: MakeScripted, make_client: MakeClient
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
        client = make_client(f"http://u:pw@127.0.0.1:{server.port}/simple/")
        answer = await client.get_page(client.index_url + "proj/")
        assert (answer.status, answer.url) == (200, f"{elsewhere_origin}/moved/proj/")
        assert seen and seen[0].get("Authorization") == _basic("u", "pw")
        followed = elsewhere.headers_for("/moved/proj/")
        assert followed and all("Authorization" not in h for h in followed), followed
    finally:
        await server.close()
