"""The Simple Repository API over real HTTP (docs SIMPLE-API.md, sections A-D, H, I).

Item numbers in test names and docstrings refer to SIMPLE-API.md. The server is private-only;
the data comes from the session-wide `seed` (see tests/conftest.py), copied per test.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import json
import os
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from packaging.utils import canonicalize_name
from pip._internal.index.collector import IndexContent, parse_links
from pip._internal.models.link import Link

from pyproxy.datadir import DataDir
from pyproxy.formats.negotiate import Format
from pyproxy.formats.render import render_project
from pyproxy.model import DistFile, ProjectPage, ProjectStatus, version_of
from pyproxy.settings import Settings
from pyproxy.stores.project_list import ProjectListStore
from pyproxy.stores.rendered_lists import RenderedLists
from pyproxy.web.context import Services
from tests.conftest import Seed, StartFake, seeded_settings, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html; charset=utf-8"

# section 0.1: what real clients send
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"
MICROPIP_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.01"

ROOT = "/simple/"
PROJECT = "/simple/foo-bar/"
PAGES = [ROOT, PROJECT]
ORIGIN = {"Origin": "https://example.org"}
NO_ACCEPT = ("Accept",)  # aiohttp sends "Accept: */*" unless told not to

WHEEL_10 = "foo_bar-1.0-py3-none-any.whl"
SDIST_10 = "foo_bar-1.0.tar.gz"
WHEEL_20 = "foo_bar-2.0-py3-none-any.whl"
WHEEL_LOCAL = "foo_bar-2.1+local-py3-none-any.whl"
FOO_FILES = {WHEEL_10, SDIST_10, WHEEL_20, WHEEL_LOCAL}
MakeClient = Callable[..., Awaitable[tuple[TestClient, Services]]]
UPLOAD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@pytest.fixture
def settings(seed: Seed, tmp_path: Path) -> Settings:
    return seeded_settings(seed, tmp_path)


# ------------------------------------------------------------------------------- helpers


async def get(client: TestClient, path: str, accept: str | None = None, **kwargs: object):
    headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[arg-type]
    skip = ()
    if accept is None:
        skip = NO_ACCEPT
    else:
        headers["Accept"] = accept
    return await client.get(path, headers=headers, skip_auto_headers=skip, allow_redirects=False, **kwargs)


def same_origin_path(client: TestClient, url: str) -> str:
    """The path (and query) of an absolute URL that must point at this server (item 71)."""
    parts = urlsplit(url)
    root = urlsplit(str(client.make_url("/")))
    assert parts.scheme in ("http", "https"), url
    assert parts.netloc == root.netloc, url
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def fetch_bytes(client: TestClient, url: str) -> tuple[bytes, dict[str, str]]:
    response = await client.get(same_origin_path(client, url.split("#", 1)[0]), allow_redirects=False)
    assert response.status == 200, (url, response.status)
    return await response.read(), dict(response.headers)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Page(HTMLParser):
    """What a strict reader sees: the doctype, where meta tags sit, anchors with their text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.doctype: str | None = None
        self.stack: list[str] = []
        self.metas: list[tuple[dict[str, str | None], bool]] = []  # (attrs, inside <head>)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.bases: list[dict[str, str | None]] = []
        self._anchor: dict[str, str | None] | None = None
        self._text: list[str] = []
        self.feed(text)
        self.close()

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "meta":
            self.metas.append((attributes, "head" in self.stack))
        elif tag == "base":
            self.bases.append(attributes)
        elif tag == "a":
            self._anchor, self._text = attributes, []
        if tag not in ("meta", "br", "base", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._anchor is not None:
            self.anchors.append((self._anchor, "".join(self._text)))
            self._anchor = None
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._anchor is not None:
            self._text.append(data)

    def meta(self, name: str) -> list[tuple[str | None, bool]]:
        return [(attrs.get("content"), in_head) for attrs, in_head in self.metas if attrs.get("name") == name]

    def anchor(self, text: str) -> dict[str, str | None]:
        found = [attrs for attrs, anchor_text in self.anchors if anchor_text == text]
        assert len(found) == 1, (text, self.anchors)
        return found[0]


def pip_links(client: TestClient, path: str, body: bytes, content_type: str) -> dict[str, Link]:
    """The links pip 26.3 itself reads from a page, by filename."""
    page = IndexContent(body, content_type, "utf-8", str(client.make_url(path)), cache_link_parsing=False)
    return {link.filename: link for link in parse_links(page)}


async def html_page(client: TestClient, path: str = PROJECT, accept: str = "text/html") -> tuple[bytes, Page]:
    response = await get(client, path, accept)
    assert response.status == 200
    body = await response.read()
    return body, Page(body.decode("utf-8"))


async def json_page(client: TestClient, path: str = PROJECT) -> dict:
    response = await get(client, path, JSON)
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON
    return json.loads(await response.read())


# ------------------------------------------------------------------ A. URLs, normalisation


async def test_a1_a4_normalized_urls_answer_directly(client: TestClient) -> None:
    """1, 4: B/ and B/<normalized>/ are 200 with no redirect (HolyGrail -> holygrail)."""
    for path in (ROOT, "/simple/holygrail/", PROJECT):
        response = await get(client, path, PIP_ACCEPT)
        assert response.status == 200, path
        assert not response.history


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple", "/simple/"),  # 2
        ("/simple/foo-bar", "/simple/foo-bar/"),  # 2
        ("/simple/Foo_Bar/", "/simple/foo-bar/"),  # 3
        ("/simple/FOO.BAR/", "/simple/foo-bar/"),  # 3
        ("/simple/foo__bar", "/simple/foo-bar/"),  # 2 + 3
        ("/simple/HolyGrail/", "/simple/holygrail/"),  # 3
    ],
)
async def test_a2_a3_redirect_to_canonical_url(client: TestClient, path: str, location: str) -> None:
    """2, 3, 72: 301 with Location, CORS on the redirect; the target answers 200."""
    response = await get(client, path, headers=ORIGIN)
    assert response.status == 301
    target = response.headers["Location"]
    assert urlsplit(target).path == location
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    followed = await get(client, urlsplit(target).path)
    assert followed.status == 200


