"""pyproxy.formats.parse: upstream HTML and JSON answers into the model."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from pyproxy.formats.answers import JSON_TYPE, NotASimplePage, UpstreamFormatError
from pyproxy.formats.parse import find_listed_file, parse_project_page
from pyproxy.formats.project_list import parse_project_list
from pyproxy.model import DistFile, NormalizedName, Origin, ProjectPage, ProjectStatus
from tests.fake_upstream import FakeUpstream, Formats

ORIGIN = "http://127.0.0.1:8000"
PAGE = f"{ORIGIN}/simple/foo/"
OTHER_BASE = '<base href="http://127.0.0.2/x/">'
FOO = NormalizedName("foo")
HTML = "text/html"
SHA = "a" * 64
OTHER_SHA = "b" * 64


def html_page(anchors: str, head: str = "") -> bytes:
    return f"<!DOCTYPE html><html><head>{head}</head><body>{anchors}</body></html>".encode()


def parse_html(anchors: str, head: str = "") -> ProjectPage:
    return parse_project_page(html_page(anchors, head), HTML, PAGE, FOO)


def only_file(page: ProjectPage) -> DistFile:
    [dist] = page.files
    return dist


def json_page(*files: Mapping[str, Any], **extra: Any) -> bytes:
    document = {"meta": {"api-version": "1.4"}, "name": "foo", "files": list(files), **extra}
    return orjson.dumps(document)


def json_file(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": "foo-1.0.tar.gz",
        "url": "http://127.0.0.1:9000/f/foo-1.0.tar.gz",
        "hashes": {"sha256": SHA},
    }
    entry.update(overrides)
    return {key: value for key, value in entry.items() if value is not DROP}


DROP = object()  # json_file(key=DROP) removes the key


def parse_json(*files: Mapping[str, Any], **extra: Any) -> ProjectPage:
    return parse_project_page(json_page(*files, **extra), JSON_TYPE, PAGE, FOO)


# -- content types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "TEXT/HTML; charset=UTF-8",
        "application/vnd.pypi.simple.v1+html",
        "text/html;charset=utf-8",
    ],
)
def test_html_content_types(content_type: str) -> None:
    body = html_page(f'<a href="/f/foo-1.0.tar.gz#sha256={SHA}">foo-1.0.tar.gz</a>')
    assert only_file(parse_project_page(body, content_type, PAGE, FOO)).sha256 == SHA


@pytest.mark.parametrize(
    "content_type",
    [JSON_TYPE, f"{JSON_TYPE}; charset=utf-8", "Application/Vnd.Pypi.Simple.V1+JSON"],
)
def test_json_content_types(content_type: str) -> None:
    body = json_page(json_file())
    assert only_file(parse_project_page(body, content_type, PAGE, FOO)).sha256 == SHA


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "text/plain", "application/vnd.pypi.simple.v2+json", "*/*"],
)
def test_other_content_types_are_refused(content_type: str | None) -> None:
    with pytest.raises(UpstreamFormatError, match="Content-Type"):
        parse_project_page(json_page(json_file()), content_type, PAGE, FOO)
    with pytest.raises(UpstreamFormatError, match="Content-Type"):
        parse_project_list(b'{"projects": []}', content_type)


# -- HTML project pages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "head", "url"),
    [
        ("http://127.0.0.2:9000/p/foo-1.0.tar.gz", "", "http://127.0.0.2:9000/p/foo-1.0.tar.gz"),
        ("/p/foo-1.0.tar.gz", "", "http://127.0.0.1:8000/p/foo-1.0.tar.gz"),
        ("../../p/foo-1.0.tar.gz", "", "http://127.0.0.1:8000/p/foo-1.0.tar.gz"),
        ("foo-1.0.tar.gz", "", "http://127.0.0.1:8000/simple/foo/foo-1.0.tar.gz"),
        ("//127.0.0.3/p/foo-1.0.tar.gz", "", "http://127.0.0.3/p/foo-1.0.tar.gz"),
        ("foo-1.0.tar.gz?token=1", "", "http://127.0.0.1:8000/simple/foo/foo-1.0.tar.gz?token=1"),
        # <base href> is resolved against the page, then the file against it
        ("foo-1.0.tar.gz", '<base href="/files/">', "http://127.0.0.1:8000/files/foo-1.0.tar.gz"),
        ("foo-1.0.tar.gz", OTHER_BASE, "http://127.0.0.2/x/foo-1.0.tar.gz"),
        ("/abs/foo-1.0.tar.gz", OTHER_BASE, "http://127.0.0.2/abs/foo-1.0.tar.gz"),
        # only the first <base> counts, as in pip
        ("foo-1.0.tar.gz", '<base href="/a/"><base href="/b/">', f"{ORIGIN}/a/foo-1.0.tar.gz"),
    ],
)
def test_html_urls_are_absolute_and_without_fragment(href: str, head: str, url: str) -> None:
    dist = only_file(parse_html(f'<a href="{href}#sha256={SHA}">x</a>', head))
    assert dist.upstream_url == url
    assert dist.filename == "foo-1.0.tar.gz"
    assert dist.origin is Origin.UPSTREAM


@pytest.mark.parametrize(
    ("fragment", "hashes"),
    [
        (f"#sha256={SHA}", {"sha256": SHA}),
        (f"#SHA256={SHA.upper()}", {"sha256": SHA}),
        ("#md5=0123abcd", {"md5": "0123abcd"}),
        ("#sha384=ab", {"sha384": "ab"}),
        ("#sha512=cd", {"sha512": "cd"}),
        ("#blake2b_256=ef", {"blake2b_256": "ef"}),
        (f"#sha256={SHA}&egg=foo", {"sha256": SHA}),
        ("#egg=foo", {}),
        ("#unknown=zz", {}),
        ("#", {}),
        ("", {}),
    ],
)
def test_html_hash_fragments(fragment: str, hashes: dict[str, str]) -> None:
    dist = only_file(parse_html(f'<a href="/f/foo-1.0.tar.gz{fragment}">x</a>'))
    assert dict(dist.hashes) == hashes
    assert dist.upstream_url == "http://127.0.0.1:8000/f/foo-1.0.tar.gz"


@pytest.mark.parametrize("fragment", ["#sha256=not-hex", "#sha256=", "#md5=12 34"])
def test_html_digest_that_is_not_hex_is_refused(fragment: str) -> None:
    with pytest.raises(UpstreamFormatError, match=r"foo-1\.0\.tar\.gz.*not hex"):
        parse_html(f'<a href="/f/foo-1.0.tar.gz{fragment}">x</a>')


@pytest.mark.parametrize(
    ("attribute", "requires_python"),
    [
        ('data-requires-python="&gt;=3.8"', ">=3.8"),
        ('data-requires-python="&gt;=3.8,&lt;4"', ">=3.8,<4"),
        ('data-requires-python="&gt;=3.8,!=3.9.*"', ">=3.8,!=3.9.*"),
        ("data-requires-python='>=3.6'", ">=3.6"),  # unescaped, as sloppy servers write it
        ('data-requires-python=" &gt;=3.7 "', ">=3.7"),
        ('data-requires-python=""', None),
        ("", None),
    ],
)
def test_html_requires_python(attribute: str, requires_python: str | None) -> None:
    dist = only_file(parse_html(f'<a href="/f/foo-1.0.tar.gz" {attribute}>x</a>'))
    assert dist.requires_python == requires_python


@pytest.mark.parametrize(
    ("attribute", "yanked", "reason"),
    [
        ("", False, ""),
        ("data-yanked", True, ""),
        ('data-yanked=""', True, ""),
        ('data-yanked="broken build"', True, "broken build"),
        ('data-yanked="use &lt;2.0&gt; &amp; more"', True, "use <2.0> & more"),
        ("DATA-YANKED=bad", True, "bad"),
    ],
)
def test_html_yanked(attribute: str, yanked: bool, reason: str) -> None:
    dist = only_file(parse_html(f'<a href="/f/foo-1.0.tar.gz" {attribute}>x</a>'))
    assert (dist.yanked, dist.yanked_reason) == (yanked, reason)


@pytest.mark.parametrize(
    ("attributes", "core_metadata"),
    [
        ("", False),
        ('data-core-metadata="true"', True),
        (f'data-core-metadata="sha256={SHA}"', {"sha256": SHA}),
        (f'data-core-metadata="SHA256={SHA.upper()}"', {"sha256": SHA}),
        (f'data-dist-info-metadata="sha256={SHA}"', {"sha256": SHA}),
        ('data-dist-info-metadata="true"', True),
        # PEP 714: the new name wins when both are present
        (
            f'data-core-metadata="sha256={SHA}" data-dist-info-metadata="sha256={OTHER_SHA}"',
            {"sha256": SHA},
        ),
        # "false" is outside the spec and plainly means "none"; other odd values mean "offered"
        ('data-core-metadata="false"', False),
        ('data-dist-info-metadata="FALSE"', False),
        ('data-core-metadata=""', True),
        ("data-core-metadata", True),
        ('data-core-metadata="yes"', True),
    ],
)
def test_html_core_metadata(attributes: str, core_metadata: object) -> None:
    dist = only_file(parse_html(f'<a href="/f/foo-1.0.tar.gz" {attributes}>x</a>'))
    assert dist.core_metadata == core_metadata


def test_html_core_metadata_digest_that_is_not_hex_is_refused() -> None:
    with pytest.raises(UpstreamFormatError, match="metadata"):
        parse_html('<a href="/f/foo-1.0.tar.gz" data-core-metadata="sha256=xyz">x</a>')


@pytest.mark.parametrize(
    "anchor",
    [
        "<a>no href</a>",
        '<a href="">empty</a>',
        '<a href="/simple/">directory</a>',
        '<a href="#top">fragment only</a>',
        '<a href="mailto:someone@127.0.0.1">mail</a>',
        '<a href="javascript:alert(1)">script</a>',
        '<a href="file:///etc/passwd">local</a>',
        '<a href="data:text/plain,foo-1.0.tar.gz">data</a>',
        '<a href="/f/..%2Fsecret-1.0.tar.gz">encoded slash</a>',
        '<a href="/f/%2E%2E">dots</a>',
        '<a href="/f/foo%00-1.0.tar.gz">control character</a>',
        '<a href="http://[::1/f/foo-1.0.tar.gz">bad host</a>',
    ],
)
def test_html_anchors_that_are_not_files_are_skipped(anchor: str) -> None:
    page = parse_html(anchor + '<a href="/f/foo-2.0.tar.gz">foo-2.0.tar.gz</a>')
    assert [dist.filename for dist in page.files] == ["foo-2.0.tar.gz"]


def test_html_filename_comes_from_the_url_percent_decoded() -> None:
    page = parse_html('<a href="/f/foo-1.0%2Blocal.tar.gz">whatever the text says</a>')
    assert only_file(page).filename == "foo-1.0+local.tar.gz"
    assert only_file(page).upstream_url == "http://127.0.0.1:8000/f/foo-1.0%2Blocal.tar.gz"


def test_html_duplicate_filename_keeps_the_first() -> None:
    page = parse_html(
        f'<a href="/a/foo-1.0.tar.gz#sha256={SHA}">1</a>'
        f'<a href="/b/foo-1.0.tar.gz#sha256={OTHER_SHA}" data-yanked>2</a>'
    )
    dist = only_file(page)
    assert (dist.sha256, dist.yanked) == (SHA, False)
    assert dist.upstream_url == "http://127.0.0.1:8000/a/foo-1.0.tar.gz"


def test_html_versions_come_from_filenames() -> None:
    page = parse_html(
        '<a href="/f/foo-1.0.tar.gz">a</a><a href="/f/foo-1.0-py3-none-any.whl">b</a>'
        '<a href="/f/foo-2.0rc1-py3-none-any.whl">c</a><a href="/f/notes.txt">d</a>'
    )
    assert page.versions == ("1.0", "2.0rc1")
    assert page.revision == ""


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ('<meta name="pypi:repository-version" content="1.0">', ProjectStatus()),
        ('<meta name="pypi:project-status" content="archived">', ProjectStatus("archived")),
        (
            '<meta name="pypi:project-status" content="quarantined">'
            '<meta name="pypi:project-status-reason" content="malware &amp; worse">',
            ProjectStatus("quarantined", "malware & worse"),
        ),
        ('<META NAME="PyPI:Project-Status" CONTENT=" Deprecated ">', ProjectStatus("deprecated")),
        ('<meta name="pypi:project-status" content="">', ProjectStatus()),
    ],
)
def test_html_project_status(head: str, status: ProjectStatus) -> None:
    assert parse_html("", head).status == status


@pytest.mark.parametrize("version", ["1.0", "1.4", "1.99", " 1.1 "])
def test_html_repository_version_1_is_accepted(version: str) -> None:
    head = f'<meta name="pypi:repository-version" content="{version}">'
    assert parse_html('<a href="/f/foo-1.0.tar.gz">x</a>', head).files


@pytest.mark.parametrize("version", ["2.0", "0.9", "one", ""])
def test_html_other_repository_versions_are_refused(version: str) -> None:
    head = f'<meta name="pypi:repository-version" content="{version}">'
    with pytest.raises(UpstreamFormatError, match="version"):
        parse_html('<a href="/f/foo-1.0.tar.gz">x</a>', head)


def test_sloppy_html_is_read() -> None:
    body = (
        b"<HTML><BODY><H1>Links for foo</h1>\n"
        b"<A HREF=/f/foo-1.0.tar.gz#sha256=" + SHA.encode() + b" DATA-REQUIRES-PYTHON=&gt;=3.8>"
        b"foo-1.0"
        b"<a href='/f/foo-2.0.tar.gz' data-yanked>foo-2.0</a>\n"
        b"<!-- <a href='/f/commented-1.0.tar.gz'>x</a> -->"
        b"<p><a href=/f/foo-3.0.tar.gz>&eacute;&nbsp;&bogus;</a>"
    )
    page = parse_project_page(body, HTML, PAGE, FOO)
    assert [dist.filename for dist in page.files] == [
        "foo-1.0.tar.gz",
        "foo-2.0.tar.gz",
        "foo-3.0.tar.gz",
    ]
    assert page.files[0].sha256 == SHA and page.files[0].requires_python == ">=3.8"
    assert page.files[1].yanked


def test_html_charset_from_the_content_type() -> None:
    body = '<a href="/f/caf\u00e9-1.0.tar.gz">x</a>'.encode("latin-1")
    page = parse_project_page(body, "text/html; charset=ISO-8859-1", PAGE, FOO)
    assert only_file(page).filename == "caf\u00e9-1.0.tar.gz"
    # no charset: UTF-8, as pip assumes; a wrong guess garbles bytes rather than failing
    assert parse_project_page(body, HTML, PAGE, FOO).files


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_html_is_refused(body: bytes) -> None:
    with pytest.raises(UpstreamFormatError, match="empty"):
        parse_project_page(body, HTML, PAGE, FOO)


MARKER = '<meta name="pypi:repository-version" content="1.0">'


def test_html_without_anchors_is_an_empty_page_when_it_declares_a_version() -> None:
    page = parse_html("<p>nothing yet</p>", MARKER)
    assert (page.files, page.versions, page.name) == ((), (), "foo")


@pytest.mark.parametrize(
    "body",
    [
        "<h1>Down for maintenance</h1><p>Back soon.</p>",
        '<h1>Access denied</h1><a href="/login">Sign in</a> or <a href="/help/">get help</a>',
        '<a href="https://proxy.example.test/blocked?url=x">why?</a>',
    ],
    ids=["maintenance", "login", "block"],
)
def test_html_that_is_no_simple_page_is_refused(body: str) -> None:
    """A proxy's maintenance, login or block page answered with 200 is not an empty project."""
    with pytest.raises(NotASimplePage, match="no pypi:repository-version marker"):
        parse_html(body)
    with pytest.raises(NotASimplePage, match="links no project page"):
        parse_project_list(html_page(body), HTML)


