"""What the human pages show, built from the model: a project's versions and files as the
templates read them, sizes and times as people read them, and the links a release's metadata
offers. Pure: no I/O, no request."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from markupsafe import Markup
from packaging.version import InvalidVersion, Version

from pyproxy.model import DistFile, Origin, ProjectPage
from pyproxy.web.simple import file_url

# ------------------------------------------------------------------------------ formatting


def human_size(size: int | None) -> str:
    """Decimal units, as the public index shows them: 999 bytes, 1.2 kB, 34.5 MB."""
    if size is None:
        return "unknown size"
    if size < 1000:
        return f"{size} bytes" if size != 1 else "1 byte"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _when(moment: datetime | None) -> tuple[str, str]:
    """(shown text, ISO 8601 for <time datetime>), in UTC."""
    if moment is None:
        return "", ""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC"), moment.isoformat(timespec="seconds")


def _version_key(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def _canonical(version: str) -> str:
    parsed = _version_key(version)
    return version if parsed is None else str(parsed)


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

    @property
    def yanked(self) -> bool:
        return bool(self.files) and all(f.yanked for f in self.files)

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


def version_views(page: ProjectPage, base: str) -> list[VersionView]:
    """Versions newest first (packaging's ordering; unparsable ones after, then files whose
    version cannot be told), each with its files."""
    url_of = file_url(base, page.name)
    grouped: dict[str, list[DistFile]] = {_canonical(v): [] for v in page.versions}
    unknown: list[DistFile] = []
    for dist in page.files:
        if dist.version is None:
            unknown.append(dist)
        else:
            grouped.setdefault(_canonical(dist.version), []).append(dist)
    parsed = [(key, v) for v in grouped if (key := _version_key(v)) is not None]
    ordered = [v for _key, v in sorted(parsed, key=lambda item: item[0], reverse=True)]
    ordered += sorted((v for v in grouped if _version_key(v) is None), reverse=True)
    groups = [(v, grouped[v]) for v in ordered]
    if unknown:
        groups.append(("other files", unknown))
    views = []
    for version, dists in groups:
        dists.sort(key=lambda d: d.filename)
        requires = dict.fromkeys(d.requires_python for d in dists if d.requires_python)
        views.append(
            VersionView(version, tuple(_file_view(d, url_of(d)) for d in dists), tuple(requires))
        )
    return views


def current_version(versions: Sequence[VersionView], *, private_only: bool) -> VersionView | None:
    """The version a visitor most likely wants: the newest final release with a file that is
    not yanked, else the newest with any file (only private files count when asked)."""

    def usable(view: VersionView) -> bool:
        return any(not private_only or f.private for f in view.files)

    candidates = [v for v in versions if usable(v)]
    for view in candidates:
        parsed = _version_key(view.version)
        if parsed is not None and not parsed.is_prerelease and not view.yanked:
            return view
    for view in candidates:
        if not view.yanked:
            return view
    return candidates[0] if candidates else None


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