@pytest.mark.parametrize(
    "query",
    [
        "format=application%2Fvnd.pypi.simple.v1%2Bjson",  # percent-encoded, as a browser would
        "format=application/vnd.pypi.simple.v1%2Bjson",
        "format=application/vnd.pypi.simple.v1+json",  # as the spec writes it
    ],
)
async def test_a3_redirect_keeps_query_string(client: TestClient, query: str) -> None:
    """3 REC: the query string (?format=) survives the redirect, and still means JSON after it."""
    response = await get(client, f"/simple/Foo_Bar/?{query}", "text/html")
    assert response.status == 301
    location = response.headers["Location"]
    assert not re.search(r"\s", location), location
    assert urlsplit(location).path == "/simple/foo-bar/"
    assert parse_qsl(urlsplit(location).query) == parse_qsl(query)
    followed = await get(client, same_origin_or_path(client, location), "text/html")
    assert followed.status == 200
    assert followed.headers["Content-Type"] == JSON


async def test_a3_root_redirect_keeps_query_string(client: TestClient) -> None:
    response = await get(client, "/simple?format=text%2Fhtml")
    assert response.status == 301
    assert parse_qsl(urlsplit(response.headers["Location"]).query) == [("format", "text/html")]


def same_origin_or_path(client: TestClient, location: str) -> str:
    return same_origin_path(client, location) if urlsplit(location).scheme else location


@pytest.mark.parametrize("path", ["/simple//foo-bar/", "/simple//Foo_Bar/", "/simple//"])
async def test_a5_double_slash_tolerated(client: TestClient, path: str) -> None:
    """5 REC: micropip with an index URL ending in '/' asks for .../simple//name/."""
    response = await get(client, path, MICROPIP_ACCEPT)
    if response.status == 200:
        return
    assert response.status in (301, 308), response.status
    expected = "/simple/" if path == "/simple//" else PROJECT
    assert urlsplit(response.headers["Location"]).path == expected


# ------------------------------------------------------------------ B. content negotiation

NEGOTIATED = [
    pytest.param(JSON, JSON, id="7-v1-json"),
    pytest.param(HTML_V1, HTML_V1, id="7-v1-html"),
    pytest.param("text/html", TEXT_HTML, id="7-text-html"),
    pytest.param(None, TEXT_HTML, id="8-no-accept"),
    pytest.param(PIP_ACCEPT, JSON, id="9-pip"),
    pytest.param(UV_ACCEPT, JSON, id="9-uv"),
    pytest.param(POETRY_ACCEPT, JSON, id="9-poetry"),
    pytest.param("text/html, application/vnd.pypi.simple.v1+json;q=0.5", TEXT_HTML, id="9-q-order"),
    pytest.param("application/vnd.pypi.simple.v1+json;q=0, text/html", TEXT_HTML, id="9-q-zero"),
    pytest.param("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.6", TEXT_HTML, id="9-q-values"),
    pytest.param("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", JSON, id="9-case-insensitive"),
    pytest.param(f"{JSON}, {HTML_V1}", JSON, id="10-tie-json"),
    pytest.param(f"{HTML_V1}, {JSON}", JSON, id="10-tie-order-irrelevant"),
    pytest.param(f"text/html, {HTML_V1}", HTML_V1, id="10-tie-v1-html-over-alias"),
    pytest.param("application/*", JSON, id="11-application-wildcard"),
    pytest.param("*/*", TEXT_HTML, id="11-any"),
    pytest.param("text/*", TEXT_HTML, id="11-text-wildcard"),
    pytest.param(MICROPIP_ACCEPT, JSON, id="11-micropip"),
    pytest.param("application/vnd.pypi.simple.latest+json", JSON, id="12-latest-json"),
    pytest.param("application/vnd.pypi.simple.latest+html", HTML_V1, id="12-latest-html"),
    pytest.param("application/json, text/html;q=0.5", TEXT_HTML, id="19-json-not-alias"),
    pytest.param(
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html, text/html;q=0.01",
        JSON, id="pypi-simple-accept-any",
    ),
]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(("accept", "content_type"), NEGOTIATED)
async def test_b_negotiation(client: TestClient, path: str, accept: str | None, content_type: str) -> None:
    """7-12, 14-17, 19: exact Content-Type per Accept, Vary: Accept, a body of that type."""
    response = await get(client, path, accept)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert "latest" not in response.headers["Content-Type"]
    assert "accept" in [v.strip().lower() for v in response.headers.get("Vary", "").split(",")]
    body = await response.read()
    if content_type == JSON:
        assert json.loads(body)["meta"]["api-version"] == "1.4"
    else:
        assert Page(body.decode()).doctype.lower() == "doctype html"


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    "accept",
    [
        "application/xml",
        "application/json",  # 19: not an alias
        "application/vnd.pypi.simple.v2+json",
        "text/html;q=0",
        "image/*",
    ],
)
async def test_b13_nothing_acceptable_is_406(client: TestClient, path: str, accept: str) -> None:
    """13, 19: 406 (never 300, never a v1 body labelled application/json); CORS and Vary on it."""
    response = await get(client, path, accept, headers=ORIGIN)
    assert response.status == 406
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert "Accept" in response.headers.get("Vary", "")
    assert response.headers.get("Content-Type", "").split(";")[0] not in (JSON, HTML_V1, "application/json")