def test_html_without_the_marker_but_with_distribution_links_is_a_page() -> None:
    """Old indexes declare no version: a link to a distribution file is enough."""
    page = parse_html('<a href="/login">Sign in</a><a href="/f/foo-1.0.tar.gz">foo</a>')
    assert [dist.filename for dist in page.files] == ["login", "foo-1.0.tar.gz"]
    for anchors in ('<a href="/foo/">foo</a>', "<a href='Foo_Bar'>Foo.Bar</a>",
                    '<a href="/root/pypi/+simple/foo/#x">Foo</a><a href="/login">Sign in</a>'):
        assert parse_project_list(html_page(anchors), HTML).names


def test_require_marker_refuses_html_without_it() -> None:
    """From an upstream known to answer JSON, HTML must declare its version to count."""
    body = html_page('<a href="/f/foo-1.0.tar.gz">foo</a>')
    with pytest.raises(NotASimplePage, match="answers JSON"):
        parse_project_page(body, HTML, PAGE, FOO, require_marker=True)
    with pytest.raises(NotASimplePage, match="answers JSON"):
        parse_project_list(body, HTML, require_marker=True)
    marked = html_page('<a href="/f/foo-1.0.tar.gz">foo</a>', MARKER)
    assert parse_project_page(marked, HTML, PAGE, FOO, require_marker=True).files
    assert parse_project_page(json_page(), JSON_TYPE, PAGE, FOO, require_marker=True).files == ()


