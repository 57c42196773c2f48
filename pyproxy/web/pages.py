"""Human-facing pages (server-rendered with aiohttp-jinja2, no JavaScript): the landing page,
search, the private project list and a page per project.

They show only what the Simple API and the files' core metadata show to anyone with read
access: never who uploaded a file, and only the metadata fields picked below.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup
from packaging.version import InvalidVersion, Version

from pyproxy.formats.description import render_description
from pyproxy.model import (
    DistFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectPage,
    Unavailable,
    normalize,
    valid_name,
)
from pyproxy.units import human_size
from pyproxy.web import readauth
from pyproxy.web.context import SERVICES, Services, origin
from pyproxy.web.simple import file_url

MAX_SEARCH_RESULTS = 100

# no scripts at all; inline styles are the base template's own
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:;"
        " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _render(
    template: str, request: web.Request, context: Mapping[str, object], *, status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, dict(context), status=status)
    response.headers.update(_SECURITY_HEADERS)
    return response


# ------------------------------------------------------------------------------ formatting


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


def _current(versions: Sequence[VersionView], *, private_only: bool) -> VersionView | None:
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


def _first(fields: Mapping[str, Sequence[str]], key: str) -> str:
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
        if (url := _first(fields, key)) and _is_web_url(url):
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


async def private_metadata(services: Services, current: VersionView | None) -> Metadata:
    if current is None:
        return Metadata()
    filename = next((f.filename for f in current.files if f.private), None)
    fields = services.catalog.file_fields(filename) if filename else None
    if not fields:
        return Metadata(version=current.version)
    text = "\n".join(fields.get("description") or ())
    description = None
    if text.strip():
        # off the loop: docutils and pygments can take a while on a long README
        description = await asyncio.to_thread(
            render_description, text, _first(fields, "description_content_type") or None
        )
    return Metadata(
        display_name=_first(fields, "name"),
        version=current.version,
        summary=_first(fields, "summary"),
        description=description,
        links=tuple(project_links(fields)),
    )


# ------------------------------------------------------------------------------ handlers


def _serves(services: Services) -> dict[str, object]:
    settings = services.settings
    return {
        "private_only": settings.private_only,
        "upstream": services.upstream_description,
        "offline": settings.offline,
    }


async def landing(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    return _render(
        "landing.html",
        request,
        {
            "base": origin(request),
            "private_count": len(readauth.visible(request, services.catalog.list_projects().names)),
            **_serves(services),
        },
    )


def _search_key(text: str) -> str:
    return re.sub(r"[-_.\s]+", "-", text.strip().lower())


async def search(request: web.Request) -> web.StreamResponse:
    """Private names containing the query (normalised, separators optional); an exact private
    name goes straight to its page. Any other valid name is offered as a link, since it may
    exist upstream: the upstream list is never fetched for a search."""
    services = request.app[SERVICES]
    query = request.query.get("q", "").strip()
    context: dict[str, object] = {"query": query, "matches": [], "more": 0, "open_name": None}
    if query:
        valid = valid_name(query)
        hidden = readauth.hidden_projects(request)
        if valid and services.catalog.has_project(normalize(query)) and normalize(query) not in hidden:
            raise web.HTTPFound(f"/project/{normalize(query)}/")
        key = _search_key(query)
        compact = key.replace("-", "")
        matches = []
        for display in readauth.visible(request, services.catalog.list_projects().names):
            name = normalize(display)
            if key in name or (compact and compact in name.replace("-", "")):
                matches.append((not name.startswith(key), name, display))
        matches.sort()
        context["matches"] = [(name, display) for _rank, name, display in matches[:MAX_SEARCH_RESULTS]]
        context["more"] = max(0, len(matches) - MAX_SEARCH_RESULTS)
        if valid and not services.settings.private_only:
            context["open_name"] = normalize(query)
        context["valid"] = valid
    return _render("search.html", request, {**context, **_serves(services)})


async def projects(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    listed = readauth.visible(request, services.catalog.list_projects().names)
    names = [(normalize(display), display) for display in listed]
    return _render("projects.html", request, {"projects": names, **_serves(services)})


async def projects_without_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/projects/")


def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return _render(
        "error.html", request, {"status": status, "title": title, "message": message}, status=status
    )


async def project(request: web.Request) -> web.StreamResponse:
    """/project/<name>/: 301 to the normalised spelling; HTML 404 and 503 pages."""
    tail = request.match_info["tail"]
    parts = [part for part in tail.split("/") if part]
    if not parts:
        raise web.HTTPFound("/projects/")
    if len(parts) != 1 or not valid_name(parts[0]):
        return _error_page(request, 404, "Not Found", f"{tail.strip('/')!r} is not a project name.")
    name = normalize(parts[0])
    if tail != f"{name}/":
        raise web.HTTPMovedPermanently(f"/project/{name}/")
    services = request.app[SERVICES]
    try:
        page = await services.repository.project_page(name)
    except NotFound:
        if services.settings.private_only:
            message = f"There is no project {name!r} here."
        elif services.settings.offline:
            message = f"There is no private project {name!r}, and pyproxy is offline with no copy of it."
        else:
            message = f"There is no project {name!r} here or upstream."
        return _error_page(request, 404, "Not Found", message)
    except Unavailable as exc:
        return _error_page(
            request, 503, "Service Unavailable",
            f"The upstream index cannot be reached right now and pyproxy has no copy of"
            f" {name!r}: {exc}. Try again later.",
        )
    return _render("project.html", request, await _project_context(request, services, name, page))


async def _project_context(
    request: web.Request, services: Services, name: NormalizedName, page: ProjectPage
) -> dict[str, object]:
    base = origin(request)
    versions = version_views(page, base)
    private = services.catalog.has_project(name)
    metadata = Metadata()
    if private:
        metadata = await private_metadata(services, _current(versions, private_only=True))
    current = _current(versions, private_only=False)
    has_upstream_files = any(not f.private for v in versions for f in v.files)
    return {
        "base": base,
        "name": name,
        "display_name": metadata.display_name or name,
        "private": private,
        "has_upstream_files": has_upstream_files,
        "current": current,
        "metadata": metadata,
        "versions": versions,
        "status": page.status,
        "file_count": len(page.files),
        **_serves(services),
    }