async def test_b13_renovate_retry_without_accept(client: TestClient) -> None:
    """13: renovate retries a 406 with no Accept header and must get a page."""
    assert (await get(client, PROJECT, "application/xml")).status == 406
    retry = await get(client, PROJECT)
    assert retry.status == 200
    assert retry.headers["Content-Type"] == TEXT_HTML


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    ("query", "accept", "content_type"),
    [
        pytest.param("format=application%2Fvnd.pypi.simple.v1%2Bjson", "text/html", JSON, id="json-encoded"),
        pytest.param("format=application/vnd.pypi.simple.v1+json", "text/html", JSON, id="json-literal-plus"),
        pytest.param("format=application/vnd.pypi.simple.v1%2Bhtml", JSON, HTML_V1, id="v1-html"),
        pytest.param("format=text/html", JSON, TEXT_HTML, id="text-html"),
        pytest.param("format=application/vnd.pypi.simple.latest%2Bjson", "text/html", JSON, id="latest"),
        pytest.param("format=application%2Fvnd.pypi.simple.v1%2Bjson", "application/xml", JSON, id="overrides-406"),
    ],
)
async def test_b18_format_parameter_overrides_accept(
    client: TestClient, path: str, query: str, accept: str, content_type: str
) -> None:
    """18: ?format= names one type and overrides Accept. The spec writes the parameter with a
    literal '+' (?format=application/vnd.pypi.simple.v1+json), so that spelling must work too."""
    response = await get(client, f"{path}?{query}", accept)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert "Accept" in response.headers.get("Vary", "")


@pytest.mark.parametrize("path", PAGES)
async def test_b18_unsupported_format_falls_back_or_406(client: TestClient, path: str) -> None:
    response = await get(client, f"{path}?format=bogus", "text/html")
    assert response.status in (200, 406)
    if response.status == 200:
        assert response.headers["Content-Type"] == TEXT_HTML


# --------------------------------------------------------------------- G-items the brief asks


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("accept", [JSON, HTML_V1, "text/html"])
async def test_if_none_match_gives_304(client: TestClient, path: str, accept: str) -> None:
    """63: a matching If-None-Match gives 304, no body, the same ETag and Vary."""
    first = await get(client, path, accept)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'(W/)?"[^"]+"', etag)
    for header in (etag, f'"nope", {etag}', f"W/{etag}"):
        second = await get(client, path, accept, headers={"If-None-Match": header})
        assert second.status == 304, header
        assert second.headers["ETag"] == etag
        assert "Accept" in second.headers.get("Vary", "")
        assert await second.read() == b""
    stale = await get(client, path, accept, headers={"If-None-Match": '"something-else"'})
    assert stale.status == 200


@pytest.mark.parametrize("path", PAGES)
async def test_etag_differs_per_format(client: TestClient, path: str) -> None:
    """64: each representation has its own ETag (a cache may hold several under Vary: Accept
    and revalidate them all at once; the 304's ETag tells it which one is current)."""
    etags = {}
    for accept in (JSON, HTML_V1, "text/html"):
        etags[accept] = (await get(client, path, accept)).headers["ETag"]
    assert etags[JSON] != etags["text/html"]
    assert etags[JSON] != etags[HTML_V1]
    assert etags[HTML_V1] != etags["text/html"], "same ETag for two Content-Types"


async def test_etag_changes_after_upload_and_yank(client: TestClient, services: Services, tmp_path: Path) -> None:
    """64, 93 / A45: an upload and a yank change the ETag of project pages; a new project
    changes the root's. The new file is listed at once."""
    async def etags() -> dict[tuple[str, str], str]:
        return {(p, a): (await get(client, p, a)).headers["ETag"] for p in PAGES for a in (JSON, "text/html")}

    before = await etags()
    wheel = make_wheel(tmp_path / "new", "Foo_Bar", "3.0", filename="foo_bar-3.0-py3-none-any.whl")
    assert (await upload(client, wheel)).status == 200
    after_upload = await etags()
    for accept in (JSON, "text/html"):
        assert after_upload[(PROJECT, accept)] != before[(PROJECT, accept)]
    assert wheel.name in {f["filename"] for f in (await json_page(client))["files"]}

    other = make_wheel(tmp_path / "new", "brand-new", "1.0", filename="brand_new-1.0-py3-none-any.whl")
    assert (await upload(client, other)).status == 200
    after_new_project = await etags()
    for accept in (JSON, "text/html"):
        assert after_new_project[(ROOT, accept)] != after_upload[(ROOT, accept)]
    assert "brand-new" in {canonicalize_name(p["name"]) for p in (await json_page(client, ROOT))["projects"]}

    services.private.yank(canonicalize_name("foo-bar"), "3.0", "oops")
    after_yank = await etags()
    for accept in (JSON, "text/html"):
        assert after_yank[(PROJECT, accept)] != after_new_project[(PROJECT, accept)]


@pytest.mark.parametrize("path", PAGES)
async def test_cache_control_and_date_present(client: TestClient, path: str) -> None:
    """62, 65: Cache-Control (the configured max-age) and Date on simple pages."""
    response = await get(client, path, JSON)
    assert "max-age=0" in response.headers["Cache-Control"]
    assert "Date" in response.headers


