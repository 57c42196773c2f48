"""PEP 740 provenance through pyproxy (pyproxy/web/integrity.py): upstream `provenance` links
rewritten to pyproxy's own URL, the object fetched once and served from the cache with the
Integrity API's media type; and what is never passed through (PEP 708, unknown keys).

The whole app runs in process (tests/conftest.py's `make_client`) over a FakeUpstream.
"""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestClient
from pypi_attestations import Attestation

from pyproxy.model import normalize
from pyproxy.upstream_settings import UpstreamSettings
from tests.attestations import attest, provenance_of
from tests.conftest import StartFake, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
INTEGRITY = "application/vnd.pypi.integrity.v1+json"
WHEEL = "attested-1.0-py3-none-any.whl"
BODY = b"attested wheel"
PROVENANCE = provenance_of(attest(WHEEL, hashlib.sha256(BODY).hexdigest()))
PROVENANCE_PATH = f"/integrity/attested/1.0/{WHEEL}/provenance"


class Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


async def entry(client: TestClient, name: str = "attested") -> dict[str, Any]:
    response = await client.get(f"/simple/{name}/", headers={"Accept": JSON})
    assert response.status == 200, await response.text()
    (file,) = orjson.loads(await response.read())["files"]
    return file  # type: ignore[no-any-return]


@pytest.fixture
async def fake(fake_upstream: StartFake) -> FakeUpstream:
    upstream = await fake_upstream()
    upstream.add_file("attested", WHEEL, BODY, provenance=PROVENANCE)
    upstream.add_file("plain", "plain-1.0.tar.gz", b"no attestations")
    return upstream


@pytest.mark.parametrize("formats", ["json", "html"])
async def test_upstream_provenance_is_served_from_pyproxy(
    make_client: Any, fake_upstream: StartFake, formats: str
) -> None:
    upstream = await fake_upstream(formats=formats)
    upstream.add_file("attested", WHEEL, BODY, provenance=PROVENANCE)
    client, _services = await make_client(upstream_url=upstream.index_url)
    origin = str(client.make_url("")).rstrip("/")
    file = await entry(client)
    assert file["provenance"] == origin + PROVENANCE_PATH
    html = Anchors()
    html.feed(await (await client.get("/simple/attested/", headers={"Accept": "text/html"})).text())
    assert html.anchors[0]["data-provenance"] == origin + PROVENANCE_PATH

    upstream_path = upstream.file_path("attested", WHEEL) + ".provenance"
    for _ in range(2):
        response = await client.get(PROVENANCE_PATH, headers={"Accept": INTEGRITY})
        assert response.status == 200, await response.text()
        assert response.content_type == INTEGRITY
        assert await response.read() == PROVENANCE
    assert upstream.count(upstream_path) == 1  # fetched once, then from the cache
    assert upstream.accepts[upstream_path] == INTEGRITY  # as the Integrity API asks
    (bundle,) = orjson.loads(PROVENANCE)["attestation_bundles"]
    Attestation.model_validate(bundle["attestations"][0])


async def test_no_provenance_key_for_a_file_without_one(
    make_client: Any, fake: FakeUpstream
) -> None:
    client, _services = await make_client(upstream_url=fake.index_url)
    assert "provenance" not in await entry(client, "plain")
    response = await client.get("/integrity/plain/1.0/plain-1.0.tar.gz/provenance")
    assert response.status == 404


@pytest.mark.parametrize(
    "path",
    [
        f"/integrity/attested/2.0/{WHEEL}/provenance",  # another version
        "/integrity/attested/1.0/attested-1.0.tar.gz/provenance",  # a file it does not list
        f"/integrity/nothing/1.0/{WHEEL}/provenance",
    ],
)
async def test_unknown_provenance_is_404_and_asks_nothing_of_the_file_host(
    make_client: Any, fake: FakeUpstream, path: str
) -> None:
    client, _services = await make_client(upstream_url=fake.index_url)
    assert (await client.get(path)).status == 404
    assert fake.count(fake.file_path("attested", WHEEL) + ".provenance") == 0


async def test_a_body_that_is_no_provenance_object_is_503_and_not_kept(
    make_client: Any, fake: FakeUpstream
) -> None:
    fake.add_file("attested", WHEEL, BODY, provenance=b"<html>sign in</html>")
    client, _services = await make_client(upstream_url=fake.index_url)
    assert (await client.get(PROVENANCE_PATH)).status == 503
    fake.add_file("attested", WHEEL, BODY, provenance=PROVENANCE)
    response = await client.get(PROVENANCE_PATH)
    assert response.status == 200 and await response.read() == PROVENANCE