# -- JSON project pages ---------------------------------------------------------------------------


def test_json_file_with_every_field() -> None:
    page = parse_json(
        json_file(
            filename="foo-1.0-py3-none-any.whl",
            url="https://127.0.0.1:9000/f/foo-1.0-py3-none-any.whl#sha256=ignored",
            hashes={"SHA256": SHA.upper(), "md5": "0a"},
            size=1234,
            **{
                "upload-time": "2024-01-02T03:04:05.123456Z",
                "requires-python": ">=3.8,<4",
                "yanked": "broken",
                "core-metadata": {"sha256": OTHER_SHA},
                "gpg-sig": False,
                "provenance": None,
                "_private": 1,
            },
        ),
        versions=["0.9", "1.0"],
        **{"project-status": {"status": "archived", "reason": "done"}},
    )
    assert page == ProjectPage(
        name=FOO,
        files=(
            DistFile(
                filename="foo-1.0-py3-none-any.whl",
                hashes={"sha256": SHA, "md5": "0a"},
                size=1234,
                upload_time=datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
                requires_python=">=3.8,<4",
                yanked=True,
                yanked_reason="broken",
                core_metadata={"sha256": OTHER_SHA},
                origin=Origin.UPSTREAM,
                upstream_url="https://127.0.0.1:9000/f/foo-1.0-py3-none-any.whl",
            ),
        ),
        versions=("0.9", "1.0"),
        status=ProjectStatus("archived", "done"),
        revision="",
    )


