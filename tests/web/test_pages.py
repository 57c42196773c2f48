"""The human-facing pages (pyproxy/web/pages.py), in process: landing, search, project list,
project pages for private, upstream and merged projects, and their 301/404/503 answers."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.model import normalize
from pyproxy.units import human_size
from pyproxy.web import pages
from pyproxy.web.context import Services
from tests.conftest import StartFake, upload
from tests.dists import core_metadata, make_wheel
from tests.fake_upstream import FakeUpstream

MakeClient = Callable[..., Awaitable[tuple[TestClient, Services]]]

HOSTILE_README = """\
# Hello heading

Some *markdown* text.

<script>alert("readme")</script>

<img src="x.png" onerror="alert('img')">

[click](javascript:alert('link'))
"""


def _origin(client: TestClient) -> str:
    return str(client.make_url("/")).rstrip("/")


class _Page(HTMLParser):
    """Visible text, links and the tags a page holds (what a browser would build)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: dict[str, str] = {}  # text -> href
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._link: str | None = None
        self._link_text = ""
        self._hidden = 0  # inside <style>, <script> or <title>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("style", "script", "title"):
            self._hidden += 1
        if tag == "a":
            self._link, self._link_text = dict(attrs).get("href") or "", ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._hidden -= 1
        if tag == "a" and self._link is not None:
            self.links[self._link_text.strip()] = self._link
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.text.append(data)
        if self._link is not None:
            self._link_text += data

    @property
    def visible(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text))


async def _get_page(client: TestClient, path: str, status: int = 200) -> tuple[_Page, str]:
    response = await client.get(path, allow_redirects=False)
    body = await response.text()
    assert response.status == status, (path, response.status, body)
    assert response.headers["Content-Type"].startswith("text/html"), response.headers
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = _Page()
    page.feed(body)
    return page, body


async def _upload_wheel(client: TestClient, tmp_path: Path, name: str, version: str,
                        **kwargs: Any) -> Path:
    wheel = make_wheel(tmp_path / "dists", name, version, **kwargs)
    response = await upload(client, wheel)
    assert response.status == 200, await response.text()
    return wheel


@pytest.fixture
async def fake(fake_upstream: StartFake) -> FakeUpstream:
    return await fake_upstream(formats="both")


# ---------------------------------------------------------------------------- landing page


async def test_landing_private_only_shows_snippets_with_own_url(client: TestClient) -> None:
    page, body = await _get_page(client, "/")
    base = _origin(client)
    assert f"index-url = {base}/simple/" in page.visible  # pip.conf
    assert f'url = "{base}/simple/"' in body.replace("&#34;", '"')  # uv.toml
    assert f"repository = {base}/legacy/" in page.visible  # .pypirc
    assert "private packages only" in page.visible
    assert "Offline" not in page.visible and "Online" not in page.visible
    assert page.links["0 private projects"] == "/projects/"
    form = dict(next(attrs for tag, attrs in page.tags if tag == "form"))
    assert (form["action"], form["method"]) == ("/search", "get")
    assert ("input", {"type": "search", "name": "q", "placeholder": "Search projects",
                      "aria-label": "Project name", "required": None}) in page.tags


async def test_landing_names_upstream_without_credentials_and_the_mode(
    make_client: MakeClient,
) -> None:
    client, _ = await make_client(upstream_url="http://someone:hunter2@127.0.0.1:9/simple/")
    page, body = await _get_page(client, "/")
    assert "127.0.0.1:9/simple/" in page.visible
    assert "hunter2" not in body and "someone" not in body
    assert "Online" in page.visible and "Offline mode" not in page.visible

    offline, _ = await make_client(upstream_url="http://127.0.0.1:9/simple/", offline=True)
    page, _ = await _get_page(offline, "/")
    assert "Offline mode" in page.visible


async def test_landing_uses_configured_base_url(make_client: MakeClient) -> None:
    client, _ = await make_client(base_url="https://pkgs.example.test/")
    page, _ = await _get_page(client, "/")
    assert "index-url = https://pkgs.example.test/simple/" in page.visible
    assert "repository = https://pkgs.example.test/legacy/" in page.visible


# ---------------------------------------------------------------------------- project list


