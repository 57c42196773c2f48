"""Offline mode: pyproxy never contacts upstream, and its pages list only what it can deliver
(private files, and upstream files whose bodies are cached), so an installer never picks a
version it cannot download. The same data directory serves online again with nothing rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.web.context import Services
from tests.conftest import MakeClient, StartFake, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
Open = Callable[..., Awaitable[tuple[TestClient, Services]]]


@pytest.fixture
async def fake(fake_upstream: StartFake) -> FakeUpstream:
    upstream = await fake_upstream(formats="both")
    upstream.add_file("foo", "foo-1.0-py3-none-any.whl", b"one", metadata=b"Name: foo\nVersion: 1.0\n")
    upstream.add_file("foo", "foo-1.0.tar.gz", b"one sdist")
    upstream.add_file("foo", "foo-2.0-py3-none-any.whl", b"two", metadata=b"Name: foo\nVersion: 2.0\n")
    upstream.add_file("bar", "bar-1.0-py3-none-any.whl", b"bar one")
    return upstream


@pytest.fixture
def open_proxy(tmp_path: Path, fake: FakeUpstream, make_client: MakeClient) -> Open:
    """`await open_proxy(offline=...)`: an app on one shared data dir; the previous one is closed
    first, as a restart would."""
    opened: list[TestClient] = []

    async def open_(**overrides: Any) -> tuple[TestClient, Services]:
        if opened:
            await make_client.close(opened.pop())
        options: dict[str, Any] = {"upstream_url": fake.index_url, "upstream_timeout": 1.0}
        client, services = await make_client(data_dir=tmp_path / "data", **{**options, **overrides})
        opened.append(client)
        return client, services

    return open_


async def _json(client: TestClient, path: str) -> dict[str, Any]:
    response = await client.get(path, headers={"Accept": JSON})
    assert response.status == 200, await response.text()
    return orjson.loads(await response.read())


def _filenames(page: dict[str, Any]) -> list[str]:
    return sorted(f["filename"] for f in page["files"])


async def _warm(client: TestClient, *paths: str) -> None:
    for path in paths:
        response = await client.get(path)
        assert response.status == 200, (path, await response.text())
        await response.read()


async def test_offline_page_lists_exactly_the_cached_files(
    open_proxy: Open, fake: FakeUpstream
) -> None:
    client, _ = await open_proxy()
    await _json(client, "/simple/foo/")
    await _warm(client, "/files/foo/foo-1.0-py3-none-any.whl")
    fake.add_file("foo", "foo-3.0-py3-none-any.whl", b"three")  # never seen by pyproxy
    fake.reset_counters()

    client, _ = await open_proxy(offline=True)
    page = await _json(client, "/simple/foo/")
    assert _filenames(page) == ["foo-1.0-py3-none-any.whl"]
    assert page["versions"] == ["1.0"]
    # the .metadata was never fetched, so it is not offered
    assert page["files"][0].get("core-metadata", False) is False
    html = await (await client.get("/simple/foo/", headers={"Accept": "text/html"})).text()
    assert "foo-1.0-py3-none-any.whl" in html and "foo-2.0" not in html and "foo-3.0" not in html
    response = await client.get("/files/foo/foo-1.0-py3-none-any.whl")
    assert response.status == 200 and await response.read() == b"one"
    assert fake.total == 0, fake.requests


async def test_offline_offers_metadata_only_when_cached(open_proxy: Open, fake: FakeUpstream) -> None:
    client, _ = await open_proxy()
    await _json(client, "/simple/foo/")
    await _warm(
        client,
        "/files/foo/foo-1.0-py3-none-any.whl",
        "/files/foo/foo-1.0-py3-none-any.whl.metadata",
        "/files/foo/foo-2.0-py3-none-any.whl",
    )
    client, _ = await open_proxy(offline=True)
    page = await _json(client, "/simple/foo/")
    offered = {f["filename"]: bool(f.get("core-metadata")) for f in page["files"]}
    assert offered == {"foo-1.0-py3-none-any.whl": True, "foo-2.0-py3-none-any.whl": False}
    ok = await client.get("/files/foo/foo-1.0-py3-none-any.whl.metadata")
    assert ok.status == 200 and await ok.read() == b"Name: foo\nVersion: 1.0\n"
    fake.reset_counters()
    missing = await client.get("/files/foo/foo-2.0-py3-none-any.whl.metadata")
    assert missing.status == 404
    assert fake.total == 0, fake.requests


async def test_offline_uncached_file_and_unknown_project_are_404_without_contacting_upstream(
    open_proxy: Open, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = await open_proxy()
    await _json(client, "/simple/foo/")
    fake.reset_counters()
    client, _ = await open_proxy(offline=True)

    assert (await client.get("/files/foo/foo-2.0-py3-none-any.whl")).status == 404
    with caplog.at_level("INFO", logger="pyproxy.upstream"):
        response = await client.get("/simple/bar/")
    assert response.status == 404
    assert "offline" in await response.text()
    assert any("never fetched" in r.getMessage() for r in caplog.records)
    assert fake.total == 0, fake.requests


async def test_offline_project_list_names_private_and_cached_projects(
    open_proxy: Open, fake: FakeUpstream, tmp_path: Path
) -> None:
    client, _ = await open_proxy()
    await _json(client, "/simple/foo/")
    await _json(client, "/simple/")  # the upstream index is cached too, but names more projects
    wheel = make_wheel(tmp_path / "dists", "mine", "1.0")
    assert (await upload(client, wheel)).status == 200
    fake.reset_counters()

    client, _ = await open_proxy(offline=True)
    names = sorted(p["name"] for p in (await _json(client, "/simple/"))["projects"])
    assert names == ["foo", "mine"]
    private = await _json(client, "/simple/mine/")
    assert _filenames(private) == [wheel.name]
    assert fake.total == 0, fake.requests


async def test_offline_works_with_upstream_gone_and_back_online_needs_no_rebuild(
    open_proxy: Open, fake: FakeUpstream
) -> None:
    client, _ = await open_proxy()
    await _json(client, "/simple/foo/")
    await _warm(client, "/files/foo/foo-2.0-py3-none-any.whl")
    await fake.stop()

    client, _ = await open_proxy(offline=True)
    assert _filenames(await _json(client, "/simple/foo/")) == ["foo-2.0-py3-none-any.whl"]

    await fake.start()
    client, _ = await open_proxy(offline=False)
    assert _filenames(await _json(client, "/simple/foo/")) == [
        "foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz", "foo-2.0-py3-none-any.whl",
    ]


async def test_offline_page_drops_a_file_removed_from_the_cache(
    open_proxy: Open, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pyproxy.repository.offline._OFFLINE_RECHECK_S", 0.0)
    client, _ = await open_proxy()
    await _json(client, "/simple/foo/")
    await _warm(client, "/files/foo/foo-1.0-py3-none-any.whl", "/files/foo/foo-2.0-py3-none-any.whl")
    client, services = await open_proxy(offline=True)
    first = await client.get("/simple/foo/", headers={"Accept": JSON})
    assert len((orjson.loads(await first.read()))["files"]) == 2

    assert services.health.blobs is not None
    wheel_key = fake.file("foo", "foo-1.0-py3-none-any.whl").sha256
    (victim,) = [e for e in services.health.blobs.entries() if e.key == wheel_key]
    assert services.health.blobs.delete(victim.key)

    second = await client.get(
        "/simple/foo/", headers={"Accept": JSON, "If-None-Match": first.headers["ETag"]}
    )
    assert second.status == 200, "the page changed, so its ETag must change"
    assert _filenames(orjson.loads(await second.read())) == ["foo-2.0-py3-none-any.whl"]
    assert (await client.get("/files/foo/foo-1.0-py3-none-any.whl")).status == 404


# ---- the `.metadata` pyproxy makes for the wheels of an index that offers none


@pytest.fixture
async def html_only(fake_upstream: StartFake, tmp_path: Path) -> FakeUpstream:
    """An HTML index without `.metadata` or ranges, with two real wheels and a damaged one."""
    upstream = await fake_upstream(formats="html")
    upstream.offer_metadata = False
    for version in ("1.0", "2.0"):
        wheel = make_wheel(tmp_path / "dists", "made", version, requires_dist=["attrs"])
        upstream.add_file("made", wheel.name, wheel.read_bytes())
    upstream.add_file("made", "made-3.0-py3-none-any.whl", b"not a zip at all")
    return upstream


def _member_metadata(body: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(body)) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return wheel.read(name)


async def _offline_on(make_client: MakeClient, tmp_path: Path, url: str, **more: Any) -> TestClient:
    client, _ = await make_client(
        data_dir=tmp_path / "data", upstream_url=url, upstream_timeout=1.0, **more
    )
    return client


async def test_offline_offers_and_serves_the_metadata_made_from_a_wheel_online(
    html_only: FakeUpstream, make_client: MakeClient, tmp_path: Path
) -> None:
    wheel = "made-1.0-py3-none-any.whl"
    client = await _offline_on(make_client, tmp_path, html_only.index_url)
    await _json(client, "/simple/made/")
    online = await client.get(f"/files/made/{wheel}.metadata")  # made from the wheel, cached
    assert online.status == 200
    made = await online.read()
    assert made == _member_metadata(html_only.file("made", wheel).body)
    await make_client.close(client)
    html_only.reset_counters()

    client = await _offline_on(make_client, tmp_path, html_only.index_url, offline=True)
    page = await _json(client, "/simple/made/")
    assert _filenames(page) == [wheel]  # the one whose body is cached (the wheel, read whole)
    assert page["files"][0]["core-metadata"] == {"sha256": hashlib.sha256(made).hexdigest()}
    # PEP 700: the HTML-only upstream gave no size; the cached body tells it
    assert page["files"][0]["size"] == len(html_only.file("made", wheel).body)
    html = await (await client.get("/simple/made/", headers={"Accept": "text/html"})).text()
    assert f'data-core-metadata="sha256={hashlib.sha256(made).hexdigest()}"' in html
    served = await client.get(f"/files/made/{wheel}.metadata")
    assert served.status == 200 and await served.read() == made
    assert html_only.total == 0, html_only.requests


async def test_offline_makes_the_metadata_of_a_cached_wheel_without_asking_upstream(
    html_only: FakeUpstream, make_client: MakeClient, tmp_path: Path
) -> None:
    """A wheel downloaded online whose `.metadata` was never asked for (pip without
    `.metadata` support, a prefetch): offered offline, made from the cached wheel, cached."""
    client = await _offline_on(make_client, tmp_path, html_only.index_url)
    await _json(client, "/simple/made/")
    await _warm(client, "/files/made/made-2.0-py3-none-any.whl", "/files/made/made-3.0-py3-none-any.whl")
    await make_client.close(client)
    html_only.reset_counters()

    client = await _offline_on(make_client, tmp_path, html_only.index_url, offline=True)
    page = await _json(client, "/simple/made/")
    offered = {f["filename"]: f.get("core-metadata") for f in page["files"]}
    assert offered == {"made-2.0-py3-none-any.whl": True, "made-3.0-py3-none-any.whl": True}
    served = await client.get("/files/made/made-2.0-py3-none-any.whl.metadata")
    made = await served.read()
    assert served.status == 200
    assert made == _member_metadata(html_only.file("made", "made-2.0-py3-none-any.whl").body)
    # no usable METADATA: the empty body online pyproxy gives too (uv skips the version)
    damaged = await client.get("/files/made/made-3.0-py3-none-any.whl.metadata")
    assert damaged.status == 200 and await damaged.read() == b""
    after = await _json(client, "/simple/made/")
    offered = {f["filename"]: f.get("core-metadata") for f in after["files"]}
    assert offered["made-2.0-py3-none-any.whl"] == {"sha256": hashlib.sha256(made).hexdigest()}
    assert html_only.total == 0, html_only.requests
