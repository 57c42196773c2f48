"""pyproxy.formats.project_list: the upstream project list read as it streams, chunk by chunk.

The rules are those of formats/parse.py (tests/formats/test_parse.py checks the shared ones
on whole bodies); here: the same names whatever the chunking, names split across chunks,
garbage refused with a clear one-line reason, and memory that does not grow with the list.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import orjson
import pytest

from pyproxy.formats.answers import JSON_TYPE, NotASimplePage, UpstreamFormatError
from pyproxy.formats.project_list import MAX_ELEMENT_BYTES, parse_project_list, read_project_list

HTML = "text/html"
MARKER = '<meta name="pypi:repository-version" content="1.4">'


def html_page(anchors: str, head: str = MARKER) -> bytes:
    return f"<!DOCTYPE html><html><head>{head}</head><body>{anchors}</body></html>".encode()


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[at : at + size] for at in range(0, len(body), size)]


def read(body: bytes, content_type: str, size: int = 7, **options: bool) -> list[str]:
    return list(read_project_list(chunked(body, size), content_type, **options))


# -- whole lists ----------------------------------------------------------------------------------


def test_html_project_list() -> None:
    body = html_page(
        '<a href="/simple/foo/">foo</a>\n<a href="/simple/bar-baz/"> Bar_Baz </a>'
        '<a href="/simple/empty/">  </a><a href="/simple/amp/">a&amp;b</a><a><b>Nested</b>Name</a>'
    )
    assert parse_project_list(body, HTML).names == ("foo", "Bar_Baz", "a&b", "NestedName")


def test_json_project_list() -> None:
    projects = [{"name": "Foo"}, {"name": "bar", "_x": 1}, {"name": " "}]
    body = orjson.dumps({"meta": {"api-version": "1.4", "_last-serial": 5}, "projects": projects})
    assert parse_project_list(body, JSON_TYPE).names == ("Foo", "bar")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 1 << 20])
@pytest.mark.parametrize("kind", ["html", "json"])
def test_every_chunking_reads_the_same_names(kind: str, size: int) -> None:
    """Names, escapes, numbers and non-ASCII text cut anywhere between chunks are read whole."""
    names = ["Foo", "zope.interface", "naïve-ñame", "名前", 'quo"te', "a\\b", "x" * 300]
    if kind == "json":
        projects = [{"name": n, "_last-serial": 12345678 + i} for i, n in enumerate(names)]
        body = orjson.dumps({"projects": projects, "meta": {"api-version": "1.4"}})
        body = body.replace(b",", b" ,\n ")  # white space wherever JSON allows it
        content_type = JSON_TYPE
    else:
        body = html_page("".join(f'<a href="/simple/{i}/">{n.replace("&", "&amp;")}</a>'
                                 for i, n in enumerate(names)))
        content_type = HTML
    assert read(body, content_type, size) == names


def test_json_keys_in_any_order_and_unknown_keys_skipped() -> None:
    body = b'{"_x": {"deep": [1, {"a": "]}"}]}, "projects": [{"name": "a"}], "meta": {}, "z": null}'
    assert read(body, JSON_TYPE, 3) == ["a"]


def test_an_empty_list_is_a_list() -> None:
    assert read(b'{"meta": {"api-version": "1.0"}, "projects": []}', JSON_TYPE) == []
    assert read(b"{}" if False else b'{"projects":[]}', JSON_TYPE) == []


def test_html_in_another_charset() -> None:
    body = html_page('<a href="/simple/cafe/">Café</a>').replace("é".encode(), "é".encode("latin-1"))
    assert read(body, f"{HTML}; charset=latin-1", 3) == ["Café"]


# -- garbage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"[]", "is a array, not an object"),
        (b'"projects"', "is a string, not an object"),
        (b'{"projects": {}}', "'projects' is a object"),
        (b'{"meta": {}}', "'projects' is a null"),
        (b'{"meta": [], "projects": []}', "'meta' is a array"),
        (b'{"meta": {"api-version": "2.0"}, "projects": []}', "api-version"),
        (b'{"projects": [], "meta": {"api-version": "2.0"}}', "api-version"),
        (b'{"projects": ["foo"]}', r"projects\[0\] is a string"),
        (b'{"projects": [{"name": "a"}, {"title": "foo"}]}', r"projects\[1\].name is a null"),
        (b'{"projects": [{"name": 7}]}', r"projects\[0\].name is a number"),
        (b'{"projects": [{"name": "a"}', "ends where"),
        (b'{"projects": [{"name": "a"} {"name": "b"}]}', '"," or "]" expected'),
        (b'{"projects": [{"name": "a"},]}', "cannot be parsed"),
        (b'{"projects": [], }', "cannot be parsed"),
        (b'{"projects": []} trailing', "more after the object"),
        (b'{"projects": [{"name": "\xff"}]}', "cannot be parsed"),
        (b"<html><body>Down for maintenance</body></html>", "cannot be parsed"),
    ],
)
def test_malformed_json_lists_are_refused(body: bytes, problem: str) -> None:
    for size in (1, 4, 1 << 20):
        with pytest.raises(UpstreamFormatError, match=problem):
            read(body, JSON_TYPE, size)


def test_a_json_value_past_the_bound_is_refused_not_buffered() -> None:
    huge = b'{"projects": [{"name": "' + b"a" * (MAX_ELEMENT_BYTES + 10) + b'"}]}'
    with pytest.raises(UpstreamFormatError, match="longer than"):
        read(huge, JSON_TYPE, 64 * 1024)


@pytest.mark.parametrize(
    "body",
    [
        "<h1>Down for maintenance</h1><p>Back soon.</p>",
        '<h1>Access denied</h1><a href="/login">Sign in</a> or <a href="/help/">get help</a>',
    ],
)
def test_html_that_is_no_simple_root_is_refused(body: str) -> None:
    with pytest.raises(NotASimplePage, match="links no project page"):
        read(html_page(body, head=""), HTML)


def test_html_without_marker_needs_a_project_link_and_from_a_json_upstream_the_marker() -> None:
    unmarked = html_page('<a href="/login">Sign in</a><a href="/simple/foo/">Foo</a>', head="")
    assert read(unmarked, HTML) == ["Sign in", "Foo"]
    with pytest.raises(NotASimplePage, match="answers JSON"):
        read(unmarked, HTML, require_marker=True)
    assert read(html_page('<a href="/simple/foo/">Foo</a>'), HTML, require_marker=True) == ["Foo"]


def test_html_of_another_major_version_is_refused() -> None:
    body = html_page("<a href=/simple/foo/>foo</a>", '<meta name="pypi:repository-version" content="2.0">')
    with pytest.raises(UpstreamFormatError, match="unsupported upstream api-version"):
        read(body, HTML)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain"])
def test_other_content_types_are_refused(content_type: str | None) -> None:
    with pytest.raises(UpstreamFormatError, match="Content-Type"):
        read(b'{"projects": []}', content_type)  # type: ignore[arg-type]


# -- memory ---------------------------------------------------------------------------------------


def _generated(kind: str, count: int) -> Iterator[bytes]:
    """A list of `count` names, generated 1,000 names per chunk (never whole in memory)."""
    if kind == "json":
        yield b'{"meta": {"api-version": "1.4"}, "projects": ['
    else:
        yield html_page("", MARKER).split(b"<body>")[0] + b"<body>\n"
    for start in range(0, count, 1000):
        if kind == "json":
            part = ",".join(f'{{"name": "Project_{i}", "_last-serial": {i}}}' for i in range(start, start + 1000))
            yield (("," if start else "") + part).encode()
        else:
            yield "".join(f'<a href="/simple/project-{i}/">Project_{i}</a><br/>\n'
                          for i in range(start, start + 1000)).encode()
    yield b"]}" if kind == "json" else b"</body></html>"


@pytest.mark.parametrize("kind", ["html", "json"])
def test_memory_does_not_grow_with_the_list(kind: str) -> None:
    """200,000 names pass through a few hundred KiB of parser state at most."""
    content_type = JSON_TYPE if kind == "json" else HTML
    tracemalloc.start()
    try:
        count = 0
        for name in read_project_list(_generated(kind, 200_000), content_type):
            count += 1
            assert name.startswith("Project_")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