def test_json_minimal_file() -> None:
    dist = only_file(parse_json(json_file(hashes=DROP)))
    assert dist == DistFile(
        filename="foo-1.0.tar.gz",
        hashes={},
        origin=Origin.UPSTREAM,
        upstream_url="http://127.0.0.1:9000/f/foo-1.0.tar.gz",
    )


@pytest.mark.parametrize(
    ("url", "absolute"),
    [
        ("foo-1.0.tar.gz", "http://127.0.0.1:8000/simple/foo/foo-1.0.tar.gz"),
        ("../../f/foo-1.0.tar.gz", "http://127.0.0.1:8000/f/foo-1.0.tar.gz"),
        ("/f/foo-1.0.tar.gz#md5=00", "http://127.0.0.1:8000/f/foo-1.0.tar.gz"),
    ],
)
def test_json_relative_urls(url: str, absolute: str) -> None:
    assert only_file(parse_json(json_file(url=url))).upstream_url == absolute


@pytest.mark.parametrize(
    ("yanked", "expected"),
    [
        (True, (True, "")),
        (False, (False, "")),
        ("bad", (True, "bad")),
        ("", (False, "")),  # a reason string is yanked only when non-empty (spec: truthy)
        (None, (False, "")),
    ],
)
def test_json_yanked(yanked: object, expected: tuple[bool, str]) -> None:
    dist = only_file(parse_json(json_file(yanked=yanked)))
    assert (dist.yanked, dist.yanked_reason) == expected