async def test_cache_control_follows_page_max_age(make_client) -> None:
    other, _services = await make_client(page_max_age=600)
    response = await get(other, ROOT, JSON)
    assert "max-age=600" in response.headers["Cache-Control"]


# ------------------------------------------------------------------------ C. HTML pages


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("accept", ["text/html", HTML_V1])
async def test_c20_c21_doctype_and_meta_in_head(client: TestClient, path: str, accept: str) -> None:
    _body, page = await html_page(client, path, accept)
    assert page.doctype is not None and page.doctype.lower() == "doctype html"
    assert page.meta("pypi:repository-version") == [("1.4", True)]
    assert all(in_head for _attrs, in_head in page.metas), page.metas
    assert page.bases == []  # 32: no <base>


async def test_c22_root_lists_one_anchor_per_project(client: TestClient) -> None:
    _body, page = await html_page(client, ROOT)
    names = {}
    for attrs, text in page.anchors:
        href = attrs["href"]
        assert href is not None
        # relative to the list's own URL, as upstream indexes link them
        assert href == f"{canonicalize_name(text)}/", (href, text)
        names[canonicalize_name(text)] = href
    assert sorted(names) == ["foo-bar", "holygrail"]
    assert len(page.anchors) == 2
    for href in names.values():
        followed = await get(client, urljoin(ROOT, href))
        assert followed.status == 200  # the href is the canonical URL, no redirect


@pytest.mark.parametrize("accept", ["text/html", HTML_V1])
async def test_c23_c24_anchors_filenames_and_hashes(client: TestClient, seed: Seed, accept: str) -> None:
    """23: anchor text == percent-decoded last path segment of href; 24: #sha256=<hex> equal
    to the sha256 of the bytes served (and of the file uploaded)."""
    _body, page = await html_page(client, PROJECT, accept)
    assert {text for _attrs, text in page.anchors} == FOO_FILES
    for attrs, text in page.anchors:
        href = attrs["href"]
        assert href is not None
        parts = urlsplit(href)
        assert unquote(parts.path.rsplit("/", 1)[1]) == text
        assert parts.query == ""
        match = re.fullmatch(r"sha256=([0-9a-f]{64})", parts.fragment)
        assert match, parts.fragment
        served, _headers = await fetch_bytes(client, href)
        assert sha256(served) == match.group(1) == sha256(seed.path(text).read_bytes())


async def test_c25_requires_python_escaped_and_read_back_by_pip(client: TestClient) -> None:
    body, page = await html_page(client)
    text = body.decode()
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in text
    assert ">=3.8,<4" not in text
    assert page.anchor(WHEEL_10)["data-requires-python"] == ">=3.8,<4"
    assert "data-requires-python" not in page.anchor(WHEEL_20)
    links = pip_links(client, PROJECT, body, TEXT_HTML)
    assert links[WHEEL_10].requires_python == ">=3.8,<4"
    assert links[SDIST_10].requires_python == ">=3.8,<4"
    assert links[WHEEL_20].requires_python is None


@pytest.mark.parametrize("reason", ["broken build", "", 'has <html> & "quotes"'])
async def test_c26_yanked_attribute_is_quoted_and_read_by_pip(
    client: TestClient, services: Services, reason: str
) -> None:
    body, _page = await html_page(client)
    assert "data-yanked" not in body.decode()
    services.private.yank(canonicalize_name("Foo_Bar"), "1.0", reason)
    body, page = await html_page(client)
    text = body.decode()
    # never a bare attribute: pip would not see the yank
    assert len(re.findall(r'data-yanked="[^"]*"', text)) == 2
    assert len(re.findall(r"data-yanked", text)) == 2
    for filename in (WHEEL_10, SDIST_10):
        assert page.anchor(filename)["data-yanked"] == reason
    assert "data-yanked" not in page.anchor(WHEEL_20)
    links = pip_links(client, PROJECT, body, TEXT_HTML)
    assert links[WHEEL_10].is_yanked and links[SDIST_10].is_yanked
    assert links[WHEEL_10].yanked_reason == reason
    assert not links[WHEEL_20].is_yanked
    # and un-yanking takes it away again
    services.private.yank(canonicalize_name("Foo_Bar"), "1.0", "", undo=True)
    body, _page = await html_page(client)
    assert "data-yanked" not in body.decode()


@pytest.mark.parametrize("accept", ["text/html", HTML_V1])
async def test_c27_c28_core_metadata_attributes(client: TestClient, accept: str) -> None:
    """27: data-core-metadata="sha256=<sha of F.metadata>" for wheels, absent for the sdist
    (never "false"); 28: data-dist-info-metadata equal to it. pip reads the same hash."""
    body, page = await html_page(client, PROJECT, accept)
    assert 'data-core-metadata="false"' not in body.decode()
    links = pip_links(client, PROJECT, body, accept)
    for attrs, text in page.anchors:
        href = attrs["href"]
        assert href is not None
        if text == SDIST_10:
            assert "data-core-metadata" not in attrs
            assert "data-dist-info-metadata" not in attrs
            assert links[text].metadata_link() is None
            continue
        value = attrs["data-core-metadata"]
        assert value is not None and value.startswith("sha256=")
        assert attrs.get("data-dist-info-metadata") == value
        metadata, _headers = await fetch_bytes(client, href.split("#")[0] + ".metadata")
        assert value == f"sha256={sha256(metadata)}"
        metadata_link = links[text].metadata_link()
        assert metadata_link is not None
        assert metadata_link.url == href.split("#")[0] + ".metadata"
        assert metadata_link.as_hashes().is_hash_allowed("sha256", sha256(metadata))


