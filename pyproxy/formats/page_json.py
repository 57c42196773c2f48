"""An upstream project page in PEP 691 JSON -> the model (formats/parse.py's rules)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from pyproxy.formats.answers import (
    NULL,
    UpstreamFormatError,
    check_api_version,
    expect_json,
    json_type,
)
from pyproxy.formats.dist_fields import checked_digest, is_safe_filename, provenance_url, status_of
from pyproxy.formats.links import Links
from pyproxy.model import DistFile, NormalizedName, Origin, ProjectPage, ProjectStatus

__all__ = ["file_from_json", "load_json_object", "project_page_from_json"]


def load_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise UpstreamFormatError(f"upstream JSON cannot be parsed: {error}") from None
    if not isinstance(document, dict):
        raise UpstreamFormatError(f"upstream JSON is a {json_type(document)}, not an object")
    meta = document.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise UpstreamFormatError(f"upstream JSON 'meta' is a {json_type(meta)}, not an object")
    check_api_version((meta or {}).get("api-version"), "meta.api-version")
    return document


def _member(
    raw: dict[str, Any], key: str, kinds: tuple[type, ...], owner: str, default: object = None
) -> Any:
    """`raw[key]` (or `default`) as expect_json checks it, the message only made on a failure
    (a page has thousands of files)."""
    value = raw.get(key, default)
    if isinstance(value, kinds) and (type(value) is not bool or bool in kinds):
        return value
    return expect_json(value, kinds, f"{owner}: {key!r}")


def project_page_from_json(
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


def file_from_json(
    document: dict[str, Any], page_url: str, wanted: str
) -> tuple[DistFile | None, ProjectStatus, frozenset[str]]:
    """The file named `wanted` as project_page_from_json would list it (None: not listed), the
    project's status, and the directories of every file and provenance link the page has: one
    file of a page of thousands without building the others. Only the entries it reads are
    checked: for a page that has parsed whole before."""
    raw_files = expect_json(document.get("files"), (list,), "'files'")
    links = Links(page_url)
    found: DistFile | None = None
    directories: set[str] = set()
    seen: set[str] = set()
    for index, raw_file in enumerate(raw_files):
        raw = expect_json(raw_file, (dict,), f"files[{index}]")
        filename = expect_json(raw.get("filename"), (str,), f"files[{index}].filename")
        if filename in seen:
            continue
        if filename == wanted:
            found = _dist_file_from_json(raw, links, index)
        seen.add(filename)
        for key in ("url", "provenance"):
            href = raw.get(key)
            if isinstance(href, str) and href.strip() and (resolved := links.resolve(href)):
                directories.add(resolved[0].rpartition("/")[0])
    return found, _status_from_json(document.get("project-status")), frozenset(directories)


def _dist_file_from_json(raw: dict[str, Any], links: Links, index: int) -> DistFile:
    filename = expect_json(raw.get("filename"), (str,), f"files[{index}].filename")
    if not is_safe_filename(filename):
        raise UpstreamFormatError(f"files[{index}].filename is not a plain file name: {filename!r}")
    href = _member(raw, "url", (str,), filename)
    if not (resolved := links.resolve(href)):
        raise UpstreamFormatError(f"{filename}: 'url' is not an http(s) URL: {href!r}")

    # the spec says "hashes" MUST be present; a missing one is read as "no hashes" all the same
    raw_hashes = _member(raw, "hashes", (dict,), filename, {})
    hashes = _hash_map(raw_hashes, filename)
    size = _member(raw, "size", (int, NULL), filename)
    if size is not None and size < 0:
        raise UpstreamFormatError(f"{filename}: 'size' is negative: {size}")
    requires_python = _member(raw, "requires-python", (str, NULL), filename)
    # spec: a bool, or a reason string that is yanked when truthy; so "" means not yanked
    yanked = _member(raw, "yanked", (bool, str, NULL), filename, False)
    core_metadata = raw.get("core-metadata")  # PEP 714: prefer the new name
    if core_metadata is None:
        core_metadata = raw.get("dist-info-metadata", raw.get("data-dist-info-metadata"))
    provenance = provenance_url(links, _member(raw, "provenance", (str, NULL), filename))
    return DistFile(
        filename=filename,
        hashes=hashes,
        size=size,
        provenance=provenance is not None,
        provenance_url=provenance,
        upload_time=_upload_time(_member(raw, "upload-time", (str, NULL), filename)),
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
    value = expect_json(value, (bool, dict, NULL), f"{filename}: 'core-metadata'")
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
        key, value = checked_digest(algorithm, digest, owner)
        hashes[key] = value  # the last of a repeated (differently cased) name, as dict() did
    return hashes


def _status_from_json(value: object) -> ProjectStatus:
    raw = expect_json(value, (dict, NULL), "'project-status'")
    if raw is None:
        return ProjectStatus()
    status = expect_json(raw.get("status"), (str, NULL), "project-status.status")
    reason = expect_json(raw.get("reason"), (str, NULL), "project-status.reason")
    return status_of(status, reason)
