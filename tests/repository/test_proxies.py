"""The proxy the environment names for upstream (repository/proxies.py), and the upstream client
going through it: a real HTTP proxy written with aiohttp here, forwarding to a scripted index."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def _tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the client trusts it as its CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


async def _connect_proxy(seen: list[tuple[str, str | None]]) -> asyncio.Server:
    """An HTTP proxy that only tunnels (CONNECT), recording each target and its credentials."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ")
        fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        seen.append((f"{method} {target}", fields.get("Proxy-Authorization")))
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(tunnel, "127.0.0.1", 0)


async def test_an_https_upstream_is_reached_through_the_proxys_tunnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = _tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def page(_request: web.Request) -> web.Response:
        return web.json_response({"meta": {"api-version": "1.1"}, "name": "proj", "files": []},
                                 content_type="application/vnd.pypi.simple.v1+json")

    app = web.Application()
    app.router.add_get("/simple/proj/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen: list[tuple[str, str | None]] = []
    proxy = await _connect_proxy(seen)
    proxy_port = proxy.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://scout:s3cret@127.0.0.1:{proxy_port}")
    client = UpstreamClient(f"https://127.0.0.1:{port}/simple/", timeout=5.0,
                            ca_bundle=str(cert))
    try:
        answer = await client.get_page(f"https://127.0.0.1:{port}/simple/proj/")
        assert answer.status == 200 and b'"proj"' in answer.body
    finally:
        await client.close()
        proxy.close()
        await runner.cleanup()
    credentials = "Basic " + base64.b64encode(b"scout:s3cret").decode()
    assert seen == [(f"CONNECT 127.0.0.1:{port}", credentials)]