@pytest.mark.parametrize(
    ("fields", "core_metadata"),
    [
        ({}, False),
        ({"core-metadata": True}, True),
        ({"core-metadata": False}, False),
        ({"core-metadata": None}, False),
        ({"core-metadata": {}}, True),
        ({"core-metadata": {"SHA256": SHA.upper()}}, {"sha256": SHA}),
        ({"dist-info-metadata": {"sha256": SHA}}, {"sha256": SHA}),
        ({"dist-info-metadata": True}, True),
        ({"data-dist-info-metadata": {"sha256": SHA}}, {"sha256": SHA}),
        (
            {"core-metadata": {"sha256": SHA}, "dist-info-metadata": {"sha256": OTHER_SHA}},
            {"sha256": SHA},
        ),
        ({"core-metadata": False, "dist-info-metadata": True}, False),
    ],
)
def test_json_core_metadata(fields: dict[str, Any], core_metadata: object) -> None:
    assert only_file(parse_json(json_file(**fields))).core_metadata == core_metadata


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.5Z", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2024-01-02T05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # naive: read as UTC
        ("yesterday", None),  # unreadable: dropped, the file is kept
        ("", None),
        (None, None),
    ],
)
def test_json_upload_time(text: str | None, moment: datetime | None) -> None:
    dist = only_file(parse_json(json_file(**{"upload-time": text})))
    assert dist.upload_time == moment
    if moment is not None:
        assert dist.upload_time is not None and dist.upload_time.utcoffset() == timedelta(0)
        assert dist.upload_time.tzinfo in (UTC, UTC)


