"""What the human pages show, built from the model: a project's versions and files as the
templates read them, sizes and times as people read them, and the links a release's metadata
offers. Pure: no I/O, no request."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from pyproxy.formats.releases import (
    Releases,
    choose_version,
    find_version,
    group_files,
    group_releases,
    release_yanked,
)
from pyproxy.model import DistFile, NormalizedName, Origin, ProjectPage
from pyproxy.units import human_size

FileURL = Callable[[DistFile], str]

# ------------------------------------------------------------------------------ formatting


def _when(moment: datetime | None) -> tuple[str, str]:
    """(shown text, ISO 8601 for <time datetime>), in UTC."""
    if moment is None:
        return "", ""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC"), moment.isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ view models


@dataclass(frozen=True, slots=True)
class FileView:
    filename: str
    url: str
    size: str
    uploaded: str
    uploaded_iso: str
    sha256: str | None
    requires_python: str | None
    yanked: bool
    yanked_reason: str
    private: bool


@dataclass(frozen=True, slots=True)
class VersionView:
    version: str
    files: tuple[FileView, ...]
    requires_python: tuple[str, ...]  # distinct values among its files
    yanked: bool  # all its files are
    path: str | None = None  # its release page; None for files of no known version

    @property
    def anchor(self) -> str:
        return "v-" + re.sub(r"[^A-Za-z0-9._-]", "-", self.version)


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str


def _file_view(dist: DistFile, url: str) -> FileView:
    uploaded, uploaded_iso = _when(dist.upload_time)
    return FileView(
        filename=dist.filename,
        url=url,
        size=human_size(dist.size),
        uploaded=uploaded,
        uploaded_iso=uploaded_iso,
        sha256=dist.sha256,
        requires_python=dist.requires_python,
        yanked=dist.yanked,
        yanked_reason=dist.yanked_reason,
        private=dist.origin is Origin.PRIVATE,
    )


def release_path(project: NormalizedName, version: str) -> str:
    """The path of a release's page (where the legacy JSON API's `release_url` points)."""
    return f"/project/{project}/{quote(version, safe='+!')}/"


def version_view(
    version: str, files: Sequence[DistFile], url_of: FileURL, path: str | None = None
) -> VersionView:
    requires = dict.fromkeys(d.requires_python for d in files if d.requires_python)
    return VersionView(
        version,
        tuple(_file_view(d, url_of(d)) for d in files),
        tuple(requires),
        release_yanked(files)[0],
        path,
    )


@dataclass(frozen=True, slots=True)
class ProjectView:
    versions: tuple[VersionView, ...]  # newest first; files of no known version last
    current: VersionView | None  # the release a visitor most likely wants, one of `versions`
    current_private: VersionView | None  # the newest private one: its upload tells the metadata
    has_upstream_files: bool


def _current(releases: Releases, *, private_only: bool) -> str | None:
    """The public index's choice (formats.releases), among releases with a file (a private
    one when asked); None when there is none."""
    with_files = {
        version: chosen
        for version, files in releases.items()
        if (chosen := [d for d in files if not private_only or d.origin is Origin.PRIVATE])
    }
    return choose_version(with_files)


def project_view(page: ProjectPage, url_of: FileURL) -> ProjectView:
    """Versions newest first (packaging's ordering; unparsable ones after, then the files whose
    version cannot be told), each with its files; which of them is current."""
    releases, other = group_files(page)
    views = {
        version: version_view(version, files, url_of, release_path(page.name, version))
        for version, files in releases.items()
    }
    versions = list(reversed(views.values()))
    if other:
        versions.append(version_view("other files", other, url_of))
    current = _current(releases, private_only=False)
    current_private = _current(releases, private_only=True)
    return ProjectView(
        versions=tuple(versions),
        current=None if current is None else views[current],
        current_private=None if current_private is None else views[current_private],
        has_upstream_files=any(not f.private for v in versions for f in v.files),
    )


@dataclass(frozen=True, slots=True)
class ReleaseView:
    release: VersionView
    yanked_reason: str | None  # the first one its files give, when the release is yanked
    files: tuple[DistFile, ...]  # whose metadata tells the rest


def release_view(page: ProjectPage, requested: str, url_of: FileURL) -> ReleaseView | str | None:
    """The release a page URL names; the spelling to redirect to when the URL names it in
    another ("1.0.0" for "1.0"); None when the project has no such release."""
    releases = group_releases(page)
    version = find_version(releases, requested)
    if version is None:
        return None
    if version != requested:
        return version
    files = releases[version]
    return ReleaseView(
        version_view(version, files, url_of, release_path(page.name, version)),
        release_yanked(files)[1],
        tuple(files),
    )


def first_value(fields: Mapping[str, Sequence[str]], key: str) -> str:
    values = fields.get(key) or ()
    return values[0].strip() if values else ""


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def project_links(fields: Mapping[str, Sequence[str]]) -> list[Link]:
    """Home-Page, Download-URL and Project-URL entries, http(s) only (no javascript: links)."""
    links: list[Link] = []
    for key, label in (("home_page", "Homepage"), ("download_url", "Download")):
        if (url := first_value(fields, key)) and _is_web_url(url):
            links.append(Link(label, url))
    for entry in fields.get("project_urls") or ():
        label, sep, url = entry.partition(",")
        if sep and _is_web_url(url.strip()):
            links.append(Link(label.strip() or url.strip(), url.strip()))
    return links


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a private release's core metadata says, for the page."""

    display_name: str = ""
    version: str = ""
    summary: str = ""
    description: Markup | None = None
    links: tuple[Link, ...] = ()