async def test_offline_lists_provenance_only_once_cached(
    make_client: Any, fake: FakeUpstream, tmp_path: Any
) -> None:
    data_dir = tmp_path / "shared"
    online, _ = await make_client(upstream_url=fake.index_url, data_dir=data_dir)
    assert (await online.get(f"/files/attested/{WHEEL}")).status == 200
    await make_client.close(online)
    offline, _ = await make_client(upstream_url=fake.index_url, data_dir=data_dir, offline=True)
    assert "provenance" not in await entry(offline)  # the wheel is cached, its provenance not
    assert (await offline.get(PROVENANCE_PATH)).status == 404
    await make_client.close(offline)

    online, _ = await make_client(upstream_url=fake.index_url, data_dir=data_dir)
    assert (await online.get(PROVENANCE_PATH)).status == 200
    await make_client.close(online)
    offline, _ = await make_client(upstream_url=fake.index_url, data_dir=data_dir, offline=True)
    assert "provenance" in await entry(offline)
    response = await offline.get(PROVENANCE_PATH)
    assert response.status == 200 and await response.read() == PROVENANCE


async def test_a_routed_page_keeps_no_provenance_from_another_host(
    make_client: Any, fake: FakeUpstream
) -> None:
    route = UpstreamSettings(name="gpu", url=fake.index_url, projects=("attested",))
    fake.files_host = "localhost"  # the wheel and its provenance: a host files_from must name
    client, _services = await make_client(upstream_url="", upstreams=(route,))
    assert (await client.get("/simple/attested/", headers={"Accept": JSON})).status == 200
    assert (await client.get(PROVENANCE_PATH)).status == 404
    await make_client.close(client)
    allowed = UpstreamSettings(
        name="gpu", url=fake.index_url, projects=("attested",), files_from=("localhost",)
    )
    client, _services = await make_client(upstream_url="", upstreams=(allowed,))
    assert "provenance" in await entry(client)
    assert (await client.get(PROVENANCE_PATH)).status == 200


async def test_pep_708_and_newer_upstream_keys_are_not_passed_through(
    make_client: Any, scripted_page: Any
) -> None:
    client = await scripted_page({
        "meta": {"api-version": "1.5", "tracks": ["http://127.0.0.1:9/simple/attested/"]},
        "name": "attested",
        "alternate-locations": ["http://127.0.0.1:9/simple/attested/"],
        "versions": ["1.0"],
        "files": [{
            "filename": WHEEL, "url": f"/files/{WHEEL}", "hashes": {"sha256": "ab" * 32},
            "provenance": f"/files/{WHEEL}.provenance", "size": 3, "future-key": True,
        }],
        "future-project-key": {"x": 1},
    })
    response = await client.get("/simple/attested/", headers={"Accept": JSON})
    document = orjson.loads(await response.read())
    assert document["meta"] == {"api-version": "1.4"}
    assert set(document) == {"meta", "name", "versions", "files", "project-status"}
    (file,) = document["files"]
    # core-metadata: pyproxy's own offer, made from the wheel (repository/wheel_metadata.py)
    assert set(file) == {"filename", "url", "hashes", "size", "provenance", "core-metadata"}
    assert file["provenance"].endswith(PROVENANCE_PATH)


@pytest.fixture
async def scripted_page(make_client: Any, aiohttp_server: Any) -> Any:
    """A pyproxy over an upstream that answers the given JSON for /simple/attested/."""

    async def make(document: dict[str, Any]) -> TestClient:
        async def page(request: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(document), content_type=JSON)

        app = web.Application()
        app.router.add_get("/simple/attested/", page)
        server = await aiohttp_server(app, host="127.0.0.1")
        client, _services = await make_client(upstream_url=str(server.make_url("/simple/")))
        return client

    return make


# ---- private files: the attestations uploaded with them


async def test_an_attested_upload_is_served_back_as_its_provenance(
    make_client: Any, tmp_path: Any
) -> None:
    client, services = await make_client()
    wheel = make_wheel(tmp_path, "attested", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    attestation = attest(wheel.name, sha256)
    attestations = json.dumps([json.loads(attestation.model_dump_json())])
    assert (await upload(client, wheel, attestations=attestations)).status == 200
    path = f"/integrity/attested/1.0/{wheel.name}/provenance"
    assert (await entry(client))["provenance"].endswith(path)
    response = await client.get(path, headers={"Accept": INTEGRITY})
    assert response.status == 200 and response.content_type == INTEGRITY
    etag = response.headers["ETag"]
    (bundle,) = orjson.loads(await response.read())["attestation_bundles"]
    assert [Attestation.model_validate(a) for a in bundle["attestations"]] == [attestation]
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    # read restrictions hold here as on every route of the project
    services.private.restrict(normalize("attested"))
    services.users.add_user("mallory", "mallory-pw")
    mallory = {"Authorization": encode_basic_auth("mallory", "mallory-pw")}
    assert (await client.get(path, headers=mallory)).status == 403


async def test_a_bad_attestations_field_is_a_400_and_stores_nothing(
    make_client: Any, tmp_path: Any
) -> None:
    client, services = await make_client()
    wheel = make_wheel(tmp_path, "attested", "1.0")
    response = await upload(client, wheel, attestations='[{"version": 1}]')
    assert response.status == 400
    assert "Invalid attestations supplied during upload" in await response.text()
    assert not services.private.has_project(normalize("attested"))