def test_versions_are_read_with_the_pages_project_name() -> None:
    # as pip reads them: "foo-2.0-1" is foo 2.0.post1; a file named for another project has no version of foo
    names = ["foo-2.0-1.tar.gz", "Foo-3.0-2.zip", "foo-4.0-1.tar.bz2", "bar-5.0.tar.gz", "foo-6.0-1-py3-none-any.whl"]
    html = parse_html("".join(f'<a href="/f/{name}">{name}</a>' for name in names))
    json = parse_json(*(json_file(filename=name, url=f"http://127.0.0.1:9000/f/{name}") for name in names))
    for page in (html, json):
        assert [dist.version for dist in page.files] == ["2.0.post1", "3.0.post2", "4.0.post1", None, "6.0"]
        assert page.versions == ("2.0.post1", "3.0.post2", "4.0.post1", "6.0")


def test_json_versions_merge_with_file_versions() -> None:
    page = parse_json(json_file(filename="foo-2.0.tar.gz"), versions=["1.0", "2.0", "3.0"])
    assert page.versions == ("1.0", "2.0", "3.0")


def test_json_duplicate_filename_keeps_the_first() -> None:
    second = json_file(url="http://127.0.0.1:9000/g/foo-1.0.tar.gz", yanked=True)
    page = parse_json(json_file(), second)
    assert only_file(page).upstream_url == "http://127.0.0.1:9000/f/foo-1.0.tar.gz"
    assert not only_file(page).yanked


@pytest.mark.parametrize(
    ("project_status", "status"),
    [
        (None, ProjectStatus()),
        ({"status": "quarantined"}, ProjectStatus("quarantined")),
        ({"status": "deprecated", "reason": "use bar"}, ProjectStatus("deprecated", "use bar")),
        ({"status": None}, ProjectStatus()),
        ({}, ProjectStatus()),
    ],
)
def test_json_project_status(project_status: object, status: ProjectStatus) -> None:
    assert parse_json(**{"project-status": project_status}).status == status


@pytest.mark.parametrize("version", ["1.0", "1.4", "1.17"])
def test_json_api_version_1_is_accepted(version: str) -> None:
    body = orjson.dumps({"meta": {"api-version": version}, "files": []})
    assert parse_project_page(body, JSON_TYPE, PAGE, FOO).files == ()


