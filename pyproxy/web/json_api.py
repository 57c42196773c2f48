"""The legacy JSON API: GET /pypi/<project>/json and /pypi/<project>/<version>/json, and the
project document where older pip-tools look for it (/<project>/json, /simple/pypi/<project>/json);
pip-tools 7.7 asks /pypi/<project>/json.

Same repository (so the same private-wins rule) and the same file URLs as the Simple API.
`info` says what web/metadata.py reads of the release's metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import hdrs, web

from pyproxy.formats import legacy_json
from pyproxy.formats.releases import Releases, choose_version, find_version, group_releases
from pyproxy.lru import BoundedLRU
from pyproxy.model import (
    NormalizedName,
    NotFound,
    Origin,
    ProjectPage,
    Unavailable,
    normalize,
    valid_name,
)
from pyproxy.web.conditional import none_match
from pyproxy.web.context import SERVICES, Services, origin
from pyproxy.web.metadata import release_metadata
from pyproxy.web.middleware import CORS_HEADERS
from pyproxy.web.simple import file_url

CONTENT_TYPE = "application/json"
# the public index exposes its serial header to browsers too
_EXPOSE = CORS_HEADERS["Access-Control-Expose-Headers"] + ", X-PyPI-Last-Serial"


@dataclass(frozen=True, slots=True)
class _Rendered:
    body: bytes
    etag: str
    serial: int


class RenderedDocuments:
    """Answers by (origin, project, requested version), reused while the page's revision holds:
    building one means reading metadata and walking every file of the project."""

    def __init__(self, capacity: int = 1024) -> None:
        self._entries: BoundedLRU[tuple[str, str, str | None], tuple[str, _Rendered]] = (
            BoundedLRU(capacity)
        )

    def get(self, key: tuple[str, str, str | None], revision: str) -> _Rendered | None:
        entry = self._entries.get(key)
        if entry is None or not revision or entry[0] != revision:
            return None
        return entry[1]

    def put(self, key: tuple[str, str, str | None], revision: str, rendered: _Rendered) -> None:
        if revision:
            self._entries.put(key, (revision, rendered))


RENDERED = web.AppKey("legacy_json_rendered", RenderedDocuments)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def project(request: web.Request) -> web.StreamResponse:
    """/pypi/<project>/json: the latest release's info and files, and every release's files."""
    return await _answer(request, None)


async def release(request: web.Request) -> web.StreamResponse:
    """/pypi/<project>/<version>/json: that release only (no `releases` key)."""
    return await _answer(request, request.match_info["version"])


async def project_beside_simple(request: web.Request) -> web.StreamResponse:
    """/<project>/json (and /simple/pypi/<project>/json): what /pypi/<project>/json answers,
    where pip-tools 7.6 (before 7.6) asks for the hashes of a pinned release given the index
    URL .../simple/. `pip-compile --generate-hashes` reads them from `releases`, and downloads
    every file the answer does not list to hash it. Any spelling of the name is answered as
    it is, without a redirect."""
    return await _answer(request, None, redirect=False)


async def _answer(
    request: web.Request, requested: str | None, *, redirect: bool = True
) -> web.StreamResponse:
    raw_name = request.match_info["project"]
    if not valid_name(raw_name):
        return _json_error(404, "Not Found")
    name = normalize(raw_name)
    if raw_name != name and redirect:
        return _redirect(request, name, requested)
    try:
        return await _document(request, name, requested)
    except NotFound:
        return _json_error(404, "Not Found")
    except Unavailable as exc:
        return _json_error(503, f"Service Unavailable: {exc}")


def _redirect(request: web.Request, name: NormalizedName, requested: str | None) -> web.Response:
    path = f"/pypi/{name}/"
    if requested is not None:
        path += quote(requested, safe="+!") + "/"
    path += "json" + ("/" if request.path.endswith("/") else "")
    query = request.rel_url.raw_query_string
    location = path + (f"?{query}" if query else "")
    return web.Response(status=301, headers={hdrs.LOCATION: location})


async def _document(
    request: web.Request, name: NormalizedName, requested: str | None
) -> web.StreamResponse:
    services = request.app[SERVICES]
    page = await services.repository.project_page(name)
    if not page.status.offers_files:
        raise NotFound(f"project {name!r} is quarantined")  # as the public index hides them
    base = origin(request)
    cache = request.app[RENDERED]
    key = (base, name, requested)
    rendered = cache.get(key, page.revision)
    if rendered is None:
        # off the loop: a project with thousands of files takes tens of ms to walk
        releases, version = await asyncio.to_thread(_release_of, page, requested)
        if version is None:
            raise NotFound(f"no such release of {name!r}")
        metadata, complete = await release_metadata(services, page, releases[version])
        serial = services.catalog.project_serial(name) or 0
        private_digests = _private_digests(services, page)

        def render() -> bytes:
            document = legacy_json.build_document(
                page,
                releases,
                version,
                metadata=metadata,
                base=base,
                file_url=file_url(base, name),
                last_serial=serial,
                private_digests=private_digests,
                all_releases=requested is None,
            )
            return legacy_json.dumps(document)

        body = await asyncio.to_thread(render)
        etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
        rendered = _Rendered(body, etag, serial)
        if complete:  # an answer missing upstream metadata is not kept: the next one may have it
            cache.put(key, page.revision, rendered)
    return _respond(request, services, rendered)


def _release_of(page: ProjectPage, requested: str | None) -> tuple[Releases, str | None]:
    releases = group_releases(page)
    if requested is None:
        return releases, choose_version(releases)
    return releases, find_version(releases, requested)


def _respond(request: web.Request, services: Services, rendered: _Rendered) -> web.Response:
    headers = {
        hdrs.ETAG: rendered.etag,
        hdrs.CACHE_CONTROL: f"max-age={services.settings.page_max_age}, must-revalidate",
        "X-PyPI-Last-Serial": str(rendered.serial),
        hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: _EXPOSE,
    }
    if none_match(request.headers.get(hdrs.IF_NONE_MATCH), rendered.etag):
        return web.Response(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = CONTENT_TYPE
    return web.Response(body=rendered.body, headers=headers)


def _private_digests(
    services: Services, page: ProjectPage
) -> Mapping[str, Mapping[str, str]]:
    if not any(dist.origin is Origin.PRIVATE for dist in page.files):
        return {}
    return services.catalog.file_digests(page.name)