async def test_c31_project_status_meta_in_head(client: TestClient) -> None:
    _body, page = await html_page(client)
    statuses = page.meta("pypi:project-status")
    assert statuses in ([], [("active", True)])


# the renderer directly: statuses a private project cannot reach through the HTTP API yet

def _hand_page(status: ProjectStatus) -> ProjectPage:
    dist = DistFile(
        filename="demo-1.0-py3-none-any.whl",
        hashes={"sha256": "ab" * 32},
        size=10,
        upload_time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        requires_python=">=3.9",
        core_metadata={"sha256": "cd" * 32},
    )
    return ProjectPage.build(canonicalize_name("demo"), (dist,), status=status, revision="r1")


def _url(dist: DistFile) -> str:
    return f"http://127.0.0.1:1/files/demo/{dist.filename}"


@pytest.mark.parametrize("fmt", [Format.HTML, Format.HTML_V1])
@pytest.mark.parametrize(
    ("status", "reason", "anchors"),
    [
        ("quarantined", "malware report", 0),  # 76: no distributions at all
        ("archived", "no longer maintained", 1),
        ("deprecated", None, 1),
        ("active", None, 1),
    ],
)
def test_c31_render_status_html(fmt: Format, status: str, reason: str | None, anchors: int) -> None:
    page = Page(render_project(_hand_page(ProjectStatus(status, reason)), fmt, _url).decode())
    assert page.doctype is not None
    shown = page.meta("pypi:project-status")
    if status == "active":
        assert shown in ([], [("active", True)])
    else:
        assert shown == [(status, True)]
    if reason:
        assert page.meta("pypi:project-status-reason") == [(reason, True)]
    else:
        assert page.meta("pypi:project-status-reason") == []
    assert len(page.anchors) == anchors


@pytest.mark.parametrize(
    ("status", "reason", "files"),
    [("quarantined", "malware report", 0), ("archived", "read only", 1), ("deprecated", None, 1)],
)
def test_c31_d36_render_status_json(status: str, reason: str | None, files: int) -> None:
    document = json.loads(render_project(_hand_page(ProjectStatus(status, reason)), Format.JSON, _url))
    expected = {"status": status, "reason": reason} if reason else {"status": status}
    assert document["project-status"] == expected
    assert len(document["files"]) == files
    assert document["meta"]["api-version"] == "1.4"


def test_c_render_escapes_status_reason() -> None:
    text = render_project(
        _hand_page(ProjectStatus("archived", 'moved to "new" <pkg> & co')), Format.HTML, _url
    ).decode()
    assert 'content="moved to &#34;new&#34; &lt;pkg&gt; &amp; co"' in text or (
        'content="moved to &quot;new&quot; &lt;pkg&gt; &amp; co"' in text
    )
    assert Page(text).meta("pypi:project-status-reason") == [('moved to "new" <pkg> & co', True)]


# ------------------------------------------------------------------------ D. JSON pages


@pytest.mark.parametrize("path", PAGES)
async def test_d34_api_version(client: TestClient, path: str) -> None:
    document = await json_page(client, path)
    assert document["meta"]["api-version"] == "1.4"
    assert re.fullmatch(r"\d+\.\d+", document["meta"]["api-version"])


async def test_d35_root_schema(client: TestClient) -> None:
    document = await json_page(client, ROOT)
    assert set(document) >= {"meta", "projects"}
    assert all(set(p) >= {"name"} and isinstance(p["name"], str) for p in document["projects"])
    assert sorted(canonicalize_name(p["name"]) for p in document["projects"]) == ["foo-bar", "holygrail"]


async def test_d36_project_name_and_versions(client: TestClient) -> None:
    document = await json_page(client)
    assert document["name"] == "foo-bar"
    versions = document["versions"]
    assert len(versions) == len(set(versions))
    assert set(versions) == {version_of(f["filename"]) for f in document["files"]}
    assert sorted(versions) == ["1.0", "2.0", "2.1+local"]
    assert {f["filename"] for f in document["files"]} == FOO_FILES
    assert document.get("project-status", {"status": "active"})["status"] == "active"


async def test_d37_d38_d39_d40_d42_d44_files(client: TestClient, seed: Seed) -> None:
    document = await json_page(client)
    for entry in document["files"]:
        filename = entry["filename"]
        url = entry["url"]
        parts = urlsplit(url)
        assert parts.scheme in ("http", "https") and parts.query == "" and parts.fragment == ""  # 44, 50
        assert unquote(parts.path.rsplit("/", 1)[1]) == filename
        assert isinstance(entry["hashes"], dict)
        assert all(key == key.lower() for key in entry["hashes"])
        body, headers = await fetch_bytes(client, url)
        assert entry["hashes"]["sha256"] == sha256(body) == sha256(seed.path(filename).read_bytes())  # 37
        assert isinstance(entry["size"], int) and not isinstance(entry["size"], bool)
        assert entry["size"] == len(body) == int(headers["Content-Length"])  # 38
        assert UPLOAD_TIME.fullmatch(entry["upload-time"]), entry["upload-time"]  # 39
        assert "dist-info-metadata" not in entry  # 42
        assert "data-dist-info-metadata" not in entry
        assert "yanked" not in entry or entry["yanked"] is False
        if filename in (WHEEL_10, SDIST_10):
            assert entry["requires-python"] == ">=3.8,<4"  # 40: raw, no escaping
        else:
            assert entry.get("requires-python") is None
        if filename == SDIST_10:
            assert "core-metadata" not in entry or entry["core-metadata"] is False
        else:
            metadata, _headers = await fetch_bytes(client, url + ".metadata")
            assert entry["core-metadata"] == {"sha256": sha256(metadata)}