async def test_private_project_list(client: TestClient, tmp_path: Path) -> None:
    await _upload_wheel(client, tmp_path, "Foo_Bar", "1.0")
    await _upload_wheel(client, tmp_path, "holygrail", "0.1")
    page, _ = await _get_page(client, "/projects/")
    assert page.links["Foo-Bar"] == "/project/foo-bar/"  # twine sends the safe_name
    assert page.links["holygrail"] == "/project/holygrail/"
    assert "2 projects" in page.visible
    landing, _ = await _get_page(client, "/")
    assert landing.links["2 private projects"] == "/projects/"
    response = await client.get("/projects", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (301, "/projects/")


# ---------------------------------------------------------------------------- search


async def test_search_private_substring_and_exact_redirect(client: TestClient, tmp_path: Path) -> None:
    for name in ("acme.tools", "acme-widgets", "other"):
        await _upload_wheel(client, tmp_path, name, "1.0")

    page, _ = await _get_page(client, "/search?q=ACME")
    assert page.links["acme.tools"] == "/project/acme-tools/"  # the name as uploaded
    assert "(acme-tools)" in page.visible
    assert page.links["acme-widgets"] == "/project/acme-widgets/"
    assert "other" not in page.links
    # private-only: an unknown name cannot exist anywhere, so nothing else is offered
    assert not any(text.startswith("Open project") for text in page.links)

    # separators and case do not matter, on both sides
    page, _ = await _get_page(client, "/search?q=acme_Wid")
    assert "acme-widgets" in page.links and "acme.tools" not in page.links
    page, _ = await _get_page(client, "/search?q=acmewidg")
    assert "acme-widgets" in page.links

    # an exact private name (in any spelling) goes straight to the project page
    response = await client.get("/search?q=Acme_Tools", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (302, "/project/acme-tools/")

    page, _ = await _get_page(client, "/search?q=nothing-like-it")
    assert "No private project name contains" in page.visible

    page, _ = await _get_page(client, "/search?q=")
    assert "Private projects matching" not in page.visible


async def test_search_escapes_the_query(client: TestClient) -> None:
    page, body = await _get_page(client, "/search?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "not a valid project name" in page.visible
    assert not any(tag == "script" for tag, _ in page.tags)


async def test_search_offers_any_valid_name_when_there_is_an_upstream(
    fake: FakeUpstream, make_client: MakeClient, tmp_path: Path
) -> None:
    client, _ = await make_client(upstream_url=fake.index_url)
    await _upload_wheel(client, tmp_path, "requests-internal", "1.0")
    fake.reset_counters()  # the upload checked the new name against upstream's project list
    page, _ = await _get_page(client, "/search?q=Requests")
    assert page.links["requests"] == "/project/requests/"
    assert "Open project requests" in page.visible
    assert page.links["requests-internal"] == "/project/requests-internal/"
    assert fake.requests == []  # a search never asks upstream (not even for its project list)


# ---------------------------------------------------------------------------- private project


async def test_private_project_page(client: TestClient, services: Services, tmp_path: Path) -> None:
    await _upload_wheel(client, tmp_path, "Widget", "1.9", requires_python=">=3.9")
    await _upload_wheel(client, tmp_path, "Widget", "1.10", requires_python=">=3.10",
                        summary="Widgets <b>for</b> everyone",
                        extra_metadata="Description-Content-Type: text/markdown\n"
                        "Project-URL: Source, https://code.example.test/widget\n"
                        "Project-URL: Evil, javascript:alert(1)\n\n" + HOSTILE_README)
    wheel = await _upload_wheel(client, tmp_path, "Widget", "2.0rc1")
    services.private.yank("widget", "1.9", "broken <b>build</b>")

    page, body = await _get_page(client, "/project/widget/")
    text = page.visible

    # versions newest first by packaging's ordering (1.10 > 1.9, though "1.9" > "1.10" as text)
    order = [m.group(1) for m in re.finditer(r'<details class="version" id="v-([^"]+)"', body)]
    assert order == ["2.0rc1", "1.10", "1.9"]
    # the heading names the newest final release, whose metadata the page shows
    h1 = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
    assert h1 and "Widget" in h1.group(1) and "1.10" in h1.group(1)
    assert "Widgets <b>for</b> everyone" in text  # summary, as text
    assert "Widgets &lt;b&gt;for&lt;/b&gt; everyone" in body

    # files: linked where the simple page links them, size, upload time, sha256
    base = _origin(client)
    assert page.links[wheel.name] == f"{base}/files/widget/{wheel.name}"
    simple = await (await client.get("/simple/widget/", headers={"Accept": "text/html"})).text()
    assert f'href="{base}/files/widget/{wheel.name}#sha256=' in simple
    assert human_size(wheel.stat().st_size) in text
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in text
    assert re.search(r"uploaded \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "Requires-Python >=3.10" in text and "Python >=3.10" in text

    # yanked with its (escaped) reason
    assert "yanked broken <b>build</b>" in text
    assert "broken &lt;b&gt;build&lt;/b&gt;" in body
    assert "badge private" in body and "badge upstream" not in body

    # the description: rendered markdown, sanitised
    assert any(tag == "h1" and attrs.get("id") == "user-content-hello-heading"
               for tag, attrs in page.tags)
    assert "Hello heading" in text and "markdown" in text
    assert not any(tag == "script" for tag, _ in page.tags)
    assert "onerror" not in body
    assert "javascript:" not in body
    # project links: http(s) only
    assert page.links["Source"] == "https://code.example.test/widget"
    assert "Evil" not in page.links

    # nothing read access would not show: not who uploaded it
    assert "alice" not in body


async def test_description_content_types(client: TestClient, tmp_path: Path) -> None:
    await _upload_wheel(client, tmp_path, "rsty", "1.0",
                        extra_metadata="Description-Content-Type: text/x-rst\n\n"
                        "Title here\n==========\n\n.. raw:: html\n\n   <script>x()</script>\n")
    page, body = await _get_page(client, "/project/rsty/")
    assert "Title here" in page.visible and "<script" not in body

    await _upload_wheel(client, tmp_path, "plainy", "1.0",
                        extra_metadata="Description-Content-Type: text/plain\n\n"
                        "line one <tag>\nline two\n")
    page, body = await _get_page(client, "/project/plainy/")
    assert "line one <tag>" in page.visible and "&lt;tag&gt;" in body


# ---------------------------------------------------------------------------- upstream and merged


async def test_upstream_project_page(fake: FakeUpstream, make_client: MakeClient) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    old = fake.add_file("Upthing", "upthing-1.0.tar.gz", b"x" * 1500, upload_time=when)
    new = fake.add_file("upthing", "upthing-1.2-py3-none-any.whl", b"y" * 2_500_000,
                        requires_python=">=3.8", yanked="use 1.1 <now>", upload_time=when)
    fake.add_file("upthing", "upthing-1.1-py3-none-any.whl", b"z" * 10, upload_time=when)
    client, _ = await make_client(upstream_url=fake.index_url)

    response = await client.get("/project/Upthing", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (301, "/project/upthing/")

    page, body = await _get_page(client, "/project/upthing/")
    base = _origin(client)
    text = page.visible
    assert page.links[new.filename] == f"{base}/files/upthing/{new.filename}"
    assert page.links[old.filename] == f"{base}/files/upthing/{old.filename}"
    assert "1.5 kB" in text and "2.5 MB" in text and "10 bytes" in text
    assert "2024-05-01 12:30 UTC" in text
    assert new.sha256 in text and old.sha256 in text
    assert "yanked use 1.1 <now>" in text and "use 1.1 &lt;now&gt;" in body
    assert "Requires-Python >=3.8" in text
    assert "upstream" in text and "badge private" not in body
    # the newest release that is not yanked is the one named at the top
    h1 = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
    assert h1 and "1.1" in h1.group(1)
    order = [m.group(1) for m in re.finditer(r'<details class="version" id="v-([^"]+)"', body)]
    assert order == ["1.2", "1.1", "1.0"]


async def test_page_and_json_api_name_the_same_current_release(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """One choice for both (formats/releases.py): with every release yanked, the final one."""
    for version in ("1.0", "2.0rc1"):
        fake.add_file("gone", f"gone-{version}-py3-none-any.whl", b"x", yanked="withdrawn")
    client, _ = await make_client(upstream_url=fake.index_url)
    _, body = await _get_page(client, "/project/gone/")
    h1 = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
    info = (await (await client.get("/pypi/gone/json")).json())["info"]
    assert info["version"] == "1.0" and info["yanked"] is True
    assert h1 and '<span class="muted">1.0</span>' in h1.group(1)


async def test_merged_project_marks_private_and_upstream_files(
    fake: FakeUpstream, make_client: MakeClient, tmp_path: Path
) -> None:
    up = fake.add_file("shared", "shared-0.9-py3-none-any.whl", b"upstream bytes")
    client, services = await make_client(upstream_url=fake.index_url, merge=("shared",))
    services.private.reserve(normalize("shared"), "shared")  # pyproxy reserve: upstream has it
    mine = await _upload_wheel(client, tmp_path, "shared", "1.0")
    page, body = await _get_page(client, "/project/shared/")
    assert mine.name in page.links and up.filename in page.links
    for chunk in body.split('<div class="file')[1:]:  # one per file
        if mine.name in chunk:
            assert "badge private" in chunk and "badge upstream" not in chunk
        if up.filename in chunk:
            assert "badge upstream" in chunk and "badge private" not in chunk
    assert "merged with upstream files" in page.visible


# ---------------------------------------------------------------------------- release pages


async def test_private_release_page(client: TestClient, services: Services, tmp_path: Path) -> None:
    wheel = await _upload_wheel(client, tmp_path, "Widget", "1.0", requires_python=">=3.9",
                                summary="Widgets <b>for</b> all")
    await _upload_wheel(client, tmp_path, "Widget", "2.0")
    page, body = await _get_page(client, "/project/widget/1.0/")
    base = _origin(client)
    h1 = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
    assert h1 and "Widget" in h1.group(1) and "1.0" in h1.group(1) and "yanked" not in h1.group(1)
    assert "Widgets <b>for</b> all" in page.visible and "Widgets &lt;b&gt;for" in body
    assert "Requires: Python >=3.9" in page.visible
    assert f"pip install --index-url {base}/simple/ widget==1.0" in page.visible
    assert list(page.links).count(wheel.name) == 1  # that release's files only
    assert page.links[wheel.name] == f"{base}/files/widget/{wheel.name}"
    assert "widget-2.0-py3-none-any.whl" not in body
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in page.visible
    assert page.links["All versions of Widget"] == "/project/widget/"

    # the project page links each release's page
    _, project = await _get_page(client, "/project/widget/")
    for version in ("1.0", "2.0"):
        assert f'<a href="/project/widget/{version}/">Release page</a>' in project

    services.private.yank("widget", "1.0", "broken <build>")
    page, body = await _get_page(client, "/project/widget/1.0/")
    assert "This release is yanked: broken <build>" in page.visible
    assert "broken &lt;build&gt;" in body


async def test_release_page_spellings_and_unknown_versions(
    client: TestClient, tmp_path: Path
) -> None:
    await _upload_wheel(client, tmp_path, "Foo_Bar", "1.0")
    for path, location in [
        ("/project/Foo_Bar/1.0/", "/project/foo-bar/1.0/"),
        ("/project/foo-bar/1.0", "/project/foo-bar/1.0/"),
        ("/project/foo-bar/1.0.0/", "/project/foo-bar/1.0/"),  # an equal version, as /pypi/ finds
        ("/project/foo-bar/1.0.0", "/project/foo-bar/1.0.0/"),
    ]:
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers.get("Location")) == (301, location), path
    page, _ = await _get_page(client, "/project/foo-bar/9.9/", status=404)
    assert "404 Not Found" in page.visible and "no release '9.9'" in page.visible
    await _get_page(client, "/project/foo-bar/1.0/more/", status=404)
    page, _ = await _get_page(client, "/project/no-such-thing/1.0/", status=404)
    assert "no-such-thing" in page.visible


async def test_upstream_release_page_summary_from_its_metadata(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    fake.add_file("upthing", "upthing-1.2-py3-none-any.whl", b"y" * 2000, upload_time=when,
                  metadata=core_metadata("upthing", "1.2", summary="Things, from upstream",
                                         requires_python=">=3.10"))
    fake.add_file("upthing", "upthing-1.2.tar.gz", b"z" * 10, yanked="bad sdist")
    client, _ = await make_client(upstream_url=fake.index_url)
    page, body = await _get_page(client, "/project/upthing/1.2/")
    assert "Things, from upstream" in page.visible
    assert "Requires: Python >=3.10" in page.visible
    assert "upthing-1.2-py3-none-any.whl" in page.links and "upthing-1.2.tar.gz" in page.links
    assert "badge upstream" in body and "This release is yanked" not in page.visible
    assert "yanked bad sdist" in page.visible  # one file is; the release is not
    metadata_path = fake.file_path("upthing", "upthing-1.2-py3-none-any.whl") + ".metadata"
    await _get_page(client, "/project/upthing/1.2/")
    assert fake.count(metadata_path) == 1  # read once, through the blob cache


# ---------------------------------------------------------------------------- off the loop, once


class CountedViews:
    """pages.project_view, counted, with the thread each call ran on; a call can be held at
    `gate` (a threading.Event) until the test lets it go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[threading.Thread] = []
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        real = pages.project_view

        def counted(*args: Any) -> Any:
            self.threads.append(threading.current_thread())
            self.started.set()
            if self.gate is not None:
                self.gate.wait(timeout=10)  # a safety net only: the test opens it
            return real(*args)

        monkeypatch.setattr(pages, "project_view", counted)


async def test_a_project_page_is_built_once_per_revision(
    client: TestClient, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _upload_wheel(client, tmp_path, "busy", "1.0")
    views = CountedViews(monkeypatch)
    bodies = await asyncio.gather(*(client.get("/project/busy/") for _ in range(8)))
    texts = {await response.text() for response in bodies}
    for _ in range(4):
        page, body = await _get_page(client, "/project/busy/")
        assert body in texts
    assert len(texts) == 1 and len(views.threads) == 1  # 12 requests, one build

    # a new revision (an upload, a yank) is built again, once
    await _upload_wheel(client, tmp_path, "busy", "2.0")
    for _ in range(3):
        page, _ = await _get_page(client, "/project/busy/")
    assert "busy-2.0-py3-none-any.whl" in page.links and len(views.threads) == 2
    services.private.yank("busy", "2.0", "oops")
    page, _ = await _get_page(client, "/project/busy/")
    await _get_page(client, "/project/busy/")
    assert "yanked oops" in page.visible and len(views.threads) == 3


async def test_a_page_being_built_holds_up_no_other_request(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _upload_wheel(client, tmp_path, "big", "1.0")
    views = CountedViews(monkeypatch)
    views.gate = threading.Event()
    loop_thread = threading.current_thread()  # the test client and the app share this loop
    rendered_on: list[tuple[str | None, threading.Thread]] = []
    real_render = jinja2.Template.render

    def render(self: jinja2.Template, *args: Any, **kwargs: Any) -> str:
        rendered_on.append((self.name, threading.current_thread()))
        return real_render(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", render)
    answered: list[str] = []

    async def fetch(path: str) -> None:
        response = await client.get(path)
        assert response.status == 200, path
        await response.read()
        answered.append(path)

    big = asyncio.create_task(fetch("/project/big/"))
    assert await asyncio.to_thread(views.started.wait, 30)
    await fetch("/projects/")  # answered while the big page is still being laid out
    await fetch("/simple/big/")
    views.gate.set()
    await big
    assert answered == ["/projects/", "/simple/big/", "/project/big/"]
    assert views.threads and loop_thread not in views.threads
    project_renders = [thread for name, thread in rendered_on if name == "project.html"]
    assert project_renders and loop_thread not in project_renders


# ---------------------------------------------------------------------------- errors


async def test_unknown_project_is_an_html_404(client: TestClient) -> None:
    page, _ = await _get_page(client, "/project/no-such-thing/", status=404)
    assert "404 Not Found" in page.visible and "no-such-thing" in page.visible
    await _get_page(client, "/project/not%20a%20name/", status=404)
    await _get_page(client, "/project/a/b/", status=404)
    response = await client.get("/project/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (302, "/projects/")


async def test_project_redirects_to_normalised_name(client: TestClient, tmp_path: Path) -> None:
    await _upload_wheel(client, tmp_path, "Foo_Bar", "1.0")
    for path in ("/project/Foo_Bar/", "/project/foo-bar", "/project/FOO.bar"):
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (301, "/project/foo-bar/"), path
    await _get_page(client, "/project/foo-bar/")


async def test_upstream_down_is_an_html_503(fake: FakeUpstream, make_client: MakeClient) -> None:
    client, _ = await make_client(upstream_url=fake.index_url)
    fake.fail_status = 503
    page, _ = await _get_page(client, "/project/anything/", status=503)
    assert "503 Service Unavailable" in page.visible and "Try again later" in page.visible

    fake.fail_status = None
    page, _ = await _get_page(client, "/project/missing-upstream/", status=404)
    assert "here or upstream" in page.visible

    offline, _ = await make_client(upstream_url=fake.index_url, offline=True)
    page, _ = await _get_page(offline, "/project/never-fetched/", status=404)
    assert "offline" in page.visible
