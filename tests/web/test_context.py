"""The origin of the absolute URLs pyproxy writes (pyproxy/web/context.py `origin`): base_url,
else X-Forwarded-Proto/-Host from a trusted peer, else the request's own scheme and Host.

The private-only app runs on 127.0.0.1 over real HTTP, on a copy of the session's seeded data.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient

JSON = "application/vnd.pypi.simple.v1+json"
PAGE = "/simple/foo-bar/"
WHEEL = "foo_bar-2.0-py3-none-any.whl"
PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pkgs.example.test"}

async def file_urls(client: TestClient, headers: dict[str, str] | None = None) -> list[str]:
    response = await client.get(PAGE, headers={"Accept": JSON, **(headers or {})})
    assert response.status == 200, await response.text()
    return [f["url"] for f in (await response.json())["files"]]


def own_origin(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.port}"


async def test_forwarded_headers_are_ignored_by_default(make_client: MakeClient) -> None:
    client, _ = await make_client(seeded=True)
    urls = await file_urls(client, PROXY)
    assert urls and all(url.startswith(own_origin(client) + "/files/foo-bar/") for url in urls)


async def test_trusted_forwarded_headers_set_the_origin(make_client: MakeClient) -> None:
    client, _ = await make_client(seeded=True, trust_forwarded=True)
    urls = await file_urls(client, PROXY)
    assert f"https://pkgs.example.test/files/foo-bar/{WHEEL}" in urls
    assert all(url.startswith("https://pkgs.example.test/files/foo-bar/") for url in urls)
    # the HTML flavour and the file behind the link agree
    html = await (await client.get(PAGE, headers={"Accept": "text/html", **PROXY})).text()
    assert f'href="https://pkgs.example.test/files/foo-bar/{WHEEL}#sha256=' in html
    assert (await client.get(f"/files/foo-bar/{WHEEL}")).status == 200


async def test_proto_alone_keeps_the_host_header(make_client: MakeClient) -> None:
    client, _ = await make_client(seeded=True, trust_forwarded=True)
    urls = await file_urls(client, {"X-Forwarded-Proto": "HTTPS"})
    assert all(url.startswith(f"https://127.0.0.1:{client.port}/files/") for url in urls)
    urls = await file_urls(client, {"X-Forwarded-Host": "[::1]:8443"})
    assert all(url.startswith("http://[::1]:8443/files/") for url in urls)


async def test_first_value_of_a_list_counts(make_client: MakeClient) -> None:
    client, _ = await make_client(seeded=True, trust_forwarded=True)
    urls = await file_urls(client, {"X-Forwarded-Proto": "https, http",
                                    "X-Forwarded-Host": "outer.example.test:8443, inner:8080"})
    assert all(url.startswith("https://outer.example.test:8443/files/") for url in urls)


async def test_two_origins_never_share_a_cached_page(make_client: MakeClient) -> None:
    """Pages are rendered once per (origin, format, page): each name gets its own URLs, also
    when the other name's page is already cached."""
    client, _ = await make_client(seeded=True, trust_forwarded=True)
    a = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.example.test"}
    b = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "b.example.test:8080"}
    for _ in range(2):
        for headers, prefix in ((a, "https://a.example.test/"), (b, "http://b.example.test:8080/"),
                                ({}, own_origin(client) + "/")):
            urls = await file_urls(client, headers)
            assert urls and all(url.startswith(prefix) for url in urls), (headers, urls)
    # and the ETags differ, so a client revalidating under one name never gets the other's body
    etags = set()
    for headers in (a, b):
        response = await client.get(PAGE, headers={"Accept": JSON, **headers})
        etags.add(response.headers["ETag"])
    assert len(etags) == 2


async def test_base_url_wins_over_forwarded_headers(make_client: MakeClient) -> None:
    client, _ = await make_client(
        seeded=True, trust_forwarded=True, base_url="https://fixed.example.test/"
    )
    urls = await file_urls(client, PROXY)
    assert all(url.startswith("https://fixed.example.test/files/") for url in urls)


