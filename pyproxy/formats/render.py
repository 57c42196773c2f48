"""The model as PEP 503 HTML and PEP 691 JSON bytes, rendered once and served many times."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from html import escape
from itertools import islice
from typing import BinaryIO
from urllib.parse import quote

import orjson

from pyproxy.formats.negotiate import Format
from pyproxy.model import DistFile, Listed, ProjectPage

API_VERSION = "1.4"

# uv rejects fragments and hash keys it does not know; these are the ones every client reads.
_FRAGMENT_HASHES = ("sha256", "sha384", "sha512", "md5")
_JSON_HASHES = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b"})

FileURL = Callable[[DistFile], str]
# PEP 740: where pyproxy serves a file's provenance object; None when it offers none
ProvenanceURL = Callable[[DistFile], str | None]


def _no_provenance(dist: DistFile) -> None:
    return None


def format_upload_time(moment: datetime) -> str:
    """PEP 700's form: UTC with a literal Z (pip reads a naive time without it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fragment(hashes: Mapping[str, str]) -> str:
    for name in _FRAGMENT_HASHES:
        if name in hashes:
            return f"#{name}={hashes[name]}"
    return ""


def _metadata_attribute(core_metadata: Mapping[str, str] | bool) -> str | None:
    if core_metadata is False:
        return None  # never "false": pip reads it as "metadata exists"
    if core_metadata is True:
        return "true"
    for name in _FRAGMENT_HASHES:
        if name in core_metadata:
            return f"{name}={core_metadata[name]}"
    return "true"


def _offered_files(page: ProjectPage) -> tuple[DistFile, ...]:
    return page.files if page.status.offers_files else ()


def _escaped(text: str) -> str:
    """As the template escaped (markupsafe's entities), so pages keep their bytes and ETags."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&#34;").replace("'", "&#39;"))


def _anchor(dist: DistFile, file_url: FileURL, provenance_url: ProvenanceURL) -> str:
    attributes = [f'    <a href="{_escaped(file_url(dist) + _fragment(dist.hashes))}"']
    if dist.requires_python:
        attributes.append(f' data-requires-python="{_escaped(dist.requires_python)}"')
    if dist.yanked:  # always a quoted value: pip ignores a bare data-yanked
        attributes.append(f' data-yanked="{_escaped(dist.yanked_reason)}"')
    if (core_metadata := _metadata_attribute(dist.core_metadata)) is not None:
        value = _escaped(core_metadata)
        attributes.append(f' data-core-metadata="{value}" data-dist-info-metadata="{value}"')
    if dist.provenance and (provenance := provenance_url(dist)):
        attributes.append(f' data-provenance="{_escaped(provenance)}"')
    attributes.append(f">{_escaped(dist.filename)}</a><br>")
    return "".join(attributes)


def render_project_html(
    page: ProjectPage, file_url: FileURL, provenance_url: ProvenanceURL = _no_provenance
) -> bytes:
    # built as strings, not through a template: a cold page of thousands of files is on an
    # install's critical path, and the template took three times as long
    status = page.status
    reason = (
        f'\n    <meta name="pypi:project-status-reason" content="{_escaped(status.reason)}">'
        if status.reason else ""
    )
    name = _escaped(page.name)
    head = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f'    <meta name="pypi:project-status" content="{_escaped(status.status)}">{reason}\n'
        f"    <title>Links for {name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {name}</h1>"
    )
    anchors = "".join(
        "\n" + _anchor(dist, file_url, provenance_url) for dist in _offered_files(page)
    )
    return f"{head}{anchors}\n  </body>\n</html>\n".encode()


def _file_json(
    dist: DistFile, file_url: FileURL, provenance_url: ProvenanceURL
) -> dict[str, object]:
    entry: dict[str, object] = {
        "filename": dist.filename,
        "url": file_url(dist),
        "hashes": {k: v for k, v in dist.hashes.items() if k in _JSON_HASHES},
    }
    if dist.requires_python:
        entry["requires-python"] = dist.requires_python
    if dist.size is not None:
        entry["size"] = dist.size
    if dist.upload_time is not None:
        entry["upload-time"] = format_upload_time(dist.upload_time)
    if dist.yanked:
        # "" would read as not yanked to pip
        entry["yanked"] = dist.yanked_reason or True
    if dist.core_metadata is True:
        entry["core-metadata"] = True
    elif dist.core_metadata:
        known = {k: v for k, v in dist.core_metadata.items() if k in _JSON_HASHES}
        entry["core-metadata"] = known or True
    if dist.provenance and (provenance := provenance_url(dist)) is not None:
        entry["provenance"] = provenance
    return entry


def render_project_json(
    page: ProjectPage, file_url: FileURL, provenance_url: ProvenanceURL = _no_provenance
) -> bytes:
    document: dict[str, object] = {
        "meta": {"api-version": API_VERSION},
        "name": page.name,
        "versions": list(page.versions),
        "files": [_file_json(dist, file_url, provenance_url) for dist in _offered_files(page)],
        "project-status": {"status": page.status.status},
    }
    if page.status.reason:
        document["project-status"] = {"status": page.status.status, "reason": page.status.reason}
    return orjson.dumps(document)


def render_project(
    page: ProjectPage,
    fmt: Format,
    file_url: FileURL,
    provenance_url: ProvenanceURL = _no_provenance,
) -> bytes:
    if fmt.is_json:
        return render_project_json(page, file_url, provenance_url)
    return render_project_html(page, file_url, provenance_url)


def write_index(entries: Iterable[Listed], fmt: Format, out: BinaryIO) -> None:
    """The project list, written as it is read (a million names never sit in memory), with
    links relative to the list's own URL as upstream indexes write them (`<a href="foo/">`)."""
    if fmt.is_json:
        out.write(b'{"meta":{"api-version":"%s"},"projects":[' % API_VERSION.encode())
        separator = b""
        for batch in _batches(entries):
            # one call per batch: the array's brackets dropped, its elements kept
            out.write(separator + orjson.dumps([{"name": shown} for _, shown in batch])[1:-1])
            separator = b","
        out.write(b"]}")
        return
    out.write(_INDEX_HEAD.format(api_version=API_VERSION).encode())
    for batch in _batches(entries):
        if _PLAIN.search("".join(f"{name}{shown}" for name, shown in batch)) is None:
            lines = (f'<a href="{name}/">{shown}</a>\n' for name, shown in batch)  # the usual
        else:
            lines = (f'<a href="{escape(quote(name))}/">{escape(shown)}</a>\n'
                     for name, shown in batch)
        out.write("".join(lines).encode())
    out.write(b"</body>\n</html>\n")


_PLAIN = re.compile(r"[^A-Za-z0-9._-]")  # a name with none of these needs no escaping
_INDEX_HEAD = """<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="{api_version}">
    <title>Simple index</title>
  </head>
  <body>
"""


def _batches(entries: Iterable[Listed], size: int = 1024) -> Iterator[list[Listed]]:
    iterator = iter(entries)
    while batch := list(islice(iterator, size)):
        yield batch