async def test_d_pip_reads_json_page(client: TestClient) -> None:
    response = await get(client, PROJECT, PIP_ACCEPT)
    body = await response.read()
    links = pip_links(client, PROJECT, body, response.headers["Content-Type"])
    assert set(links) == FOO_FILES
    assert links[WHEEL_10].requires_python == ">=3.8,<4"
    assert links[WHEEL_10].metadata_link() is not None
    assert links[SDIST_10].metadata_link() is None
    assert not any(link.is_yanked for link in links.values())
    assert all(link.hash_name == "sha256" for link in links.values())


@pytest.mark.parametrize(("reason", "expected"), [("", True), ("bad build", "bad build")])
async def test_d41_yanked(client: TestClient, services: Services, reason: str, expected: object) -> None:
    services.private.yank(canonicalize_name("foo-bar"), "1.0", reason)
    response = await get(client, PROJECT, JSON)
    body = await response.read()
    document = json.loads(body)
    by_name = {f["filename"]: f for f in document["files"]}
    assert by_name[WHEEL_10]["yanked"] == expected
    assert by_name[SDIST_10]["yanked"] == expected
    assert by_name[WHEEL_10]["yanked"] is not False and by_name[WHEEL_10]["yanked"] != ""
    assert by_name[WHEEL_20].get("yanked", False) is False
    links = pip_links(client, PROJECT, body, JSON)
    assert links[WHEEL_10].is_yanked
    assert links[WHEEL_10].yanked_reason == reason
    assert not links[WHEEL_20].is_yanked


async def test_d45_json_is_an_object_with_known_keys(client: TestClient) -> None:
    document = await json_page(client)
    assert isinstance(document, dict)
    assert set(document) <= {"meta", "name", "files", "versions", "project-status", "alternate-locations"}
    assert "tracks" not in document["meta"]  # 85


async def test_removed_files_leave_the_page(client: TestClient, services: Services) -> None:
    services.private.remove(canonicalize_name("foo-bar"), "1.0", forget_name=False)
    document = await json_page(client)
    assert {f["filename"] for f in document["files"]} == FOO_FILES - {WHEEL_10, SDIST_10}
    assert "1.0" not in document["versions"]
    _body, page = await html_page(client)
    assert {text for _attrs, text in page.anchors} == FOO_FILES - {WHEEL_10, SDIST_10}


# ------------------------------------------------------------------- H. status codes


@pytest.mark.parametrize("accept", [PIP_ACCEPT, "text/html", None])
@pytest.mark.parametrize("path", ["/simple/does-not-exist/", "/simple/-bad-name-/", "/simple/a/b/"])
async def test_h67_unknown_project_404_with_cors(client: TestClient, path: str, accept: str | None) -> None:
    response = await get(client, path, accept, headers=ORIGIN)
    assert response.status == 404
    assert response.headers.get("Access-Control-Allow-Origin") == "*"


# what case-folds to an ASCII name without being one: the long s, the Kelvin sign; and a
# trailing newline, which "$" would let through
LOOK_ALIKES = ["\u017f", "\u017fetuptools", "\u212aeras", "foo\n"]


@pytest.mark.parametrize("name", LOOK_ALIKES, ids=["long-s", "long-s-word", "kelvin", "newline"])
async def test_h67_non_ascii_look_alikes_are_no_names_here_nor_upstream(
    make_client: MakeClient, seed: Seed, name: str
) -> None:
    """What an upload refuses as a name is no project on any read route either, and is never
    asked upstream (the Kelvin sign used to redirect to the ASCII project)."""
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("keras", "keras-1.0.tar.gz", b"keras")
        fake.add_file("setuptools", "setuptools-1.0.tar.gz", b"setuptools")
        other, _services = await make_client(upstream_url=fake.index_url)
        quoted = quote(name, safe="")
        for path in (f"/simple/{quoted}/", f"/project/{quoted}/", f"/pypi/{quoted}/json"):
            response = await other.get(path, allow_redirects=False)
            assert response.status == 404, (path, response.status, response.headers)
        assert fake.total == 0, fake.requests
        response = await upload(other, seed.path(WHEEL_10), name=name)
        assert response.status == 400
        assert "Start and end with a letter or numeral" in response.reason


async def test_h67_non_normalized_unknown_redirects_then_404(client: TestClient) -> None:
    response = await get(client, "/simple/Does_Not_Exist/", headers=ORIGIN)
    assert response.status in (301, 404)
    if response.status == 301:
        assert response.headers.get("Access-Control-Allow-Origin") == "*"
        followed = await get(client, urlsplit(response.headers["Location"]).path, headers=ORIGIN)
        assert followed.status == 404
        assert followed.headers.get("Access-Control-Allow-Origin") == "*"


async def test_h69_reading_needs_no_credentials(client: TestClient) -> None:
    """This private index serves pages to anyone (only uploads are authenticated)."""
    response = await get(client, PROJECT, PIP_ACCEPT)
    assert response.status == 200
    assert "WWW-Authenticate" not in response.headers


# ------------------------------------------------------------------------------ I. CORS


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("accept", [JSON, "text/html", MICROPIP_ACCEPT])
async def test_i72_cors_on_pages(client: TestClient, path: str, accept: str) -> None:
    response = await get(client, path, accept, headers=ORIGIN)
    assert response.status == 200
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]
    # what only a preflight's answer means (the Fetch standard reads it nowhere else)
    assert not {"Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Max-Age"} & set(response.headers)
    etag = response.headers["ETag"]
    cached = await get(client, path, accept, headers={**ORIGIN, "If-None-Match": etag})
    assert cached.status == 304
    assert cached.headers.get("Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize("path", ["/simple/foo-bar/", "/simple/", "/simple/Foo_Bar/", "/simple/nope/"])
async def test_i73_preflight(client: TestClient, path: str) -> None:
    response = await client.options(
        path,
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept",
        },
        allow_redirects=False,
    )
    assert response.status in (200, 204)
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    methods = {m.strip().upper() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "HEAD"} <= methods
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"accept", "authorization"} <= allowed
    assert response.headers["Access-Control-Max-Age"] == "86400"


