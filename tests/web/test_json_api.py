"""The legacy JSON API over real HTTP: /pypi/<project>/json and /pypi/<project>/<version>/json,
for private projects (the session-wide `seed`, plus uploads) and upstream ones (a FakeUpstream
in the same loop)."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from pyproxy.model import normalize
from pyproxy.settings import Settings
from pyproxy.web.context import Services
from tests.conftest import Seed, seeded_settings, upload
from tests.dists import core_metadata, make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.formats.test_legacy_json import EXTRA, check_shape

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
FOO_VERSIONS = ["1.0", "2.0", "2.1+local"]  # the seed's foo-bar
MakeClient = Callable[..., Awaitable[tuple[TestClient, Services]]]


@pytest.fixture
def settings(seed: Seed, tmp_path: Path) -> Settings:
    return seeded_settings(seed, tmp_path)


async def get(client: TestClient, path: str, **headers: str) -> ClientResponse:
    return await client.get(path, headers=headers, allow_redirects=False)


async def get_json(client: TestClient, path: str) -> dict[str, Any]:
    response = await get(client, path)
    assert response.status == 200, (path, response.status, await response.text())
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    return orjson.loads(await response.read())


async def simple_files(client: TestClient, project: str) -> dict[str, dict[str, Any]]:
    response = await client.get(f"/simple/{project}/", headers={"Accept": SIMPLE_JSON})
    assert response.status == 200
    return {entry["filename"]: entry for entry in orjson.loads(await response.read())["files"]}


def assert_matches_simple_page(doc: dict[str, Any], simple: dict[str, dict[str, Any]]) -> None:
    """Every file the JSON API lists is on the simple page with the same URL and hashes."""
    listed = [entry for files in doc["releases"].values() for entry in files]
    assert sorted(e["filename"] for e in listed) == sorted(simple)
    for entry in listed:
        page_entry = simple[entry["filename"]]
        assert entry["url"] == page_entry["url"]
        assert entry["digests"]["sha256"] == page_entry["hashes"]["sha256"]
        assert entry["size"] == page_entry.get("size")
        assert entry["requires_python"] == page_entry.get("requires-python")


def own_path(client: TestClient, url: str) -> str:
    """The path of an absolute URL that must point at this pyproxy."""
    parts, root = urlsplit(url), urlsplit(str(client.make_url("/")))
    assert (parts.scheme, parts.netloc) == (root.scheme, root.netloc), url
    return parts.path


def assert_error(response: ClientResponse, status: int) -> None:
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------------------- private projects


async def test_private_project_document(client: TestClient, seed: Seed) -> None:
    response = await get(client, "/pypi/foo-bar/json")
    doc = orjson.loads(await response.read())
    check_shape(doc, all_releases=True)
    assert list(doc["releases"]) == FOO_VERSIONS
    assert doc["info"]["version"] == "2.1+local"
    assert doc["info"]["name"] == "Foo-Bar"  # as uploaded
    assert [e["filename"] for e in doc["urls"]] == ["foo_bar-2.1+local-py3-none-any.whl"]
    assert doc["last_serial"] == 4  # one change per uploaded file
    assert response.headers["X-PyPI-Last-Serial"] == "4"
    assert_matches_simple_page(doc, await simple_files(client, "foo-bar"))
    for entry in (e for files in doc["releases"].values() for e in files):
        body = seed.path(entry["filename"]).read_bytes()
        assert entry["digests"] == {
            "sha256": hashlib.sha256(body).hexdigest(),
            "md5": hashlib.md5(body).hexdigest(),
            "blake2b_256": hashlib.blake2b(body, digest_size=32).hexdigest(),
        }
        assert entry["size"] == len(body)
        assert entry["upload_time_iso_8601"].endswith("Z")
        # the URL is pyproxy's own file route, and it serves those bytes
        download = await client.get(own_path(client, entry["url"]))
        assert download.status == 200 and await download.read() == body
    sdist = next(e for e in doc["releases"]["1.0"] if e["packagetype"] == "sdist")
    assert sdist["python_version"] == "source" and sdist["requires_python"] == ">=3.8,<4"


async def test_private_version_document(client: TestClient) -> None:
    doc = await get_json(client, "/pypi/foo-bar/1.0/json")
    check_shape(doc, all_releases=False)
    info = doc["info"]
    assert info["version"] == "1.0" and info["requires_python"] == ">=3.8,<4"
    assert info["requires_dist"] == ["packaging>=20"]
    assert sorted(e["filename"] for e in doc["urls"]) == ["foo_bar-1.0-py3-none-any.whl", "foo_bar-1.0.tar.gz"]
    assert info["release_url"].endswith("/project/foo-bar/1.0/")
    # an equal spelling of the version finds it too; the trailing slash is served as well
    assert (await get_json(client, "/pypi/foo-bar/1.0.0/json"))["urls"] == doc["urls"]
    assert (await get_json(client, "/pypi/foo-bar/1.0/json/"))["urls"] == doc["urls"]
    assert "releases" in await get_json(client, "/pypi/foo-bar/json/")


async def test_project_and_release_urls_are_pages_that_exist(
    client: TestClient, fake: FakeUpstream, make_client: MakeClient
) -> None:
    """`info.project_url`, `package_url` and `release_url` lead to pyproxy's own web pages,
    for every release (a local version too) of a private project and of an upstream one."""
    fake.add_file("up.proj", "up.proj-3.0.tar.gz", b"sdist")
    upstream, _ = await make_client(upstream_url=fake.index_url)
    for app, project, versions in (
        (client, "foo-bar", FOO_VERSIONS), (upstream, "up-proj", ["3.0"])
    ):
        for version in versions:
            info = (await get_json(app, f"/pypi/{project}/{version}/json"))["info"]
            assert info["package_url"] == info["project_url"]
            pages = {}
            for url in (info["project_url"], info["release_url"]):
                response = await get(app, own_path(app, url))  # no redirect either
                assert response.status == 200, (url, response.status)
                assert response.headers["Content-Type"].startswith("text/html")
                pages[url] = await response.text()
            assert "pip install --index-url" in pages[info["project_url"]]
            assert f"{project}=={version}</code>" in pages[info["release_url"]]  # that release's


async def test_private_info_from_the_upload_form(client: TestClient, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "Rich.Pkg", "3.0", requires_dist=["bar>=1"], requires_python=">=3.9",
                       extra_metadata=EXTRA)
    assert (await upload(client, wheel)).status == 200
    info = (await get_json(client, "/pypi/rich-pkg/json"))["info"]
    assert info["name"] == "Rich.Pkg"
    assert info["summary"] == "A test package"
    assert info["author"] == "Ann Author" and info["author_email"] == "ann@example.org"
    assert info["license"] == "MIT" and info["keywords"] == "alpha, beta"
    assert info["classifiers"] == ["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"]
    assert info["requires_dist"] == ["bar>=1"] and info["provides_extra"] == ["fast"]
    assert info["requires_python"] == ">=3.9"
    assert info["project_urls"] == {"Source": "https://example.org/src", "Docs": "https://example.org/docs"}
    assert info["description_content_type"] == "text/markdown"
    assert info["description"].strip() == "# Foo\n\nLong *description*."


async def test_yank_shows_and_moves_the_latest_version(client: TestClient, services: Services) -> None:
    first = await get_json(client, "/pypi/foo-bar/json")
    services.private.yank(normalize("foo-bar"), "2.1+local", "broken build")
    doc = await get_json(client, "/pypi/foo-bar/json")
    assert doc["info"]["version"] == "2.0"
    assert doc["last_serial"] == first["last_serial"] + 1
    yanked = doc["releases"]["2.1+local"][0]
    assert yanked["yanked"] is True and yanked["yanked_reason"] == "broken build"
    info = (await get_json(client, "/pypi/foo-bar/2.1+local/json"))["info"]
    assert info["yanked"] is True and info["yanked_reason"] == "broken build"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/Foo_Bar/json", "/pypi/foo-bar/json"),
        ("/pypi/FOO.bar/json/", "/pypi/foo-bar/json/"),
        ("/pypi/Foo-Bar/1.0/json", "/pypi/foo-bar/1.0/json"),
        ("/pypi/foo__bar/2.1+local/json?x=1+2", "/pypi/foo-bar/2.1+local/json?x=1+2"),
    ],
)
async def test_non_normalised_names_redirect(client: TestClient, path: str, location: str) -> None:
    response = await get(client, path)
    assert response.status == 301
    assert response.headers["Location"] == location
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert (await client.get(path)).status == 200  # and the redirect leads somewhere


@pytest.mark.parametrize(
    "path",
    ["/pypi/nothing-here/json", "/pypi/foo-bar/9.9/json", "/pypi/foo-bar/not-a-version/json",
     "/pypi/-bad-/json", "/pypi/foo-bar/json/json", "/pypi/a%2Fb/json"],
)
async def test_unknown_is_404_json(client: TestClient, path: str) -> None:
    response = await get(client, path)
    assert_error(response, 404)
    assert await response.json() == {"message": "Not Found"}


@pytest.mark.parametrize(
    "path",
    ["/foo-bar/json", "/Foo_Bar/json", "/simple/pypi/foo-bar/json", "/simple/pypi/FOO.bar/json"],
)
async def test_the_project_document_where_pip_tools_asks(client: TestClient, path: str) -> None:
    """pip-tools, given the index URL http://HOST/simple/, asks at /<name>/json (7.6) or
    /simple/pypi/<name>/json (before 7.6), in the spelling of the requirement: the same
    document as /pypi/foo-bar/json, without a redirect (one request per pinned project)."""
    expected = await get_json(client, "/pypi/foo-bar/json")
    assert await get_json(client, path) == expected
    assert all(entry["digests"]["sha256"] for entry in expected["releases"]["1.0"])


@pytest.mark.parametrize("path", ["/nothing-here/json", "/simple/pypi/nothing-here/json",
                                  "/-bad-/json"])
async def test_the_pip_tools_paths_of_unknown_projects_are_404_json(
    client: TestClient, path: str
) -> None:
    response = await get(client, path)
    assert_error(response, 404)  # pip-tools then hashes the files itself


async def test_the_pip_tools_paths_leave_the_other_routes_alone(client: TestClient) -> None:
    assert (await get(client, "/simple/foo-bar/", Accept=SIMPLE_JSON)).status == 200
    # /simple/json is the Simple page of a project "json" (a 301 to /simple/json/)
    simple_json = await get(client, "/simple/json", Accept=SIMPLE_JSON)
    assert (simple_json.status, simple_json.headers["Location"]) == (301, "/simple/json/")
    web_page = await get(client, "/project/json")
    assert (web_page.status, web_page.headers["Location"]) == (301, "/project/json/")


async def test_etag_and_cache_control(client: TestClient) -> None:
    response = await get(client, "/pypi/foo-bar/json")
    etag = response.headers["ETag"]
    assert response.headers["Cache-Control"].endswith("must-revalidate")
    again = await get(client, "/pypi/foo-bar/json", **{"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    other = await get(client, "/pypi/foo-bar/1.0/json", **{"If-None-Match": etag})
    assert other.status == 200 and other.headers["ETag"] != etag
    head = await client.head("/pypi/foo-bar/json")
    assert head.status == 200 and head.headers["ETag"] == etag


async def test_cors_preflight_and_exposed_serial(client: TestClient) -> None:
    response = await get(client, "/pypi/foo-bar/json", Origin="https://example.org")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-PyPI-Last-Serial" in response.headers["Access-Control-Expose-Headers"]
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]
    preflight = await client.options(
        "/pypi/foo-bar/json",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------------------- upstream projects

UPLOADED = datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)


def add_upstream_project(fake: FakeUpstream) -> dict[str, Any]:
    meta = core_metadata("Up.Proj", "2.0", requires_dist=["bar>=1"], requires_python=">=3.9",
                         extra_metadata=EXTRA)
    return {
        "wheel": fake.add_file("Up.Proj", "up_proj-2.0-py3-none-any.whl", b"wheel 2.0",
                               requires_python=">=3.9", metadata=meta, upload_time=UPLOADED),
        "sdist": fake.add_file("up.proj", "up_proj-2.0.tar.gz", b"sdist 2.0", upload_time=UPLOADED),
        "old": fake.add_file("up.proj", "up_proj-1.0.tar.gz", b"sdist 1.0", upload_time=UPLOADED),
        "pre": fake.add_file("up.proj", "up_proj-3.0b1-py3-none-any.whl", b"beta", upload_time=UPLOADED),
        "yanked": fake.add_file("up.proj", "up_proj-2.5.tar.gz", b"bad", yanked="oops"),
    }


async def test_upstream_project_document(fake: FakeUpstream, make_client: MakeClient) -> None:
    files = add_upstream_project(fake)
    client, _ = await make_client(upstream_url=fake.index_url)
    doc = await get_json(client, "/pypi/up-proj/json")
    check_shape(doc, all_releases=True)
    assert list(doc["releases"]) == ["1.0", "2.0", "2.5", "3.0b1"]
    assert doc["last_serial"] == 0  # upstream pages carry no serial pyproxy keeps
    info = doc["info"]
    assert info["version"] == "2.0"  # not the prerelease, not the yanked one
    assert info["name"] == "Up.Proj" and info["author"] == "Ann Author"
    assert info["requires_dist"] == ["bar>=1"] and info["requires_python"] == ">=3.9"
    assert info["project_urls"] == {"Source": "https://example.org/src", "Docs": "https://example.org/docs"}
    assert info["description"].strip() == "# Foo\n\nLong *description*."
    assert_matches_simple_page(doc, await simple_files(client, "up-proj"))
    for entry in (e for release in doc["releases"].values() for e in release):
        assert entry["digests"] == {"sha256": fake.file("up.proj", entry["filename"]).sha256}
    wheel = next(e for e in doc["urls"] if e["packagetype"] == "bdist_wheel")
    assert wheel["upload_time_iso_8601"] == "2024-01-02T03:04:05.678900Z"
    assert wheel["upload_time"] == "2024-01-02T03:04:05"
    assert doc["releases"]["2.5"][0]["yanked_reason"] == "oops"
    # the file URL serves the upstream bytes through pyproxy
    download = await client.get(own_path(client, wheel["url"]))
    assert download.status == 200 and await download.read() == b"wheel 2.0"
    # a version without metadata: name, version and requires-python only
    info = (await get_json(client, "/pypi/up-proj/1.0/json"))["info"]
    assert info["version"] == "1.0" and info["name"] == "up-proj"
    assert info["summary"] is None and info["requires_dist"] is None and info["classifiers"] == []
    assert files["wheel"].metadata_sha256  # fetched through pyproxy's metadata route, once
    assert fake.count(fake.file_path("up.proj", files["wheel"].filename) + ".metadata") == 1
    await get_json(client, "/pypi/up-proj/2.0/json")
    assert fake.count(fake.file_path("up.proj", files["wheel"].filename) + ".metadata") == 1


@pytest.mark.parametrize("ranges", [True, False])
async def test_upstream_info_from_a_wheel_upstream_offers_no_metadata_for(
    fake: FakeUpstream, make_client: MakeClient, tmp_path: Path, ranges: bool
) -> None:
    fake.offer_metadata, fake.serve_ranges = False, ranges
    wheel = make_wheel(tmp_path, "Made.Here", "2.0", requires_dist=["bar>=1"], requires_python=">=3.9",
                       summary="Made from the wheel", extra_metadata=EXTRA)
    fake.add_file("made.here", wheel.name, wheel.read_bytes(), upload_time=UPLOADED)
    fake.add_file("made.here", "made_here-2.0.tar.gz", b"sdist 2.0", upload_time=UPLOADED)
    fake.add_file("made.here", "made_here-1.0.tar.gz", b"sdist 1.0", upload_time=UPLOADED)
    client, _ = await make_client(upstream_url=fake.index_url)
    info = (await get_json(client, "/pypi/made-here/json"))["info"]
    assert info["version"] == "2.0" and info["name"] == "Made.Here"
    assert info["summary"] == "Made from the wheel" and info["author"] == "Ann Author"
    assert info["requires_dist"] == ["bar>=1"] and info["requires_python"] == ">=3.9"
    assert info["project_urls"] == {"Source": "https://example.org/src", "Docs": "https://example.org/docs"}
    # an sdist-only release: as before, no metadata (sdists never get a made .metadata)
    info = (await get_json(client, "/pypi/made-here/1.0/json"))["info"]
    assert info["summary"] is None and info["requires_dist"] is None
    # the same bytes are the wheel's .metadata, served and now listed with their hash (made
    # from ranges, which carry none: only once the wheel itself is verified)
    metadata = await client.get(f"/files/made-here/{wheel.name}.metadata")
    body = await metadata.read()
    with zipfile.ZipFile(wheel) as archive:
        assert body == archive.read("made_here-2.0.dist-info/METADATA")
    files = await simple_files(client, "made-here")
    made = {"sha256": hashlib.sha256(body).hexdigest()}
    assert files[wheel.name]["core-metadata"] == (True if ranges else made)
    assert "core-metadata" not in files["made_here-2.0.tar.gz"]


async def test_upstream_html_index_without_metadata(make_client: MakeClient) -> None:
    async with FakeUpstream(formats="html") as fake:
        fake.add_file("plain", "plain-1.0.tar.gz", b"plain", requires_python=">=3.8")
        client, _ = await make_client(upstream_url=fake.index_url)
        doc = await get_json(client, "/pypi/plain/json")
        check_shape(doc, all_releases=True)
        assert doc["info"]["requires_python"] == ">=3.8"
        entry = doc["urls"][0]
        assert entry["size"] is None and entry["upload_time"] is None  # HTML pages do not say


async def test_upstream_metadata_failure_degrades_then_recovers(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    files = add_upstream_project(fake)
    client, _ = await make_client(upstream_url=fake.index_url, upstream_timeout=2.0)
    metadata_path = fake.file_path("up.proj", files["wheel"].filename) + ".metadata"
    fake.fail_paths[metadata_path] = 500
    doc = await get_json(client, "/pypi/up-proj/json")
    assert doc["info"]["version"] == "2.0" and doc["info"]["author"] is None
    del fake.fail_paths[metadata_path]
    doc = await get_json(client, "/pypi/up-proj/json")  # the degraded answer was not kept
    assert doc["info"]["author"] == "Ann Author"


@pytest.mark.parametrize("outage", ["fail_status", "stopped"])
async def test_upstream_down_and_nothing_cached_is_503(
    fake: FakeUpstream, make_client: MakeClient, outage: str
) -> None:
    add_upstream_project(fake)
    client, _ = await make_client(upstream_url=fake.index_url, upstream_timeout=0.5)
    if outage == "fail_status":
        fake.fail_status = 503
    else:
        await fake.stop()
    for path in ("/pypi/up-proj/json", "/pypi/up-proj/2.0/json"):
        response = await get(client, path)
        assert_error(response, 503)
        assert (await response.json())["message"].startswith("Service Unavailable")
        assert "Retry-After" not in response.headers


async def test_upstream_project_that_does_not_exist_is_404(fake: FakeUpstream, make_client: MakeClient) -> None:
    client, _ = await make_client(upstream_url=fake.index_url)
    response = await get(client, "/pypi/nowhere/json")
    assert_error(response, 404)


async def test_quarantined_upstream_project_is_404(fake: FakeUpstream, make_client: MakeClient) -> None:
    add_upstream_project(fake)
    fake.set_status("up.proj", "quarantined", "malware")
    client, _ = await make_client(upstream_url=fake.index_url)
    assert_error(await get(client, "/pypi/up-proj/json"), 404)


async def test_private_name_shadows_upstream(
    fake: FakeUpstream, make_client: MakeClient, tmp_path: Path
) -> None:
    files = add_upstream_project(fake)
    client, services = await make_client(upstream_url=fake.index_url)
    sdist = make_sdist(tmp_path, "up.proj", "0.1", summary="The internal one")
    services.private.reserve(normalize("up.proj"), "up.proj")  # pyproxy reserve: upstream has it
    assert (await upload(client, sdist)).status == 200
    fake.reset_counters()
    for path in ("/pypi/up-proj/json", "/pypi/UP_proj/json"):
        response = await client.get(path)  # the redirect is followed
        doc = orjson.loads(await response.read())
        check_shape(doc, all_releases=True)
        assert list(doc["releases"]) == ["0.1"]
        assert [e["filename"] for e in doc["urls"]] == [sdist.name]
        assert doc["info"]["summary"] == "The internal one"
        assert doc["last_serial"] == 1
    for version in ("2.0", "3.0b1"):
        assert_error(await get(client, f"/pypi/up-proj/{version}/json"), 404)
    assert fake.total == 0, fake.requests  # nothing of that name was even asked upstream
    assert files["wheel"].filename not in orjson.dumps(doc).decode()


async def test_merged_project_lists_both_with_private_digests(
    fake: FakeUpstream, make_client: MakeClient, tmp_path: Path
) -> None:
    add_upstream_project(fake)
    client, services = await make_client(upstream_url=fake.index_url, merge=("up.proj",))
    wheel = make_wheel(tmp_path, "up.proj", "4.0")
    services.private.reserve(normalize("up.proj"), "up.proj")  # pyproxy reserve: upstream has it
    assert (await upload(client, wheel)).status == 200
    doc = await get_json(client, "/pypi/up-proj/json")
    assert list(doc["releases"]) == ["1.0", "2.0", "2.5", "3.0b1", "4.0"]
    assert doc["info"]["version"] == "4.0" and doc["last_serial"] == 1
    private = doc["releases"]["4.0"][0]
    assert set(private["digests"]) == {"md5", "sha256", "blake2b_256"}
    assert set(doc["releases"]["2.0"][0]["digests"]) == {"sha256"}
    assert_matches_simple_page(doc, await simple_files(client, "up-proj"))
