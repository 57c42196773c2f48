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

from dataclasses import dataclass

from pyproxy.formats.answers import JSON_TYPE, split_content_type
from pyproxy.formats.page_html import (
    check_simple_html,
    collect_html,
    file_from_html,
    page_status,
    project_page_from_html,
)
from pyproxy.formats.page_json import file_from_json, load_json_object, project_page_from_json
from pyproxy.model import DistFile, NormalizedName, ProjectPage, ProjectStatus

__all__ = ["ListedFile", "find_listed_file", "parse_project_page"]

# what a distribution file's name ends with, whatever the era (eggs, installers, archives)
_DIST_ENDINGS = (
    ".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tar", ".zip",
    ".egg", ".exe", ".msi", ".rpm", ".dmg", ".deb",
)


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
        return project_page_from_json(load_json_object(body), page_url, name)
    html = collect_html(body, charset)
    page = project_page_from_html(html, page_url, name)
    has_dist = any(dist.filename.lower().endswith(_DIST_ENDINGS) for dist in page.files)
    check_simple_html(html, has_dist, require_marker, "links no distribution file")
    return page


@dataclass(frozen=True, slots=True)
class ListedFile:
    """One file of a project page, as parse_project_page would list it."""

    dist: DistFile | None  # None: the page lists no file of that name
    status: ProjectStatus
    directories: frozenset[str]  # of every file and provenance link: where downloads may go


def find_listed_file(
    body: bytes, content_type: str | None, page_url: str, filename: str
) -> ListedFile:
    """The file named `filename` in a page that parse_project_page has read whole before (a
    stored page): a fraction of the work on a page of thousands of files, for a process that
    has not parsed it (another worker, or after a restart) and is asked for one file."""
    media_type, charset = split_content_type(content_type)
    if media_type == JSON_TYPE:
        dist, status, directories = file_from_json(load_json_object(body), page_url, filename)
        return ListedFile(dist, status, directories)
    html = collect_html(body, charset)
    dist, directories = file_from_html(html, page_url, filename)
    return ListedFile(dist, page_status(html), directories)