# ---------------------------------------------------------------- pre-compressed pages


@pytest.mark.parametrize("accept", [JSON, "text/html"])
async def test_gzip_page_is_precompressed_and_has_its_own_etag(client: TestClient, accept: str) -> None:
    import gzip as gzip_module

    plain = await client.get("/simple/foo-bar/", headers={"Accept": accept, "Accept-Encoding": "identity"},
                             auto_decompress=False)
    packed = await client.get("/simple/foo-bar/", headers={"Accept": accept, "Accept-Encoding": "gzip, deflate"},
                              auto_decompress=False)
    assert plain.status == packed.status == 200
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == plain.headers["Vary"] == "Accept, Accept-Encoding"
    assert gzip_module.decompress(await packed.read()) == await plain.read()
    assert packed.headers["ETag"] != plain.headers["ETag"]
    again = await client.get("/simple/foo-bar/", auto_decompress=False, headers={
        "Accept": accept, "Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]})
    assert again.status == 304 and again.headers["ETag"] == packed.headers["ETag"]
    # the identity ETag does not validate the compressed representation
    other = await client.get("/simple/foo-bar/", auto_decompress=False, headers={
        "Accept": accept, "Accept-Encoding": "gzip", "If-None-Match": plain.headers["ETag"]})
    assert other.status == 200


async def test_headers_built_once_per_page_answer_alike_every_time(client: TestClient) -> None:
    """A page's headers are built once per revision and answer (200, gzip, 304): asked in turn,
    again and again, each answer keeps its own, and a 304 has no Content-Type or -Encoding."""
    seen: dict[tuple[str, str, bool], dict[str, str]] = {}
    etags: dict[tuple[str, str], str] = {}
    for _ in range(3):
        for accept in (JSON, "text/html"):
            for encoding in ("gzip", "identity"):
                for revalidate in (False, True):
                    headers = {"Accept": accept, "Accept-Encoding": encoding}
                    if revalidate:
                        headers["If-None-Match"] = etags[accept, encoding]
                    response = await client.get("/simple/foo-bar/", headers=headers,
                                                auto_decompress=False)
                    assert response.status == (304 if revalidate else 200)
                    etags.setdefault((accept, encoding), response.headers["ETag"])
                    kept = {k: v for k, v in response.headers.items() if k not in ("Date",)}
                    assert seen.setdefault((accept, encoding, revalidate), kept) == kept
                    if revalidate:
                        assert "Content-Type" not in kept and "Content-Encoding" not in kept
                    else:
                        assert ("Content-Encoding" in kept) == (encoding == "gzip")
    assert len(set(etags.values())) == 4


@pytest.mark.parametrize("accept_encoding", ["gzip;q=0", "br", "identity", "gzipx", ""])
async def test_no_gzip_unless_accepted(client: TestClient, accept_encoding: str) -> None:
    response = await client.get("/simple/foo-bar/", auto_decompress=False,
                                headers={"Accept": JSON, "Accept-Encoding": accept_encoding})
    assert response.status == 200 and "Content-Encoding" not in response.headers


# ---------------------------------------------------------------- the project list from upstream


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """The process's peak resident memory while in the block, sampled every 2 ms."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.baseline = self.peak = _rss()
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()
        self.peak = max(self.peak, _rss())


async def test_a_large_upstream_list_is_built_off_the_loop_in_bounded_memory(
    make_client: MakeClient, fake_upstream: StartFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200,000 names: while the list is read into its database and while it is rendered, the
    event loop goes on answering (each step waits in its thread until /health has been
    answered three times meanwhile, which a step on the loop could never see), and the
    worker's memory grows by a bounded amount, however long the list (the 1M case: see
    benchmarks). Deterministic: nothing is timed."""
    fake = await fake_upstream(formats="json")
    fake.synthetic_names = 200_000
    client, _ = await make_client(upstream_url=fake.index_url)
    loop_thread = threading.get_ident()
    answered_meanwhile: dict[str, threading.Event] = {}

    def waiting_for_the_loop(step: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            assert threading.get_ident() != loop_thread, f"{step} ran on the event loop"
            answered_meanwhile[step] = threading.Event()
            assert answered_meanwhile[step].wait(30), f"the loop answered nothing during {step}"
            return real(*args, **kwargs)
        return run

    monkeypatch.setattr(ProjectListStore, "build",
                        waiting_for_the_loop("the database build", ProjectListStore.build))
    monkeypatch.setattr(RenderedLists, "build",
                        waiting_for_the_loop("the rendering", RenderedLists.build))

    async def health_while_building() -> None:
        seen: set[str] = set()
        while len(seen) < 2:
            for step, event in list(answered_meanwhile.items()):
                if step not in seen:
                    for _ in range(3):
                        assert (await client.get("/health")).status == 200
                    seen.add(step)
                    event.set()
            await asyncio.sleep(0.01)

    with PeakRSS() as memory:
        listing, _ = await asyncio.gather(
            client.get("/simple/", headers={"Accept": JSON, "Accept-Encoding": "gzip"},
                       auto_decompress=False),
            health_while_building(),
        )
        assert listing.status == 200 and listing.headers["Content-Encoding"] == "gzip"
        received = 0
        async for chunk in listing.content.iter_chunked(256 * 1024):
            received += len(chunk)
    assert set(answered_meanwhile) == {"the database build", "the rendering"}
    growth = memory.peak - memory.baseline
    assert growth < 40 * 1024**2, f"peak RSS grew by {growth / 1024**2:.1f} MiB"
    assert received > 100_000
    # and every name is there, by normalised name
    document = await (await client.get("/simple/", headers={"Accept": JSON})).json(content_type=None)
    names = [project["name"] for project in document["projects"]]
    assert len(names) == 200_000 and names[:2] == ["Project_0", "Project_1"]


async def test_the_list_merges_private_names_once_with_relative_links_in_both_formats(
    make_client: MakeClient, fake_upstream: StartFake, tmp_path: Path
) -> None:
    fake = await fake_upstream(formats="json")
    for name in ("Flask", "My_Pkg", "zope.interface"):
        fake.add_file(name, f"{canonicalize_name(name)}-1.0.tar.gz", b"x")
    client, services = await make_client(upstream_url=fake.index_url)
    services.private.reserve(canonicalize_name("my.pkg"), "My.Pkg")  # private now: it wins
    assert (await upload(client, make_wheel(tmp_path, "Internal", "1.0"))).status == 200
    document = await (await client.get("/simple/", headers={"Accept": JSON})).json(content_type=None)
    assert document["projects"] == [
        {"name": "Flask"}, {"name": "Internal"}, {"name": "My.Pkg"}, {"name": "zope.interface"},
    ]
    body = await (await client.get("/simple/", headers={"Accept": "text/html"})).text()
    links = [(link.url, link.filename) for link in parse_links(
        IndexContent(body.encode(), "text/html", None, f"http://127.0.0.1:8080{ROOT}",
                     cache_link_parsing=False))]
    assert [url for url, _ in links] == [
        f"http://127.0.0.1:8080/simple/{n}/" for n in ("flask", "internal", "my-pkg", "zope-interface")
    ]
    assert 'href="my-pkg/">My.Pkg<' in body and "127.0.0.1" not in body  # relative, any origin
    assert sum(1 for _ in re.finditer("my-pkg", body)) == 1


async def test_the_list_answers_304_and_gzip_and_changes_with_either_side(
    make_client: MakeClient, fake_upstream: StartFake, tmp_path: Path
) -> None:
    fake = await fake_upstream(formats="json")
    fake.synthetic_names = 3_000
    client, services = await make_client(upstream_url=fake.index_url, upstream_index_ttl=0.0)
    etags = {}
    for accept in (JSON, "text/html", HTML_V1):
        for encoding in ("gzip", "identity"):
            response = await client.get(ROOT, auto_decompress=False,
                                        headers={"Accept": accept, "Accept-Encoding": encoding})
            assert response.status == 200 and response.headers["Content-Type"].startswith(accept)
            assert response.headers["Vary"] == "Accept, Accept-Encoding"
            body = await response.read()
            if encoding == "gzip":
                assert response.headers["Content-Encoding"] == "gzip"
                body = gzip.decompress(body)
            assert b"Project_2999" in body
            etags[accept, encoding] = response.headers["ETag"]
            again = await client.get(ROOT, headers={
                "Accept": accept, "Accept-Encoding": encoding, "If-None-Match": etags[accept, encoding]})
            assert again.status == 304 and again.headers["ETag"] == etags[accept, encoding]
    assert len(set(etags.values())) == 6
    # rendered once per format: the same file whatever the origin or the HTML media type
    rendered = DataDir(services.settings.data_dir).rendered_lists
    assert len(list(rendered.glob("*.body"))) == 2
    # a private upload changes the list and its ETag; so does a new upstream name
    assert (await upload(client, make_wheel(tmp_path, "Internal", "1.0"))).status == 200
    after_upload = await client.get(ROOT, headers={"Accept": JSON, "If-None-Match": etags[JSON, "identity"]})
    assert after_upload.status == 200 and after_upload.headers["ETag"] != etags[JSON, "identity"]
    fake.synthetic_names = 3_001
    after_upstream = await client.get(ROOT, headers={"Accept": JSON})
    assert after_upstream.headers["ETag"] not in (after_upload.headers["ETag"], etags[JSON, "identity"])
    assert {"name": "Project_3000"} in (await after_upstream.json(content_type=None))["projects"]


async def test_offline_the_list_is_the_private_and_the_cached_names(
    make_client: MakeClient, fake_upstream: StartFake, tmp_path: Path
) -> None:
    fake = await fake_upstream(formats="json")
    fake.add_file("Cached", "cached-1.0.tar.gz", b"x")
    fake.add_file("Never_Fetched", "never_fetched-1.0.tar.gz", b"x")
    data_dir = tmp_path / "data-offline"
    online, _ = await make_client(upstream_url=fake.index_url, data_dir=data_dir)
    assert (await online.get("/simple/cached/")).status == 200
    assert (await online.get(ROOT, headers={"Accept": JSON})).status == 200  # the list on disk
    assert (await upload(online, make_wheel(tmp_path, "Internal", "1.0"))).status == 200
    await make_client.close(online)
    await fake.stop()
    offline, _ = await make_client(upstream_url=fake.index_url, data_dir=data_dir, offline=True)
    document = await (await offline.get(ROOT, headers={"Accept": JSON})).json(content_type=None)
    # what offline pyproxy can serve: never a name whose page it never fetched
    assert document["projects"] == [{"name": "cached"}, {"name": "Internal"}]