def test_json_without_meta_is_read_as_1_0() -> None:
    assert parse_project_page(b'{"files": []}', JSON_TYPE, PAGE, FOO).files == ()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "cannot be parsed"),
        (b"<html></html>", "cannot be parsed"),
        (b'{"files": [', "cannot be parsed"),
        (b"\xff\xfe{}", "cannot be parsed"),
        (b"[]", "is a array, not an object"),
        (b'"files"', "not an object"),
        (b"null", "not an object"),
        (b'{"meta": [], "files": []}', "'meta'"),
        (b'{"meta": {"api-version": "2.0"}, "files": []}', "api-version '2.0'"),
        (b'{"meta": {"api-version": 1.0}, "files": []}', "api-version"),
        (b'{"meta": {"api-version": "latest"}, "files": []}', "api-version"),
        (b'{"name": "foo"}', "'files' is a null"),
        (b'{"files": {}}', "'files' is a object"),
        (b'{"files": ["foo-1.0.tar.gz"]}', r"files\[0\] is a string"),
        (b'{"files": [], "versions": "1.0"}', "'versions'"),
        (b'{"files": [], "versions": [1.0]}', r"versions\[0\]"),
        (b'{"files": [], "project-status": "archived"}', "'project-status'"),
        (b'{"files": [], "project-status": {"status": 1}}', "project-status.status"),
    ],
)
def test_malformed_json_pages(body: bytes, problem: str) -> None:
    with pytest.raises(UpstreamFormatError, match=problem) as raised:
        parse_project_page(body, JSON_TYPE, PAGE, FOO)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"filename": DROP}, r"files\[0\].filename is a null"),
        ({"filename": 3}, r"files\[0\].filename is a number"),
        ({"filename": ""}, "not a plain file name"),
        ({"filename": "../foo-1.0.tar.gz"}, "not a plain file name"),
        ({"filename": "a\\b.tar.gz"}, "not a plain file name"),
        ({"url": DROP}, "'url' is a null"),
        ({"url": ["x"]}, "'url' is a array"),
        ({"url": "ftp://127.0.0.1/foo-1.0.tar.gz"}, "not an http"),
        ({"url": "file:///etc/passwd"}, "not an http"),
        ({"hashes": ["sha256", SHA]}, "'hashes' is a array"),
        ({"hashes": None}, "'hashes' is a null"),
        ({"hashes": {"sha256": 5}}, "hash 'sha256' is a number"),
        ({"hashes": {"sha256": "xyz"}}, "not hex"),
        ({"hashes": {"sha256": ""}}, "not hex"),
        ({"size": "12"}, "'size' is a string"),
        ({"size": True}, "'size' is a boolean"),
        ({"size": 1.5}, "'size' is a number"),
        ({"size": -1}, "negative"),
        ({"requires-python": 3}, "'requires-python'"),
        ({"yanked": 1}, "'yanked' is a number"),
        ({"upload-time": 1700000000}, "'upload-time'"),
        ({"core-metadata": "true"}, "'core-metadata' is a string"),
        ({"core-metadata": {"sha256": "zz"}}, "not hex"),
        ({"core-metadata": {"sha256": None}}, "hash 'sha256' is a null"),
    ],
)
def test_malformed_json_files(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(UpstreamFormatError, match=problem):
        parse_json(json_file(**overrides))


# -- round trip through the fake upstream ---------------------------------------------------------

WHEEL = "foo_bar-1.0-py3-none-any.whl"
SDIST = "foo_bar-0.9.tar.gz"
WHEEL_BODY = b"a wheel" * 100
METADATA = b"Metadata-Version: 2.1\nName: foo-bar\nVersion: 1.0\n"
UPLOADED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("formats", "relative"), [("json", False), ("html", False), ("json", True), ("html", True)]
)
async def test_round_trip_through_the_fake_upstream(formats: Formats, relative: bool) -> None:
    async with FakeUpstream(formats=formats, relative_file_urls=relative) as upstream:
        upstream.add_file(
            "Foo.Bar",
            WHEEL,
            WHEEL_BODY,
            requires_python=">=3.8,<4",
            metadata=METADATA,
            upload_time=UPLOADED,
        )
        upstream.add_file("foo-bar", SDIST, b"sdist", yanked="broken <build>")
        upstream.set_status("foo-bar", "deprecated", "use baz")
        async with aiohttp.ClientSession() as session:
            async with session.get(upstream.page_url("foo-bar")) as response:
                page = parse_project_page(
                    await response.read(),
                    response.headers.get("Content-Type"),
                    str(response.url),
                    NormalizedName("foo-bar"),
                )
            async with session.get(upstream.index_url) as response:
                projects = parse_project_list(
                    await response.read(), response.headers.get("Content-Type")
                )
            wheel, sdist = page.files
            async with session.get(wheel.upstream_url or "") as response:
                assert await response.read() == WHEEL_BODY
            async with session.get(f"{wheel.upstream_url}.metadata") as response:
                assert await response.read() == METADATA

    assert projects.names == ("Foo.Bar",)
    assert page.name == "foo-bar" and sorted(page.versions) == ["0.9", "1.0"]
    assert page.status == ProjectStatus("deprecated", "use baz")
    is_json = formats == "json"
    assert wheel == DistFile(
        filename=WHEEL,
        hashes={"sha256": hashlib.sha256(WHEEL_BODY).hexdigest()},
        size=len(WHEEL_BODY) if is_json else None,
        upload_time=UPLOADED if is_json else None,
        requires_python=">=3.8,<4",
        core_metadata={"sha256": hashlib.sha256(METADATA).hexdigest()},
        origin=Origin.UPSTREAM,
        upstream_url=upstream.file_url("foo-bar", WHEEL),
    )
    assert (sdist.filename, sdist.yanked, sdist.yanked_reason) == (SDIST, True, "broken <build>")
    assert sdist.core_metadata is False


