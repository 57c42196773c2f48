"""The origin of the absolute URLs pyproxy writes (pyproxy/web/context.py `origin`): base_url,
else X-Forwarded-Proto/-Host from a trusted peer, else the request's own scheme and Host.

The private-only app runs on 127.0.0.1 over real HTTP, on a copy of the session's seeded data.
"""

from __future__ import annotations

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
