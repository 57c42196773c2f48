"""The overlay: private names win over upstream ones (dependency confusion), the allow-list merge,
and how upstream files are listed and routed.

Pure merge policy first (hand-built pages, plain calls), then the whole app in process
(tests/conftest.py's `make_client`, under pytest-aiohttp) against a FakeUpstream in the same
loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.model import (
    DistFile,
    LocalFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectList,
    ProjectPage,
    ProjectStatus,
    normalize,
)
from pyproxy.repository.overlay import PrivateWins, merge_lists, merge_pages
from pyproxy.web.context import SERVICES, Services
from tests.conftest import StartFake, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"


# ============================================================================ pure merge policy


def _dist(filename: str, *, upstream: bool = False, body: bytes | None = None) -> DistFile:
    data = body if body is not None else filename.encode()
    return DistFile(
        filename=filename,
        hashes={"sha256": hashlib.sha256(data).hexdigest()},
        size=len(data),
        origin=Origin.UPSTREAM if upstream else Origin.PRIVATE,
        upstream_url=f"http://127.0.0.1:9/files/{filename}" if upstream else None,
    )


def _page(name: str, *files: DistFile, versions: tuple[str, ...] = (), revision: str = "r",
          status: ProjectStatus | None = None) -> ProjectPage:
    return ProjectPage.build(
        normalize(name), tuple(files), extra_versions=versions, status=status, revision=revision
    )


def test_merge_private_file_wins_a_filename_collision() -> None:
    private_wheel = _dist("foo-1.0-py3-none-any.whl", body=b"private bytes")
    upstream_wheel = _dist("foo-1.0-py3-none-any.whl", upstream=True, body=b"upstream bytes")
    private = _page("foo", private_wheel, revision="p1")
    upstream = _page("foo", upstream_wheel, _dist("foo-2.0.tar.gz", upstream=True), revision="u1")

    merged = merge_pages(private, upstream)

    filenames = [d.filename for d in merged.files]
    assert sorted(filenames) == ["foo-1.0-py3-none-any.whl", "foo-2.0.tar.gz"]
    assert len(filenames) == len(set(filenames)), "a filename is listed twice"
    winner = merged.file("foo-1.0-py3-none-any.whl")
    assert winner is private_wheel
    assert winner.origin is Origin.PRIVATE and winner.upstream_url is None
    assert merged.file("foo-2.0.tar.gz").origin is Origin.UPSTREAM  # type: ignore[union-attr]


def test_merge_versions_are_a_union_without_duplicates() -> None:
    private = _page("foo", _dist("foo-1.0.tar.gz"), _dist("foo-1.0-py3-none-any.whl"),
                    versions=("1.0", "0.5"))
    upstream = _page("foo", _dist("foo-1.0.tar.gz", upstream=True),
                     _dist("foo-2.0-py3-none-any.whl", upstream=True), versions=("1.0", "2.0", "3.0"))

    merged = merge_pages(private, upstream)

    assert len(merged.versions) == len(set(merged.versions)), merged.versions
    assert set(merged.versions) == {"0.5", "1.0", "2.0", "3.0"}
    for dist in merged.files:  # PEP 700: every file's version is listed
        assert dist.version in merged.versions


def test_merge_keeps_the_private_name_and_status_and_tracks_both_revisions() -> None:
    private = _page("My_Pkg", _dist("my_pkg-1.0.tar.gz"), revision="p1",
                    status=ProjectStatus("deprecated", "use other"))
    upstream = _page("my.pkg", _dist("my_pkg-2.0.tar.gz", upstream=True), revision="u1")
    merged = merge_pages(private, upstream)
    assert merged.name == "my-pkg"
    assert merged.status == ProjectStatus("deprecated", "use other")
    # a change on either side must change the revision (rendered pages are cached by it)
    other_upstream = _page("my.pkg", _dist("my_pkg-2.0.tar.gz", upstream=True), revision="u2")
    other_private = _page("My_Pkg", _dist("my_pkg-1.0.tar.gz"), revision="p2")
    revisions = {
        merged.revision,
        merge_pages(private, other_upstream).revision,
        merge_pages(other_private, upstream).revision,
    }
    assert len(revisions) == 3


def test_merge_offers_no_files_of_a_quarantined_upstream_project() -> None:
    """PEP 792: quarantined means no distributions may be offered. An allow-listed merge must not
    list upstream files that the file route refuses to serve (upstream.offered_file 404s them)."""
    private = _page("foo", _dist("foo-1.0.tar.gz"))
    upstream = _page("foo", _dist("foo-99.0.tar.gz", upstream=True),
                     status=ProjectStatus("quarantined", "malware"))
    merged = merge_pages(private, upstream)
    offered = [d.filename for d in merged.files] if merged.status.offers_files else []
    assert offered == ["foo-1.0.tar.gz"]


def test_merge_of_empty_pages() -> None:
    merged = merge_pages(_page("foo"), _page("foo"))
    assert merged.files == () and merged.versions == ()


def shown(listing: ProjectList) -> list[str]:
    return [display for _, display in listing.entries()]


@pytest.mark.parametrize("upstream_name", ["my.pkg", "MY-PKG", "my__pkg", "My_Pkg", "my-pkg"])
def test_merge_lists_private_name_hides_every_upstream_spelling(upstream_name: str) -> None:
    private = ProjectList(("My_Pkg", "internal"), revision="p")
    upstream = ProjectList(("Flask", upstream_name, "zope.interface"), revision="u")
    merged = merge_lists(private, upstream)
    # by normalised name, each once, the private spelling the one shown
    assert list(merged.entries()) == [
        ("flask", "Flask"), ("internal", "internal"), ("my-pkg", "My_Pkg"),
        ("zope-interface", "zope.interface"),
    ]
    assert merged.has(normalize("my.pkg")) and merged.has(normalize("flask"))
    assert not merged.has(normalize("other"))


def test_merge_lists_no_duplicates_and_revision_follows_both_sides() -> None:
    private = ProjectList(("a", "b"), revision="p1")
    upstream = ProjectList(("b", "c", "c", "A"), revision="u1")
    merged = merge_lists(private, upstream)
    assert shown(merged) == ["a", "b", "c"]
    assert merge_lists(private, ProjectList(upstream.names, revision="u2")).revision != merged.revision
    assert merge_lists(ProjectList(private.names, revision="p2"), upstream).revision != merged.revision


# ======================================================================= PrivateWins over doubles


class Memory:
    """A Repository double: the given pages, each file openable (a LocalFile nobody opens);
    every question asked is recorded in `asked`."""

    def __init__(self, *pages: ProjectPage, revision: str = "m1") -> None:
        self.pages = {page.name: page for page in pages}
        self.revision = revision
        self.asked: list[tuple[str, str]] = []

    async def list_projects(self) -> ProjectList:
        self.asked.append(("list_projects", ""))
        return ProjectList(tuple(self.pages), revision=self.revision)

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        self.asked.append(("project_page", name))
        if name not in self.pages:
            raise NotFound(f"no {name!r} here")
        return self.pages[name]

    def _open(self, project: NormalizedName, filename: str, *, metadata: bool) -> LocalFile:
        dist = self.pages[project].file(filename) if project in self.pages else None
        if dist is None or (metadata and not dist.core_metadata):
            raise NotFound(f"no {filename!r} in {project!r}")
        size, sha256 = dist.size or 0, dist.sha256 or ""
        return LocalFile(Path("/nowhere") / filename, size, sha256, cache="hit")

    async def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
        self.asked.append(("open_file", f"{project}/{filename}"))
        return self._open(project, filename, metadata=False)

    async def open_metadata(self, project: NormalizedName, filename: str) -> LocalFile:
        self.asked.append(("open_metadata", f"{project}/{filename}"))
        return self._open(project, filename, metadata=True)

    def looked_up(self) -> list[tuple[str, str]]:
        """What was asked about projects, leaving out the project list."""
        return [call for call in self.asked if call[0] != "list_projects"]


def _with_metadata(dist: DistFile) -> DistFile:
    return dataclasses.replace(dist, core_metadata={"sha256": "cd" * 32})


def _stack(private: Memory, upstream: Memory, **options: Any) -> PrivateWins:
    return PrivateWins(private, upstream, **options)


ROUTES = ["project_page", "open_file", "open_metadata"]


async def _ask(repository: PrivateWins, route: str, project: str, filename: str) -> object:
    name = normalize(project)
    if route == "project_page":
        return await repository.project_page(name)
    if route == "open_file":
        return await repository.open_file(name, filename)
    return await repository.open_metadata(name, filename)


@pytest.mark.parametrize("route", ROUTES)
async def test_a_private_name_never_reaches_upstream(route: str) -> None:
    upstream = Memory(_page("foo", _with_metadata(_dist("foo-99.0.tar.gz", upstream=True))))
    private = Memory(_page("foo", _dist("foo-1.0.tar.gz")))
    repository = _stack(private, upstream)
    if route == "project_page":
        page = await repository.project_page(normalize("foo"))
        assert [d.filename for d in page.files] == ["foo-1.0.tar.gz"]
    else:
        with pytest.raises(NotFound):
            await _ask(repository, route, "foo", "foo-99.0.tar.gz")
    assert upstream.asked == []


@pytest.mark.parametrize("route", ROUTES)
async def test_a_merged_name_reaches_upstream_for_what_it_lacks(route: str) -> None:
    wanted = _with_metadata(_dist("foo-99.0.tar.gz", upstream=True))
    upstream = Memory(_page("foo", wanted))
    private = Memory(_page("foo", _dist("foo-1.0.tar.gz")))
    got = await _ask(_stack(private, upstream, merge=["Foo"]), route, "foo", wanted.filename)
    if route == "project_page":
        assert isinstance(got, ProjectPage) and got.file(wanted.filename) == wanted
    asked = "foo" if route == "project_page" else f"foo/{wanted.filename}"
    assert upstream.looked_up() == [(route, asked)]


async def test_a_private_file_without_metadata_never_gets_the_upstream_one() -> None:
    clash = _dist("foo-1.0.tar.gz")
    theirs = _with_metadata(dataclasses.replace(clash, origin=Origin.UPSTREAM))
    upstream = Memory(_page("foo", theirs))
    repository = _stack(Memory(_page("foo", clash)), upstream, merge=["foo"])
    with pytest.raises(NotFound):
        await repository.open_metadata(normalize("foo"), clash.filename)
    assert upstream.asked == []


async def test_a_new_private_name_wins_at_once() -> None:
    upstream = Memory(_page("foo", _dist("foo-99.0.tar.gz", upstream=True)))
    private = Memory()
    repository = _stack(private, upstream)
    assert (await repository.project_page(normalize("foo"))).file("foo-99.0.tar.gz") is not None
    private.pages[normalize("foo")] = _page("foo", _dist("foo-1.0.tar.gz"))
    private.revision = "m2"  # what the private store's change counter does
    page = await repository.project_page(normalize("foo"))
    assert [d.filename for d in page.files] == ["foo-1.0.tar.gz"]


# ---------------------------------------------------------------------------- private prefixes

UPSTREAM_ACME = "acme_widgets-9.0.tar.gz"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("project", ["acme-widgets", "Acme_Widgets", "ACME.widgets"])
async def test_a_name_under_a_private_prefix_is_never_looked_up_upstream(
    route: str, project: str
) -> None:
    upstream = Memory(_page("acme-widgets", _with_metadata(_dist(UPSTREAM_ACME, upstream=True))))
    repository = _stack(Memory(), upstream, private_prefixes=["acme-"], merge=["acme-widgets"])
    with pytest.raises(NotFound, match="'acme-' are private"):
        await _ask(repository, route, project, UPSTREAM_ACME)
    assert upstream.asked == []


@pytest.mark.parametrize("route", ROUTES)
async def test_a_private_project_under_a_prefix_is_served_privately_even_if_merged(
    route: str,
) -> None:
    mine = _with_metadata(_dist("acme_widgets-1.0.tar.gz"))
    upstream = Memory(_page("acme-widgets", _with_metadata(_dist(UPSTREAM_ACME, upstream=True))))
    repository = _stack(Memory(_page("acme-widgets", mine)), upstream,
                        private_prefixes=["Acme_"], merge=["acme-widgets"])
    got = await _ask(repository, route, "acme-widgets", mine.filename)
    if route == "project_page":
        assert isinstance(got, ProjectPage) and [d.filename for d in got.files] == [mine.filename]
    with pytest.raises(NotFound):  # what only upstream has stays out of reach
        await _ask(repository, "open_file", "acme-widgets", UPSTREAM_ACME)
    assert upstream.asked == []


@pytest.mark.parametrize("project", ["acmewidgets", "acme", "not-acme-widgets"])
async def test_names_outside_the_prefixes_still_come_from_upstream(project: str) -> None:
    upstream = Memory(_page(project, _dist(f"{project}-1.0.tar.gz", upstream=True)))
    repository = _stack(Memory(), upstream, private_prefixes=["acme-", "corp-"])
    assert (await repository.project_page(normalize(project))).name == normalize(project)


async def test_the_project_list_leaves_out_upstream_names_under_a_prefix() -> None:
    upstream = Memory(_page("acme-evil"), _page("Acme.Typo"), _page("flask"), _page("acme"))
    repository = _stack(Memory(_page("acme-widgets")), upstream, private_prefixes=["acme-"])
    assert shown(await repository.list_projects()) == ["acme", "acme-widgets", "flask"]
    merged = merge_lists(ProjectList(()), ProjectList(("acme-x", "b")), private_prefixes=("acme-",))
    assert shown(merged) == ["b"]
    assert not merged.has(normalize("acme-x")) and merged.has(normalize("b"))


async def test_no_prefix_by_default() -> None:
    upstream = Memory(_page("acme-widgets", _dist("acme_widgets-9.0.tar.gz", upstream=True)))
    repository = _stack(Memory(), upstream)
    assert (await repository.project_page(normalize("acme-widgets"))).files != ()
    assert repository.private_prefixes == ()


# ============================================================================ in-process app

MakeProxy = Callable[..., Awaitable[tuple[TestClient, Services]]]


@pytest.fixture
async def fake(fake_upstream: StartFake) -> FakeUpstream:
    return await fake_upstream(formats="both")


@pytest.fixture
def make_proxy(make_client: MakeProxy) -> MakeProxy:
    """`await make_proxy(fake, **settings)`: a pyproxy app whose upstream is `fake` (user alice)."""

    async def make(upstream: FakeUpstream, **overrides: Any) -> tuple[TestClient, Services]:
        return await make_client(upstream_url=upstream.index_url, **overrides)

    return make


async def _upload_wheel(client: TestClient, tmp_path: Path, name: str, version: str,
                        filename: str | None = None) -> Path:
    wheel = make_wheel(tmp_path / "dists", name, version, filename=filename)
    # the names here are upstream's too: an operator makes them private first (pyproxy reserve)
    assert client.app is not None
    client.app[SERVICES].private.reserve(normalize(name), name)
    response = await upload(client, wheel)
    assert response.status == 200, await response.text()
    return wheel


async def _json_page(client: TestClient, project: str) -> dict[str, Any]:
    response = await client.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == JSON
    return orjson.loads(await response.read())


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, str | None] = {}
        self._open: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), ""
        elif tag == "meta":
            values = dict(attrs)
            if values.get("name"):
                self.meta[values["name"]] = values.get("content")  # type: ignore[index]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, self._text.strip()))
            self._open = None


async def _html_page(client: TestClient, project: str) -> _Anchors:
    response = await client.get(f"/simple/{project}/", headers={"Accept": HTML})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/html")
    parser = _Anchors()
    parser.feed(await response.text())
    return parser


def _html_filenames(page: _Anchors) -> list[str]:
    return [text for _attrs, text in page.anchors]


def _origin(client: TestClient) -> str:
    return str(client.make_url("/")).rstrip("/")


def _upstream_requests_for(fake: FakeUpstream, needle: str) -> list[tuple[str, str]]:
    return [(m, p) for m, p in fake.requests if needle in p]


# ---------------------------------------------------------------------------- private wins


async def test_private_name_hides_upstream_versions(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    fake.add_file("foo", "foo-99.0-py3-none-any.whl", b"upstream 99", metadata=b"Name: foo\n")
    client, _ = await make_proxy(fake)
    await _upload_wheel(client, tmp_path, "foo", "1.0")

    page = await _json_page(client, "foo")
    assert page["versions"] == ["1.0"]
    assert [f["filename"] for f in page["files"]] == ["foo-1.0-py3-none-any.whl"]
    html = await _html_page(client, "foo")
    assert _html_filenames(html) == ["foo-1.0-py3-none-any.whl"]
    # the upstream page of a private name is not even consulted
    assert fake.count(fake.page_path("foo")) == 0, fake.requests


@pytest.mark.parametrize("spelling", ["my.pkg", "MY-PKG", "my__pkg", "My_Pkg"])
async def test_private_name_blocks_every_upstream_spelling(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path, spelling: str
) -> None:
    upstream_files = ["my.pkg-99.0.tar.gz", "my_pkg-98.0-py3-none-any.whl", "my__pkg-97.0.tar.gz"]
    for filename in upstream_files:
        fake.add_file(spelling, filename, filename.encode())
    client, _ = await make_proxy(fake)
    await _upload_wheel(client, tmp_path, "My_Pkg", "1.0", filename="my_pkg-1.0-py3-none-any.whl")

    # every spelling leads to the private page only
    response = await client.get(f"/simple/{spelling}/", headers={"Accept": JSON},
                                allow_redirects=False)
    if spelling != "my-pkg":
        assert response.status in (301, 308), response.status
        assert response.headers["Location"].endswith("/simple/my-pkg/")
    page = await _json_page(client, "my-pkg")
    assert page["versions"] == ["1.0"]
    assert [f["filename"] for f in page["files"]] == ["my_pkg-1.0-py3-none-any.whl"]
    assert _html_filenames(await _html_page(client, "my-pkg")) == ["my_pkg-1.0-py3-none-any.whl"]

    # no upstream file is reachable under any spelling of the project in the file URL
    for project in ("my-pkg", "my.pkg", "MY-PKG", "my__pkg", "My_Pkg"):
        for filename in upstream_files:
            for suffix in ("", ".metadata"):
                response = await client.get(f"/files/{project}/{quote(filename)}{suffix}")
                assert response.status == 404, (project, filename, suffix, response.status)
    assert _upstream_requests_for(fake, "/files/") == []

    # the root list shows the private project once
    response = await client.get("/simple/", headers={"Accept": JSON})
    assert response.status == 200
    names = [normalize(p["name"]) for p in orjson.loads(await response.read())["projects"]]
    assert names.count(NormalizedName("my-pkg")) == 1, names


async def test_guessed_upstream_file_of_private_name_is_404_and_never_fetched(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    fake.add_file("foo", "foo-99.0-py3-none-any.whl", b"upstream 99", metadata=b"Name: foo\n")
    fake.add_file("bar", "bar-1.0.tar.gz", b"bar")
    client, _ = await make_proxy(fake)
    await _upload_wheel(client, tmp_path, "foo", "1.0")

    for path in (
        "/files/foo/foo-99.0-py3-none-any.whl",
        "/files/foo/foo-99.0-py3-none-any.whl.metadata",
        "/files/Foo/foo-99.0-py3-none-any.whl",
        # smuggled under another (upstream) project's name
        "/files/bar/foo-99.0-py3-none-any.whl",
        "/files/bar/foo-99.0-py3-none-any.whl.metadata",
    ):
        response = await client.get(path)
        assert response.status == 404, (path, response.status)
    assert fake.count(fake.file_path("foo", "foo-99.0-py3-none-any.whl")) == 0
    assert fake.count(fake.file_path("foo", "foo-99.0-py3-none-any.whl") + ".metadata") == 0
    assert _upstream_requests_for(fake, "/files/") == [], fake.requests
    # the private file itself is served
    response = await client.get("/files/foo/foo-1.0-py3-none-any.whl")
    assert response.status == 200


async def test_allow_listed_name_merges_both_and_downloads_upstream_file(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    upstream_body = b"upstream 99 wheel"
    fake.add_file("foo", "foo-99.0-py3-none-any.whl", upstream_body, metadata=b"Name: foo\n")
    # same filename as the private upload, other bytes: the private one must win
    fake.add_file("foo", "foo-1.0-py3-none-any.whl", b"an impostor")
    client, _ = await make_proxy(fake, merge=("Foo",))
    private_wheel = await _upload_wheel(client, tmp_path, "foo", "1.0")

    page = await _json_page(client, "foo")
    assert sorted(page["versions"]) == ["1.0", "99.0"]
    filenames = [f["filename"] for f in page["files"]]
    assert sorted(filenames) == ["foo-1.0-py3-none-any.whl", "foo-99.0-py3-none-any.whl"]
    by_name = {f["filename"]: f for f in page["files"]}
    assert by_name["foo-1.0-py3-none-any.whl"]["hashes"]["sha256"] == hashlib.sha256(
        private_wheel.read_bytes()).hexdigest()
    assert sorted(_html_filenames(await _html_page(client, "foo"))) == sorted(filenames)

    response = await client.get("/files/foo/foo-99.0-py3-none-any.whl")
    assert response.status == 200
    assert await response.read() == upstream_body
    response = await client.get("/files/foo/foo-99.0-py3-none-any.whl.metadata")
    assert response.status == 200 and await response.read() == b"Name: foo\n"
    response = await client.get("/files/foo/foo-1.0-py3-none-any.whl")
    assert response.status == 200 and await response.read() == private_wheel.read_bytes()
    assert fake.count(fake.file_path("foo", "foo-99.0-py3-none-any.whl")) == 1
    assert fake.count(fake.file_path("foo", "foo-1.0-py3-none-any.whl")) == 0


async def test_name_taken_privately_after_upstream_was_cached(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    """An upstream project already served (page rendered, file in the blob cache) disappears the
    moment the name is uploaded privately."""
    fake.add_file("foo", "foo-99.0-py3-none-any.whl", b"upstream 99", metadata=b"Name: foo\n")
    client, _ = await make_proxy(fake)
    for accept in (JSON, HTML):
        response = await client.get("/simple/foo/", headers={"Accept": accept})
        assert response.status == 200
    for suffix in ("", ".metadata"):
        response = await client.get(f"/files/foo/foo-99.0-py3-none-any.whl{suffix}")
        assert response.status == 200
    await _upload_wheel(client, tmp_path, "foo", "1.0")

    page = await _json_page(client, "foo")
    assert page["versions"] == ["1.0"]
    assert [f["filename"] for f in page["files"]] == ["foo-1.0-py3-none-any.whl"]
    assert _html_filenames(await _html_page(client, "foo")) == ["foo-1.0-py3-none-any.whl"]
    for suffix in ("", ".metadata"):
        response = await client.get(f"/files/foo/foo-99.0-py3-none-any.whl{suffix}")
        assert response.status == 404, (suffix, response.status)


@pytest.mark.parametrize("outage", ["fail_status", "stopped", "latency"])
async def test_private_name_served_while_upstream_is_down(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path, outage: str
) -> None:
    fake.add_file("foo", "foo-99.0-py3-none-any.whl", b"upstream 99")
    client, _ = await make_proxy(fake, upstream_timeout=0.5, merge=("merged",))
    wheel = await _upload_wheel(client, tmp_path, "foo", "1.0")
    await _upload_wheel(client, tmp_path, "merged", "1.0")
    if outage == "fail_status":
        fake.fail_status = 503
    elif outage == "stopped":
        await fake.stop()
    else:
        fake.latency = 3.0

    page = await _json_page(client, "foo")
    assert page["versions"] == ["1.0"]
    assert _html_filenames(await _html_page(client, "foo")) == ["foo-1.0-py3-none-any.whl"]
    response = await client.get("/files/foo/foo-1.0-py3-none-any.whl")
    assert response.status == 200 and await response.read() == wheel.read_bytes()
    # an allow-listed name still serves its private files
    page = await _json_page(client, "merged")
    assert [f["filename"] for f in page["files"]] == ["merged-1.0-py3-none-any.whl"]
    # and a name that only upstream could have is "unavailable", never "not found"
    response = await client.get("/simple/nowhere/")
    assert response.status == 503, response.status


# ---------------------------------------------------------------------------- listing


@pytest.mark.parametrize("formats", ["json", "html"])
async def test_upstream_files_listed_with_own_urls_and_all_fields(
    make_proxy: MakeProxy, formats: str
) -> None:
    async with FakeUpstream(formats=formats) as upstream:  # type: ignore[arg-type]
        moment = datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)
        wheel = upstream.add_file(
            "Fields.Proj", "fields_proj-1.0-py3-none-any.whl", b"wheel body",
            requires_python=">=3.8,<4", metadata=b"Metadata-Version: 2.1\nName: fields.proj\n",
            upload_time=moment,
        )
        yanked = upstream.add_file("fields.proj", "fields_proj-0.9.tar.gz", b"sdist body",
                                   yanked="bad build", upload_time=moment)
        bare_yank = upstream.add_file("fields.proj", "fields_proj-0.8.tar.gz", b"old", yanked=True)
        spaced = upstream.add_file("fields.proj", "fields_proj-0.7+local.tar.gz", b"plus")
        client, _ = await make_proxy(upstream)
        origin = _origin(client)
        dists = {d.filename: d for d in (wheel, yanked, bare_yank, spaced)}

        page = await _json_page(client, "fields-proj")
        assert page["name"] == "fields-proj"
        assert sorted(page["versions"]) == ["0.7+local", "0.8", "0.9", "1.0"]
        entries = {f["filename"]: f for f in page["files"]}
        assert set(entries) == set(dists)
        for filename, dist in dists.items():
            entry = entries[filename]
            assert entry["url"] == f"{origin}/files/fields-proj/{quote(filename)}", entry
            parts = urlsplit(entry["url"])
            assert parts.query == "" and parts.fragment == ""
            assert entry["hashes"] == {"sha256": dist.sha256}
            assert "dist-info-metadata" not in entry
            if formats == "json":  # HTML upstreams carry no size or upload-time
                assert entry["size"] == dist.size
        w = entries[wheel.filename]
        assert w["requires-python"] == ">=3.8,<4"
        assert w["core-metadata"] == {"sha256": wheel.metadata_sha256}
        assert "yanked" not in w or w["yanked"] is False
        assert entries[yanked.filename]["yanked"] == "bad build"
        assert entries[bare_yank.filename]["yanked"] is True
        assert "core-metadata" not in entries[yanked.filename]
        if formats == "json":
            assert w["upload-time"] == "2024-01-02T03:04:05.678900Z"

        html = await _html_page(client, "fields-proj")
        links = {text: attrs for attrs, text in html.anchors}
        assert set(links) == set(dists)
        for filename, dist in dists.items():
            href = links[filename]["href"]
            assert href == f"{origin}/files/fields-proj/{quote(filename)}#sha256={dist.sha256}"
        assert links[wheel.filename]["data-requires-python"] == ">=3.8,<4"
        assert links[wheel.filename]["data-core-metadata"] == f"sha256={wheel.metadata_sha256}"
        assert "data-yanked" not in links[wheel.filename]
        assert links[yanked.filename]["data-yanked"] == "bad build"
        assert links[bare_yank.filename]["data-yanked"] == ""
        assert "data-core-metadata" not in links[yanked.filename]

        # the listed URLs serve the upstream bytes, and the metadata its own
        for filename, dist in dists.items():
            response = await client.get(f"/files/fields-proj/{quote(filename)}")
            assert response.status == 200, filename
            body = await response.read()
            assert hashlib.sha256(body).hexdigest() == dist.sha256
        response = await client.get(f"/files/fields-proj/{wheel.filename}.metadata")
        assert response.status == 200
        assert await response.read() == b"Metadata-Version: 2.1\nName: fields.proj\n"
        response = await client.get(f"/files/fields-proj/{yanked.filename}.metadata")
        assert response.status == 404


async def test_quarantined_upstream_project_offers_nothing(make_proxy: MakeProxy) -> None:
    async with FakeUpstream(formats="json") as upstream:
        dist = upstream.add_file("q-proj", "q_proj-1.0-py3-none-any.whl", b"soon bad",
                                 metadata=b"Name: q-proj\n")
        client, _ = await make_proxy(upstream, upstream_page_ttl=0)
        await _json_page(client, "q-proj")
        url = f"/files/q-proj/{dist.filename}"
        response = await client.get(url)
        assert response.status == 200 and await response.read() == b"soon bad"
        response = await client.get(url + ".metadata")
        assert response.status == 200
        file_requests = upstream.count(upstream.file_path("q-proj", dist.filename))
        assert file_requests == 1

        upstream.set_status("q-proj", "quarantined", "malware found")
        page = await _json_page(client, "q-proj")
        assert page["files"] == []
        assert page["project-status"]["status"] == "quarantined"
        assert page["project-status"].get("reason") == "malware found"
        html = await _html_page(client, "q-proj")
        assert html.anchors == []
        assert html.meta.get("pypi:project-status") == "quarantined"
        # the blob is still in the cache; it must not be served
        response = await client.get(url)
        assert response.status == 404, response.status
        response = await client.get(url + ".metadata")
        assert response.status == 404, response.status
        assert upstream.count(upstream.file_path("q-proj", dist.filename)) == file_requests


async def test_unknown_upstream_file_is_404_without_fetching(
    fake: FakeUpstream, make_proxy: MakeProxy
) -> None:
    """Only URLs learned from an upstream page are ever fetched (no open proxy)."""
    fake.add_file("bar", "bar-1.0.tar.gz", b"bar")
    client, _ = await make_proxy(fake)
    for path in ("/files/bar/bar-2.0.tar.gz", "/files/bar/bar-1.0.tar.gz.metadata",
                 "/files/nosuch/nosuch-1.0.tar.gz"):
        response = await client.get(path)
        assert response.status == 404, (path, response.status)
    assert _upstream_requests_for(fake, "/files/") == []