# -- PEP 740 provenance ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("http://127.0.0.1:9000/integrity/foo/1.0/foo-1.0.tar.gz/provenance",
         "http://127.0.0.1:9000/integrity/foo/1.0/foo-1.0.tar.gz/provenance"),
        ("../../integrity/foo/1.0/foo-1.0.tar.gz/provenance",
         f"{ORIGIN}/integrity/foo/1.0/foo-1.0.tar.gz/provenance"),  # against the page URL
        (None, None),
        ("", None),
        ("file:///etc/passwd", None),  # pyproxy would fetch it: http(s) only
    ],
)
def test_json_provenance(value: str | None, url: str | None) -> None:
    dist = only_file(parse_json(json_file(provenance=value)))
    assert (dist.provenance, dist.provenance_url) == (url is not None, url)


def test_json_provenance_of_another_type_is_refused() -> None:
    with pytest.raises(UpstreamFormatError, match="'provenance'"):
        parse_json(json_file(provenance=7))


@pytest.mark.parametrize(
    ("attribute", "url"),
    [
        (' data-provenance="/p/foo-1.0.tar.gz.provenance"',
         f"{ORIGIN}/p/foo-1.0.tar.gz.provenance"),
        (' data-provenance=""', None),
        ("", None),
        (' data-provenance="javascript:alert(1)"', None),
    ],
)
def test_html_provenance(attribute: str, url: str | None) -> None:
    dist = only_file(parse_html(f'<a href="/f/foo-1.0.tar.gz"{attribute}>foo-1.0.tar.gz</a>'))
    assert (dist.provenance, dist.provenance_url) == (url is not None, url)


# -- one file of a stored page --------------------------------------------------------------------

_TRICKY_HTML = html_page(
    f'<a href="a/foo-1.0.tar.gz#sha256={SHA}" data-requires-python="&gt;=3.8">1</a>'
    f'<a href="/b/foo-1.0.tar.gz#sha256={OTHER_SHA}" data-yanked>duplicate: the first wins</a>'
    '<a href="http://127.0.0.3/c/foo-1.1%2Blocal-py3-none-any.whl" data-core-metadata="true"'
    ' data-provenance="http://127.0.0.4/p/foo.provenance">2</a>'
    '<a href="../..">not a file</a><a href="javascript:alert(1)">nor this</a>'
    '<a href="mailto:someone@example.test">nor this</a><a href="?page=2">nor this</a>'
    '<a href="d/foo-2.0.zip" data-yanked="broken">3</a>',
    OTHER_BASE + '<meta name="pypi:project-status" content="archived">',
)
_TRICKY_JSON = json_page(
    json_file(url="f/foo-1.0.tar.gz", size=10, **{"upload-time": "2024-05-06T07:08:09Z"}),
    json_file(url="/g/foo-1.0.tar.gz", hashes={"sha256": OTHER_SHA}),
    json_file(filename="foo-1.1-py3-none-any.whl", url="http://127.0.0.3/w/foo-1.1-py3-none-any.whl",
              provenance="http://127.0.0.4/p/foo.provenance", **{"core-metadata": {"sha256": SHA}}),
    json_file(filename="foo-2.0.tar.gz", url="foo-2.0.tar.gz", yanked="broken"),
    **{"project-status": {"status": "quarantined", "reason": "malware"}},
)


@pytest.mark.parametrize(("body", "content_type"), [(_TRICKY_HTML, HTML), (_TRICKY_JSON, JSON_TYPE)],
                         ids=["html", "json"])
def test_one_file_of_a_page_is_the_file_the_whole_page_lists(
    body: bytes, content_type: str
) -> None:
    page = parse_project_page(body, content_type, PAGE, FOO)
    links = {dist.upstream_url for dist in page.files} | {
        dist.provenance_url for dist in page.files if dist.provenance_url
    }
    directories = {str(url).rpartition("/")[0] for url in links}
    assert len(page.files) == 3
    for name in [dist.filename for dist in page.files] + ["foo-9.9.tar.gz"]:
        listed = find_listed_file(body, content_type, PAGE, name)
        assert listed.dist == page.file(name)
        assert listed.status == page.status
        assert listed.directories == directories


def test_one_file_of_a_page_that_does_not_parse_is_an_error() -> None:
    with pytest.raises(UpstreamFormatError):
        find_listed_file(b"[1, 2]", JSON_TYPE, PAGE, "foo-1.0.tar.gz")
    with pytest.raises(UpstreamFormatError):
        find_listed_file(json_page({"filename": ["not", "a", "name"]}), JSON_TYPE, PAGE, "x")
