"""An upstream project list (the `/simple/` root, PEP 503 HTML or PEP 691 JSON), read as it
streams: chunks in, display names out, never the whole body or all names in memory.

A real index lists about a million names (tens of megabytes), so `read_project_list` is a
generator over byte chunks that yields each name as soon as it is read; the caller writes them
away (stores/project_list.py) and must throw away what it wrote when the generator raises
UpstreamFormatError, which it may do only at the end (a refused version, or HTML that is no
simple page, is known only once the whole body is read). The rules are formats/parse.py's: a
body that does not parse, a wrong JSON type, api-version 2+, an unknown media type, and HTML
that neither declares `pypi:repository-version` nor links a project page are refused.

HTML goes through lxml's push parser with a target (no tree). JSON is scanned: the outer
object's keys one by one, and the `projects` array element by element with the stdlib's C
scanner (`raw_decode`), so a name split across two chunks is read once the next arrives.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from lxml import etree

from pyproxy.formats.answers import (
    JSON_TYPE,
    NotASimplePage,
    UpstreamFormatError,
    check_api_version,
    expect_json,
    split_content_type,
)
from pyproxy.model import ProjectList, normalize

__all__ = ["MAX_ELEMENT_BYTES", "parse_project_list", "read_project_list"]

# one JSON value other than the projects array (meta, or a key pyproxy does not know), or one
# element of it, may take this much; more is refused rather than buffered
MAX_ELEMENT_BYTES = 4 * 1024 * 1024


def read_project_list(
    chunks: Iterable[bytes], content_type: str | None, *, require_marker: bool = False
) -> Iterator[str]:
    """The display names of the list, stripped, empty ones dropped, in upstream order
    (duplicates kept: the caller keeps the first of each normalised name)."""
    media_type, charset = split_content_type(content_type)
    if media_type == JSON_TYPE:
        return _JsonList(chunks).names()
    return _html_names(chunks, charset, require_marker)


def parse_project_list(
    body: bytes, content_type: str | None, *, require_marker: bool = False
) -> ProjectList:
    """A short list (a test's, an import's) read whole into memory: `read_project_list`'s
    names in upstream order, duplicates kept."""
    names = read_project_list([body], content_type, require_marker=require_marker)
    return ProjectList(tuple(names))


# -- HTML ----------------------------------------------------------------------------------------


class _Anchors:
    """lxml parser target: the text of each <a>, whether one names the page it links, and the
    first content of each <meta name>."""

    def __init__(self) -> None:
        self.names: list[str] = []  # read since the caller last took them
        self.meta: dict[str, str] = {}
        self.links_a_project = False
        self._href: str | None = None
        self._text: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == "a":
            self._href, self._text = attrib.get("href") or "", []
        elif tag == "meta":
            meta_name, content = attrib.get("name"), attrib.get("content")
            if meta_name is not None and content is not None:
                self.meta.setdefault(meta_name.strip().lower(), content)

    def end(self, tag: str) -> None:
        if tag != "a" or self._href is None:
            return
        name = "".join(self._text).strip()
        if name:
            self.names.append(name)
            if not self.links_a_project:
                # `<a href="/simple/foo/">Foo</a>`, as every simple root has; not "Sign in"
                segment = self._href.split("#")[0].split("?")[0].rstrip("/").rpartition("/")[2]
                self.links_a_project = normalize(unquote(segment)) == normalize(name)
        self._href = None

    def data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def close(self) -> None:
        return None


def _html_names(
    chunks: Iterable[bytes], charset: str | None, require_marker: bool
) -> Iterator[str]:
    # like formats.parse: the header's charset, else UTF-8; undecodable bytes become U+FFFD
    encoding = "utf-8"
    if charset:
        with contextlib.suppress(LookupError):
            encoding = codecs.lookup(charset).name
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    target = _Anchors()
    parser = etree.HTMLParser(target=target, huge_tree=True, encoding="utf-8")
    seen_content = False
    try:
        for chunk in chunks:
            if encoding != "utf-8":
                chunk = decoder.decode(chunk).encode()
            if not seen_content:
                if not chunk.strip():
                    continue
                seen_content = True
            parser.feed(chunk)
            yield from _taken(target)
        if encoding != "utf-8" and (tail := decoder.decode(b"", final=True).encode()):
            parser.feed(tail)
        if not seen_content:
            raise UpstreamFormatError("upstream HTML page is empty")
        parser.close()
    except (etree.LxmlError, ValueError) as error:
        raise UpstreamFormatError(f"upstream HTML cannot be parsed: {error}") from None
    yield from _taken(target)
    check_api_version(target.meta.get("pypi:repository-version"), "pypi:repository-version")
    if "pypi:repository-version" in target.meta or "pypi:project-status" in target.meta:
        return
    if require_marker:
        raise NotASimplePage(
            "an HTML answer without the pypi:repository-version marker, from an upstream that"
            " answers JSON"
        )
    if not target.links_a_project:
        raise NotASimplePage(
            "an HTML answer that has no pypi:repository-version marker and links no project page"
        )


def _taken(target: _Anchors) -> list[str]:
    names, target.names = target.names, []
    return names


# -- JSON ----------------------------------------------------------------------------------------

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_READ = 256 * 1024  # characters decoded before the buffer is scanned again


class _JsonList:
    """A scanner over the outer object: `{"meta": {...}, "projects": [{"name": ...}, ...]}`,
    keys in any order; every value but `projects` is decoded whole (bounded)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buffer = ""
        self._at = 0
        self._ended = False
        self._seen = 0  # characters dropped from the buffer's front, for error positions

    def names(self) -> Iterator[str]:
        if not self._skip_space_to_content():
            raise UpstreamFormatError("upstream JSON cannot be parsed: the body is empty")
        if self._peek() != "{":
            value = self._value()
            raise UpstreamFormatError(f"upstream JSON is a {_json_kind(value)}, not an object")
        self._at += 1
        projects_seen = False
        meta: object = None
        if self._token('a key or "}"') == "}":
            self._at += 1
        else:
            while True:
                key = self._value()
                if not isinstance(key, str):
                    self._fail("a key is not a string")
                if self._token('":"') != ":":
                    self._fail('":" expected after a key')
                self._at += 1
                if key == "projects" and self._token("a value") == "[":
                    projects_seen = True
                    yield from self._projects()
                elif key == "projects":
                    expect_json(self._value(), (list,), "'projects'")
                elif key == "meta":
                    meta = self._value()
                    if meta is not None and not isinstance(meta, dict):
                        raise UpstreamFormatError(
                            f"upstream JSON 'meta' is a {_json_kind(meta)}, not an object"
                        )
                else:
                    self._value()
                separator = self._token('"," or "}"')
                self._at += 1
                if separator == "}":
                    break
                if separator != ",":
                    self._fail('"," or "}" expected')
        if self._skip_space_to_content():
            self._fail("more after the object")
        if isinstance(meta, dict):
            check_api_version(meta.get("api-version"), "meta.api-version")
        if not projects_seen:
            expect_json(None, (list,), "'projects'")

    def _projects(self) -> Iterator[str]:
        self._at += 1  # "["
        index = 0
        if self._token('a project or "]"') == "]":
            self._at += 1
            return
        while True:
            project = self._value()
            # exact type checks first: this runs a million times for a large index
            name = project.get("name") if type(project) is dict else None
            if type(name) is not str:
                expect_json(project, (dict,), f"projects[{index}]")
                name = expect_json(name, (str,), f"projects[{index}].name")
            if stripped := name.strip():
                yield stripped
            index += 1
            separator = self._token('"," or "]"')
            self._at += 1
            if separator == "]":
                return
            if separator != ",":
                self._fail('"," or "]" expected in projects')

    # ---- the buffer ----

    def _more(self) -> bool:
        """Read on; False at the end of the body."""
        if self._ended:
            return False
        if self._at > _READ:  # drop what was read
            self._seen += self._at
            self._buffer, self._at = self._buffer[self._at :], 0
        for chunk in self._chunks:
            try:
                text = self._decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise UpstreamFormatError(f"upstream JSON cannot be parsed: {error}") from None
            if text:
                self._buffer += text
                return True
        self._ended = True
        try:
            self._buffer += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise UpstreamFormatError(f"upstream JSON cannot be parsed: {error}") from None
        return False

    def _skip_space_to_content(self) -> bool:
        """Past white space; False when the body ends first."""
        while True:
            match = _SPACE.match(self._buffer, self._at)
            assert match is not None
            self._at = match.end()
            if self._at < len(self._buffer):
                return True
            if not self._more():
                return False

    def _peek(self) -> str:
        return self._buffer[self._at]

    def _token(self, wanted: str) -> str:
        if not self._skip_space_to_content():
            self._fail(f"the body ends where {wanted} belongs")
        return self._buffer[self._at]

    def _value(self) -> Any:
        """One whole JSON value at the position, read on until it is complete."""
        self._skip_space_to_content()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buffer, self._at)
            except json.JSONDecodeError as error:
                # incomplete (it runs to the buffer's end) unless the body has ended
                if len(self._buffer) - self._at > MAX_ELEMENT_BYTES:
                    self._fail(f"a value longer than {MAX_ELEMENT_BYTES} characters")
                if not self._more():
                    self._fail(error.msg)
                continue
            # a number or literal that the buffer's end cut short may read as a shorter one
            if end == len(self._buffer) and not self._ended and self._more():
                continue
            if end - self._at > MAX_ELEMENT_BYTES:
                self._fail(f"a value longer than {MAX_ELEMENT_BYTES} characters")
            self._at = end
            return value

    def _fail(self, problem: str) -> Any:
        raise UpstreamFormatError(
            f"upstream JSON cannot be parsed: {problem} (at character {self._seen + self._at})"
        )


def _json_kind(value: object) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")