async def test_trusted_peers_by_address(make_client: MakeClient) -> None:
    trusted, _ = await make_client(seeded=True, trust_forwarded=("127.0.0.0/8",))
    assert all(u.startswith("https://pkgs.example.test/") for u in await file_urls(trusted, PROXY))
    elsewhere, _ = await make_client(seeded=True, trust_forwarded=("10.0.0.0/8", "::1/128"))
    assert all(u.startswith(own_origin(elsewhere)) for u in await file_urls(elsewhere, PROXY))


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Proto": "javascript"},
        {"X-Forwarded-Proto": "ftp"},
        {"X-Forwarded-Host": '"><script>alert(1)</script>'},
        {"X-Forwarded-Host": "evil.example/path"},
        {"X-Forwarded-Host": "user@evil.example"},
        {"X-Forwarded-Host": "evil.example:99999"},
        {"X-Forwarded-Host": ""},
        {"X-Forwarded-Host": "[not-ipv6]"},
    ],
)
async def test_garbage_forwarded_values_are_refused(
    make_client: MakeClient, headers: dict[str, str]
) -> None:
    client, _ = await make_client(seeded=True, trust_forwarded=True)
    for path in (PAGE, "/", "/pypi/foo-bar/json", "/project/foo-bar/"):
        response = await client.get(path, headers=headers)
        assert response.status == 400, path
        assert response.content_type == "text/plain"
        assert "X-Forwarded-" in await response.text()


async def test_garbage_host_header_is_refused(make_client: MakeClient) -> None:
    client, _ = await make_client(seeded=True)
    response = await client.get(PAGE, headers={"Host": '"><img src=x>'})
    assert response.status == 400
    assert response.content_type == "text/plain"
    # the same garbage in a forwarded header is simply ignored when not trusted
    assert (await client.get(PAGE, headers={"X-Forwarded-Host": "<b>"})).status == 200


async def test_landing_page_and_json_api_use_the_forwarded_origin(make_client: MakeClient) -> None:
    client, _ = await make_client(seeded=True, trust_forwarded=True)
    landing = await (await client.get("/", headers=PROXY)).text()
    assert "https://pkgs.example.test/simple/" in landing
    assert f"127.0.0.1:{client.port}" not in landing
    document = await (await client.get("/pypi/foo-bar/json", headers=PROXY)).json()
    urls = [f["url"] for f in document["urls"]]
    assert urls and all(u.startswith("https://pkgs.example.test/files/foo-bar/") for u in urls)
    # the JSON API caches per origin too
    document = await (await client.get("/pypi/foo-bar/json")).json()
    assert all(f["url"].startswith(own_origin(client)) for f in document["urls"])


async def absolute_form(
    client: TestClient, target: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """GET with an absolute-form request target ("GET http://host:port/path HTTP/1.1", as a
    client talking to a forward proxy sends it), Host naming the server: (status, body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = {"Host": f"127.0.0.1:{client.port}", "Accept": JSON, **(headers or {}),
             "Connection": "close"}
    head = "".join(f"{name}: {value}\r\n" for name, value in lines.items())
    writer.write(f"GET {target} HTTP/1.1\r\n{head}\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_an_absolute_form_target_names_the_origin_port_and_all(
    make_client: MakeClient,
) -> None:
    """RFC 9112 3.2.2: the target's authority replaces Host, its port kept."""
    client, _ = await make_client(seeded=True)
    status, body = await absolute_form(client, f"http://mirror.example.test:8080{PAGE}")
    assert status == 200, body
    urls = [f["url"] for f in json.loads(body)["files"]]
    assert f"http://mirror.example.test:8080/files/foo-bar/{WHEEL}" in urls
    assert all(url.startswith("http://mirror.example.test:8080/files/") for url in urls)
    status, body = await absolute_form(client, f"http://127.0.0.1:{client.port}{PAGE}?x=1")
    assert status == 200, body
    assert all(f["url"].startswith(own_origin(client) + "/files/")
               for f in json.loads(body)["files"])
    # a trusted proxy's X-Forwarded-Host still wins over both
    trusted, _ = await make_client(seeded=True, trust_forwarded=True)
    status, body = await absolute_form(trusted, f"http://mirror.example.test:8080{PAGE}", PROXY)
    assert status == 200, body
    assert all(f["url"].startswith("https://pkgs.example.test/files/")
               for f in json.loads(body)["files"])


@pytest.mark.parametrize(
    "authority", ["user:secret@evil.example", "evil.example:99999", "evil.example:0", ""]
)
async def test_a_garbage_absolute_form_authority_is_refused(
    make_client: MakeClient, authority: str
) -> None:
    """The target's authority is checked as Host is (or refused by aiohttp's parser first):
    400, never written into a page, whatever the (valid) Host header says."""
    client, _ = await make_client(seeded=True)
    for path in (PAGE, "/", "/pypi/foo-bar/json", "/project/foo-bar/"):
        status, body = await absolute_form(client, f"http://{authority}{path}")
        assert status == 400, (path, body)
        assert b"/files/" not in body and b"<a " not in body
    status, body = await absolute_form(client, f"http://user:secret@evil.example{PAGE}")
    assert b"is not a host[:port]" in body
