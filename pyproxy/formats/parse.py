"""An upstream simple-index answer (PEP 503 HTML or PEP 691 JSON) -> the model. Pure: no I/O.

Policy for bad input: anything that makes the answer untrustworthy as a whole (unknown media type,
api-version 2+, a body that is not a JSON object, a wrong JSON type, a file without filename/url,
a digest that is not hex) raises UpstreamFormatError, so the caller treats the upstream as broken
(stale copy or 502) instead of serving a half-read page. A single optional attribute whose value
cannot be understood (an unparsable upload-time, an unknown `#egg=` fragment) is dropped instead.

An HTML answer must look like a simple page, or it is NotASimplePage (a maintenance, login or
block page that a proxy answered with 200): it declares `pypi:repository-version` (or a PEP 792
project status), or it links at least one distribution file (a project page) or names at least
one project page (the root). With `require_marker` (the caller knows the upstream speaks JSON), only
the declaration counts.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import orjson
from lxml import etree

from pyproxy.formats.links import Links, filename_from_url
from pyproxy.model import (
    DistFile,
    NormalizedName,
    Origin,
    ProjectPage,
    ProjectStatus,
)

__all__ = [
    "FRAGMENT_HASH_ALGORITHMS",
    "HTML_TYPES",
    "JSON_TYPE",
    "NotASimplePage",
    "UpstreamFormatError",
    "check_api_version",
    "expect_json",
    "parse_project_page",
    "split_content_type",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = frozenset({"text/html", "application/vnd.pypi.simple.v1+html"})

# Hash names a URL fragment may carry (pip's and uv's sets plus hashlib's common names); any other
# fragment (`#egg=`, `#subdirectory=`) says nothing about the file's bytes and is ignored.
FRAGMENT_HASH_ALGORITHMS = frozenset(
    {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b_256", "sha3_256", "sha3_512"}
)

_HEX = re.compile(r"[0-9a-f]+")
# what a distribution file's name ends with, whatever the era (eggs, installers, archives)
_DIST_ENDINGS = (
    ".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tar", ".zip",
    ".egg", ".exe", ".msi", ".rpm", ".dmg", ".deb",
)
_API_VERSION = re.compile(r"\s*(\d+)\.(\d+)\s*")


class UpstreamFormatError(Exception):
    """A malformed upstream answer; the message is one line and says what was wrong."""


class Emptied(UpstreamFormatError):
    """An answer that lists nothing where the copy listed something (a page's files, the
    list's projects) and upstream does not say why."""


class NotASimplePage(UpstreamFormatError):
    """An HTML answer that parses, but has nothing of a simple page about it."""


def parse_project_page(
    body: bytes,
    content_type: str | None,
    page_url: str,
    name: NormalizedName,
    *,
    require_marker: bool = False,
) -> ProjectPage:
    """The page of one project. Its `revision` is left empty: the caller sets it."""
    media_type, charset = split_content_type(content_type)
    if media_type == JSON_TYPE:
        return _project_page_from_json(_load_json_object(body), page_url, name)
    html = _collect_html(body, charset)
    page = _project_page_from_html(html, page_url, name)
    has_dist = any(dist.filename.lower().endswith(_DIST_ENDINGS) for dist in page.files)
    _check_simple_html(html, has_dist, require_marker, "links no distribution file")
    return page


def _check_simple_html(
    html: _HtmlCollector, has_content: bool, require_marker: bool, lacking: str
) -> None:
    if "pypi:repository-version" in html.meta or "pypi:project-status" in html.meta:
        return
    if require_marker:
        raise NotASimplePage(
            "an HTML answer without the pypi:repository-version marker, from an upstream that"
            " answers JSON"
        )
    if not has_content:
        raise NotASimplePage(
            f"an HTML answer that has no pypi:repository-version marker and {lacking}"
        )


# -- content type and versions --------------------------------------------------------------------


def split_content_type(content_type: str | None) -> tuple[str, str | None]:
    """(media type, charset parameter); raises unless it is one of the three simple-API types."""
    if not content_type or not content_type.strip():
        raise UpstreamFormatError("upstream answer has no Content-Type")
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    if media_type != JSON_TYPE and media_type not in HTML_TYPES:
        raise UpstreamFormatError(f"unsupported upstream Content-Type {media_type!r}")
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').strip() or None
    return media_type, charset


def check_api_version(version: object, where: str) -> None:
    # PEP 629: a missing version means 1.0; a newer minor is compatible, a newer major is not
    if version is None:
        return
    if not isinstance(version, str) or not (match := _API_VERSION.fullmatch(version)):
        raise UpstreamFormatError(f"{where} is not Major.Minor: {version!r}")
    if match.group(1) != "1":
        raise UpstreamFormatError(f"unsupported upstream api-version {version.strip()!r}")


# -- shared per-file helpers ----------------------------------------------------------------------


def _filename_from_url(url: str) -> str:
    """The last path segment, percent-decoded, as pip and uv take it; "" when unusable."""
    filename = filename_from_url(url)
    return filename if _is_safe_filename(filename) else ""


def _is_safe_filename(filename: str) -> bool:
    # the filename becomes a path on pyproxy's own URL and in its cache: no separators, no dots-only
    return (
        bool(filename)
        and filename not in (".", "..")
        and "/" not in filename
        and "\\" not in filename
        and filename.isprintable()
    )


def _digest(algorithm: str, value: str, filename: str) -> tuple[str, str]:
    algorithm, value = algorithm.strip().lower(), value.strip().lower()
    # a digest nobody can match must not silently become "no hash" (an unverified download)
    if not algorithm or not _HEX.fullmatch(value):
        raise UpstreamFormatError(f"{filename}: {algorithm or 'hash'} digest is not hex: {value!r}")
    return algorithm, value


def _hashes_from_fragment(fragment: str, filename: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for part in fragment.split("&"):  # pip also reads `#sha256=...&egg=...`
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() in FRAGMENT_HASH_ALGORITHMS:
            algorithm, digest = _digest(key, value, filename)
            hashes.setdefault(algorithm, digest)
    return hashes


def _provenance_url(links: Links, value: str | None) -> str | None:
    """PEP 740's `provenance` / `data-provenance`: the provenance object's absolute URL; an
    empty or non-http(s) value is dropped (it is optional and only fetched on request)."""
    if not value or not value.strip():
        return None
    resolved = links.resolve(value)
    return None if resolved is None else resolved[0]


def _core_metadata_from_attribute(value: str | None, filename: str) -> Mapping[str, str] | bool:
    """PEP 658/714 HTML attribute value -> DistFile.core_metadata."""
    if value is None:
        return False
    value = value.strip()
    # "false" is not in the spec; its author plainly means "no metadata", and advertising a
    # .metadata that upstream does not serve would break pip (which reads any value as "offered")
    if value.lower() == "false":
        return False
    algorithm, sep, digest = value.partition("=")
    if sep:
        return dict([_digest(algorithm, digest, f"{filename} metadata")])
    # "true", "" or anything else: offered, hash unknown (what pip and uv make of it too)
    return True


def _status(status: str | None, reason: str | None) -> ProjectStatus:
    # an unknown status is kept verbatim so it is forwarded; only "quarantined" changes behaviour
    status = (status or "").strip().lower() or "active"
    return ProjectStatus(status=status, reason=reason or None)


# -- HTML ----------------------------------------------------------------------------------------


class _HtmlCollector:
    """lxml parser target: keeps anchors, <base> and <meta> without building a tree.

    For a 500,000-name root page this needs less than half the memory of an lxml tree
    (about 160 MB against 350 MB over the body) at a similar speed (1 to 1.5 s).
    """

    def __init__(self) -> None:
        self.anchors: list[tuple[dict[str, str], str]] = []
        self.base_href: str | None = None
        self.meta: dict[str, str] = {}  # first content per lowercased name
        self._anchor: dict[str, str] | None = None
        self._text: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == "a":
            self._anchor, self._text = attrib, []  # lxml hands each call a fresh dict
        elif tag == "base":
            if self.base_href is None and "href" in attrib:  # pip uses the first <base href>
                self.base_href = attrib["href"]
        elif tag == "meta":
            meta_name, content = attrib.get("name"), attrib.get("content")
            if meta_name is not None and content is not None:
                self.meta.setdefault(meta_name.strip().lower(), content)

    def end(self, tag: str) -> None:
        if tag == "a" and self._anchor is not None:
            self.anchors.append((self._anchor, "".join(self._text)))
            self._anchor = None

    def data(self, data: str) -> None:
        if self._anchor is not None:
            self._text.append(data)

    def close(self) -> _HtmlCollector:
        return self


def _collect_html(body: bytes, charset: str | None) -> _HtmlCollector:
    # Like pip: the header's charset, else UTF-8 (a <meta charset> is not consulted). Undecodable
    # bytes become U+FFFD rather than failing the page (libxml2 replaces bad UTF-8 the same way).
    encoding = "utf-8"
    if charset:
        # an unknown label is sloppiness, not a reason to refuse the page
        with contextlib.suppress(LookupError):
            encoding = codecs.lookup(charset).name
    if encoding != "utf-8":
        body = body.decode(encoding, errors="replace").encode()
    if not body.strip():
        raise UpstreamFormatError("upstream HTML page is empty")
    collector = _HtmlCollector()
    # bytes with an explicit encoding: lxml refuses str input that has an <?xml encoding?> prolog,
    # and the explicit encoding overrides any in-document declaration
    parser = etree.HTMLParser(target=collector, huge_tree=True, encoding="utf-8")
    try:
        etree.fromstring(body, parser)
    except (etree.LxmlError, ValueError) as error:
        raise UpstreamFormatError(f"upstream HTML cannot be parsed: {error}") from None
    check_api_version(collector.meta.get("pypi:repository-version"), "pypi:repository-version")
    return collector


def _project_page_from_html(
    html: _HtmlCollector, page_url: str, name: NormalizedName
) -> ProjectPage:
    base_url = urljoin(page_url, html.base_href.strip()) if html.base_href else page_url
    links = Links(base_url)
    files: dict[str, DistFile] = {}
    for attrib, _text in html.anchors:
        href = attrib.get("href")
        if not href or not (resolved := links.resolve(href)):
            continue
        url, fragment = resolved
        filename = _filename_from_url(url)
        if not filename or filename in files:  # the first of a duplicated filename wins
            continue
        yanked_reason = attrib.get("data-yanked")
        core_metadata = attrib.get("data-core-metadata")  # PEP 714: the new name first
        if core_metadata is None:
            core_metadata = attrib.get("data-dist-info-metadata")
        provenance = _provenance_url(links, attrib.get("data-provenance"))
        files[filename] = DistFile(
            filename=filename,
            hashes=_hashes_from_fragment(fragment, filename),
            provenance=provenance is not None,
            provenance_url=provenance,
            requires_python=(attrib.get("data-requires-python") or "").strip() or None,
            # present means yanked, whatever the value; a bare attribute reads as ""
            yanked=yanked_reason is not None,
            yanked_reason=yanked_reason or "",
            core_metadata=_core_metadata_from_attribute(core_metadata, filename),
            origin=Origin.UPSTREAM,
            upstream_url=url,
        )
    meta = html.meta
    status = _status(meta.get("pypi:project-status"), meta.get("pypi:project-status-reason"))
    return ProjectPage.build(name, tuple(files.values()), status=status)


# -- JSON ----------------------------------------------------------------------------------------


def _load_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise UpstreamFormatError(f"upstream JSON cannot be parsed: {error}") from None
    if not isinstance(document, dict):
        raise UpstreamFormatError(f"upstream JSON is a {_json_type(document)}, not an object")
    meta = document.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise UpstreamFormatError(f"upstream JSON 'meta' is a {_json_type(meta)}, not an object")
    check_api_version((meta or {}).get("api-version"), "meta.api-version")
    return document


_NULL = type(None)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", _NULL: "null"}
    return names.get(type(value), "number")


def _member(
    raw: dict[str, Any], key: str, kinds: tuple[type, ...], owner: str, default: object = None
) -> Any:
    """`raw[key]` (or `default`) as expect_json checks it, the message only made on a failure
    (a page has thousands of files)."""
    value = raw.get(key, default)
    if isinstance(value, kinds) and (type(value) is not bool or bool in kinds):
        return value
    return expect_json(value, kinds, f"{owner}: {key!r}")


def expect_json(value: object, kinds: tuple[type, ...], where: str) -> Any:
    """`value` if it has one of these JSON types, else UpstreamFormatError naming `where`."""
    # bool is an int subclass: a JSON true must not pass as a size
    if not isinstance(value, kinds) or (type(value) is bool and bool not in kinds):
        raise UpstreamFormatError(f"{where} is a {_json_type(value)}, which is not allowed there")
    return value


def _project_page_from_json(
    document: dict[str, Any], page_url: str, name: NormalizedName
) -> ProjectPage:
    # the JSON "name" is not compared with `name`: the caller asked for that page by that name
    raw_files = expect_json(document.get("files"), (list,), "'files'")
    files: dict[str, DistFile] = {}
    links = Links(page_url)
    for index, raw_file in enumerate(raw_files):
        raw = expect_json(raw_file, (dict,), f"files[{index}]")
        dist = _dist_file_from_json(raw, links, index)
        files.setdefault(dist.filename, dist)  # the first of a duplicated filename wins
    versions = expect_json(document.get("versions", []), (list,), "'versions'")
    for index, version in enumerate(versions):
        expect_json(version, (str,), f"versions[{index}]")
    return ProjectPage.build(
        name,
        tuple(files.values()),
        extra_versions=tuple(versions),
        status=_status_from_json(document.get("project-status")),
    )


def _dist_file_from_json(raw: dict[str, Any], links: Links, index: int) -> DistFile:
    filename = expect_json(raw.get("filename"), (str,), f"files[{index}].filename")
    if not _is_safe_filename(filename):
        raise UpstreamFormatError(f"files[{index}].filename is not a plain file name: {filename!r}")
    href = _member(raw, "url", (str,), filename)
    if not (resolved := links.resolve(href)):
        raise UpstreamFormatError(f"{filename}: 'url' is not an http(s) URL: {href!r}")

    # the spec says "hashes" MUST be present; a missing one is read as "no hashes" all the same
    raw_hashes = _member(raw, "hashes", (dict,), filename, {})
    hashes = _hash_map(raw_hashes, filename)
    size = _member(raw, "size", (int, _NULL), filename)
    if size is not None and size < 0:
        raise UpstreamFormatError(f"{filename}: 'size' is negative: {size}")
    requires_python = _member(raw, "requires-python", (str, _NULL), filename)
    # spec: a bool, or a reason string that is yanked when truthy; so "" means not yanked
    yanked = _member(raw, "yanked", (bool, str, _NULL), filename, False)
    core_metadata = raw.get("core-metadata")  # PEP 714: prefer the new name
    if core_metadata is None:
        core_metadata = raw.get("dist-info-metadata", raw.get("data-dist-info-metadata"))
    provenance = _provenance_url(links, _member(raw, "provenance", (str, _NULL), filename))
    return DistFile(
        filename=filename,
        hashes=hashes,
        size=size,
        provenance=provenance is not None,
        provenance_url=provenance,
        upload_time=_upload_time(_member(raw, "upload-time", (str, _NULL), filename)),
        requires_python=(requires_python or "").strip() or None,
        yanked=bool(yanked),
        yanked_reason=yanked if isinstance(yanked, str) else "",
        core_metadata=_core_metadata_from_json(core_metadata, filename),
        origin=Origin.UPSTREAM,
        upstream_url=resolved[0],
    )


def _upload_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None  # optional and only informative: an unreadable time is dropped, not fatal
    # the spec requires "Z"; a time without an offset is read as UTC rather than local time
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _core_metadata_from_json(value: object, filename: str) -> Mapping[str, str] | bool:
    if value is None or value is True or value is False:
        return bool(value)
    value = expect_json(value, (bool, dict, _NULL), f"{filename}: 'core-metadata'")
    if not isinstance(value, dict):
        return bool(value)
    if not value:
        return True  # offered, with no hash given
    return _hash_map(value, f"{filename} metadata")


def _hash_map(raw: dict[str, Any], owner: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for algorithm, digest in raw.items():
        if not isinstance(digest, str):
            expect_json(digest, (str,), f"{owner}: hash {algorithm!r}")
        key, value = _digest(algorithm, digest, owner)
        hashes[key] = value  # the last of a repeated (differently cased) name, as dict() did
    return hashes


def _status_from_json(value: object) -> ProjectStatus:
    raw = expect_json(value, (dict, _NULL), "'project-status'")
    if raw is None:
        return ProjectStatus()
    status = expect_json(raw.get("status"), (str, _NULL), "project-status.status")
    reason = expect_json(raw.get("reason"), (str, _NULL), "project-status.reason")
    return _status(status, reason)
