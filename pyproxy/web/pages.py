"""Human-facing pages (server-rendered with aiohttp-jinja2, no JavaScript): the landing page,
search, the private project list, a page per project and one per release.

They show only what the Simple API and the files' core metadata show to anyone with read
access: never who uploaded a file, and only the metadata fields picked below.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

import aiohttp_jinja2
from aiohttp import web

from pyproxy.formats.description import render_description
from pyproxy.model import (
    NotFound,
    ProjectPage,
    Unavailable,
    normalize,
    valid_name,
)
from pyproxy.web import readauth
from pyproxy.web.context import SERVICES, Services, origin
from pyproxy.web.html_cache import Built, RenderedHTML
from pyproxy.web.metadata import release_metadata
from pyproxy.web.simple import file_url
from pyproxy.web.views import (
    Metadata,
    VersionView,
    first_value,
    project_links,
    project_view,
    release_path,
    release_view,
)

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


RENDERED = web.AppKey("rendered_html", RenderedHTML)


def _render(
    template: str, request: web.Request, context: Mapping[str, object], *, status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, dict(context), status=status)
    response.headers.update(_SECURITY_HEADERS)
    return response


async def _render_off_loop(
    request: web.Request, template: str, context: Mapping[str, object]
) -> bytes:
    """What aiohttp_jinja2 renders (no context processors are installed), in a thread: a
    jinja2 template may be rendered by several threads at once."""
    prepared = aiohttp_jinja2.get_env(request.app).get_template(template)
    return await asyncio.to_thread(lambda: prepared.render(context).encode())


def _html(body: bytes) -> web.Response:
    return web.Response(
        body=body, content_type="text/html", charset="utf-8", headers=_SECURITY_HEADERS
    )


# ------------------------------------------------------------------------------ metadata


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
            render_description, text, first_value(fields, "description_content_type") or None
        )
    return Metadata(
        display_name=first_value(fields, "name"),
        version=current.version,
        summary=first_value(fields, "summary"),
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
        "routes": services.upstreams.routes(),
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
        exact = normalize(query)
        if valid and services.catalog.has_project(exact) and exact not in hidden:
            raise web.HTTPFound(f"/project/{exact}/")
        key = _search_key(query)
        compact = key.replace("-", "")
        matches = []
        for display in readauth.visible(request, services.catalog.list_projects().names):
            name = normalize(display)
            if key in name or (compact and compact in name.replace("-", "")):
                matches.append((not name.startswith(key), name, display))
        matches.sort()
        shown = matches[:MAX_SEARCH_RESULTS]
        context["matches"] = [(name, display) for _rank, name, display in shown]
        context["more"] = max(0, len(matches) - MAX_SEARCH_RESULTS)
        if valid and not services.settings.private_only:
            context["open_name"] = exact
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


class _NoSuchRelease(Exception):
    pass


class _OtherSpelling(Exception):
    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.version = version


async def project(request: web.Request) -> web.StreamResponse:
    """/project/<name>/ and /project/<name>/<version>/: 301 to the normalised spellings; HTML
    404 and 503 pages."""
    tail = request.match_info["tail"]
    parts = [part for part in tail.split("/") if part]
    if not parts:
        raise web.HTTPFound("/projects/")
    if len(parts) > 2 or not valid_name(parts[0]):
        return _error_page(request, 404, "Not Found", f"{tail.strip('/')!r} is not a project name.")
    name = normalize(parts[0])
    requested = parts[1] if len(parts) == 2 else None
    if tail != f"{name}/{'' if requested is None else requested + '/'}":
        raise web.HTTPMovedPermanently(
            f"/project/{name}/" if requested is None else release_path(name, requested)
        )
    services = request.app[SERVICES]
    try:
        page = await services.repository.project_page(name)
    except NotFound:
        if services.settings.private_only:
            message = f"There is no project {name!r} here."
        elif services.settings.offline:
            message = (
                f"There is no private project {name!r}, and pyproxy is offline with no copy of it."
            )
        else:
            message = f"There is no project {name!r} here or upstream."
        return _error_page(request, 404, "Not Found", message)
    except Unavailable as exc:
        return _error_page(
            request, 503, "Service Unavailable",
            f"The upstream index cannot be reached right now and pyproxy has no copy of"
            f" {name!r}: {exc}. Try again later.",
        )
    base = origin(request)
    cache = request.app[RENDERED]
    # nothing on them depends on who asks (the guard has judged that already): one build
    # serves all
    if requested is None:
        body = await cache.get(
            (base, name, ""), page.revision, lambda: _project_page(request, services, base, page)
        )
        return _html(body)
    try:
        body = await cache.get(
            (base, name, "release", requested),
            page.revision,
            lambda: _release_page(request, services, base, page, requested),
        )
    except _OtherSpelling as other:
        raise web.HTTPMovedPermanently(release_path(name, other.version)) from None
    except _NoSuchRelease:
        return _error_page(
            request, 404, "Not Found", f"{name!r} has no release {requested!r} here."
        )
    return _html(body)


async def _release_page(
    request: web.Request, services: Services, base: str, page: ProjectPage, requested: str
) -> Built:
    found = await asyncio.to_thread(release_view, page, requested, file_url(base, page.name))
    if found is None:
        raise _NoSuchRelease(requested)
    if isinstance(found, str):
        raise _OtherSpelling(found)
    metadata, complete = await release_metadata(services, page, list(found.files))
    release = found.release
    context = {
        "base": base,
        "name": page.name,
        "display_name": metadata.name or page.name,
        "release": release,
        "yanked_reason": found.yanked_reason,
        "summary": metadata.summary,
        "requires_python": (
            (metadata.requires_python,) if metadata.requires_python else release.requires_python
        ),
        "status": page.status,
        **_serves(services),
    }
    # without its metadata (upstream unreachable) the page is served, and built again next time
    return Built(await _render_off_loop(request, "release.html", context), complete)


async def _project_page(
    request: web.Request, services: Services, base: str, page: ProjectPage
) -> Built:
    name = page.name
    # off the loop: a project with 20,000 files takes the best part of a second to lay out
    view = await asyncio.to_thread(project_view, page, file_url(base, name))
    private = services.catalog.has_project(name)
    metadata = Metadata()
    if private:
        metadata = await private_metadata(services, view.current_private)
    context = {
        "base": base,
        "name": name,
        "display_name": metadata.display_name or name,
        "private": private,
        "has_upstream_files": view.has_upstream_files,
        "current": view.current,
        "metadata": metadata,
        "versions": view.versions,
        "status": page.status,
        "file_count": len(page.files),
        **_serves(services),
        "upstream": services.upstreams.upstream_for(name),
    }
    return Built(await _render_off_loop(request, "project.html", context))
