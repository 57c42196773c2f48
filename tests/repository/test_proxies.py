"""The proxy the environment names for upstream (repository/proxies.py), and the upstream client
going through it: a real HTTP proxy written with aiohttp here, forwarding to a scripted index."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.proxies import Proxies
from tests.repository.conftest import MakeScripted

_NO_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _NO_PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_the_environments_proxy_per_scheme_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://ci%40corp:p%3Ass@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "files.internal,.corp.internal")
    proxies = Proxies()
    proxy = proxies.for_url("http://mirror.internal/simple/")
    assert proxy is not None and proxy.url == "http://proxy.internal:3128"  # no credentials
    credentials = base64.b64encode(b"ci@corp:p:ss").decode()
    assert proxy.headers == {"Proxy-Authorization": f"Basic {credentials}"}
    assert proxies.for_url("http://mirror.internal/files/x.whl") is proxy  # decided once
    for bypassed in ("http://files.internal/f.whl", "http://a.corp.internal/f.whl"):
        assert proxies.for_url(bypassed) is None
    assert proxies.for_url("https://mirror.internal/simple/") is None  # no HTTPS_PROXY


def test_an_https_proxy_is_ignored_and_none_is_direct(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    assert Proxies().for_url("http://mirror.internal/simple/") is None
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.internal:3129")
    assert Proxies().for_url("https://mirror.internal/simple/") is None
    assert "only http:// proxies are supported" in caplog.text


async def forwarding_proxy(seen: list[tuple[str, str | None]]) -> TestServer:
    """An HTTP proxy: absolute-form requests, forwarded; records each URL and its
    Proxy-Authorization."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append((str(request.url), request.headers.get("Proxy-Authorization")))
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "proxy-authorization", "proxy-connection")}
        async with session.request(request.method, str(request.url), headers=headers,
                                   allow_redirects=False) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "etag", "content-range")}
            return web.Response(status=answer.status, body=body, headers=kept)

    async def close(_app: web.Application) -> None:
        await session.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(close)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def proxy_seen() -> AsyncIterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    server = await forwarding_proxy(seen)
    yield f"127.0.0.1:{server.port}", seen
    await server.close()


@pytest.mark.parametrize("bypass", [False, True])
async def test_pages_and_files_go_through_the_proxy_unless_bypassed(
    scripted_server: MakeScripted, proxy_seen: tuple[str, list[tuple[str, str | None]]],
    monkeypatch: pytest.MonkeyPatch, bypass: bool,
) -> None:
    index, origin = await scripted_server()
    index.set("/simple/proj/", {"meta": {"api-version": "1.1"}, "name": "proj", "files": []})
    index.set("/f/proj-1.0.tar.gz", b"sdist bytes", "application/octet-stream")
    address, seen = proxy_seen
    monkeypatch.setenv("HTTP_PROXY", f"http://scout:s3cret@{address}")
    if bypass:
        monkeypatch.setenv("no_proxy", "127.0.0.1")
    client = UpstreamClient(f"{origin}/simple/", timeout=5.0)
    try:
        assert (await client.get_page(f"{origin}/simple/proj/")).status == 200
        async with client.opener(f"{origin}/f/proj-1.0.tar.gz")() as chunks:
            assert b"".join([chunk async for chunk in chunks]) == b"sdist bytes"
        await client.probe()
    finally:
        await client.close()
    if bypass:
        assert seen == []
    else:
        credentials = "Basic " + base64.b64encode(b"scout:s3cret").decode()
        assert seen == [(f"{origin}/simple/proj/", credentials),
                        (f"{origin}/f/proj-1.0.tar.gz", credentials),
                        (f"{origin}/simple/", credentials)]
    for path in ("/simple/proj/", "/f/proj-1.0.tar.gz"):
        assert "Proxy-Authorization" not in index.headers_for(path)[0]


async def test_no_netrc_credentials_go_anywhere(
    scripted_server: MakeScripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a netrc `default` entry names every host: aiohttp's trust_env would send it to file hosts
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password leaked\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    index, origin = await scripted_server()
    index.set("/simple/proj/", {"meta": {"api-version": "1.1"}, "name": "proj", "files": []})
    index.set("/f/proj-1.0.tar.gz", b"sdist bytes", "application/octet-stream")
    client = UpstreamClient(f"{origin}/simple/", timeout=5.0)
    try:
        await client.get_page(f"{origin}/simple/proj/")
        async with client.opener(f"{origin}/f/proj-1.0.tar.gz")() as chunks:
            assert b"".join([chunk async for chunk in chunks]) == b"sdist bytes"
    finally:
        await client.close()
    for path in ("/simple/proj/", "/f/proj-1.0.tar.gz"):
        assert "Authorization" not in index.headers_for(path)[0]
