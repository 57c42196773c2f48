"""The Simple Repository API: /simple/ and /simple/<project>/, negotiated, pre-rendered.

Project pages are rendered into memory (RenderedPages). The project list (a million names
from a real upstream) is rendered to files instead and sent from disk (ListFiles); its ETag is
derived from the list's revision, so a revalidation is answered without the file (the files:
list_files.py)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from pyproxy.formats.negotiate import Format, negotiate
from pyproxy.formats.render import render_project, write_index
from pyproxy.lru import BoundedLRU
from pyproxy.model import DistFile, NormalizedName, NotFound, normalize, valid_name
from pyproxy.project_lists import filtered
from pyproxy.web import readauth, warmup
from pyproxy.web.conditional import none_match
from pyproxy.web.context import SERVICES, origin
from pyproxy.web.integrity import provenance_url
from pyproxy.web.list_files import LIST_RENDERING, LISTS

log = logging.getLogger("pyproxy.web")
# bodies smaller than this are sent as they are: gzip would save less than its header costs
GZIP_MIN_BYTES = 1024
# within 6 % of level 6's size in less than half its time (a 5,000-file page: 13 ms, not 29),
# and a cold page is compressed on its first request
GZIP_LEVEL = 3
_GZIP_TOKEN = re.compile(
    r"(?:^|,)\s*(?:gzip|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*(?=,|$)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    etag: str
    gzipped: bytes | None = None  # compressed once per revision, for clients that accept gzip
    gzip_etag: str = ""


# clients send a handful of distinct Accept-Encoding headers: parse each once (bounded)
@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for match in _GZIP_TOKEN.finditer(accept_encoding):
        try:
            if match.group(1) is None or float(match.group(1)) > 0:
                return True
        except ValueError:
            continue
    return False


def _rendered(body: bytes, etag: str) -> Rendered:
    if len(body) < GZIP_MIN_BYTES:
        return Rendered(body, etag)
    # mtime=0: the same page always compresses to the same bytes (stable across workers)
    gzipped = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return Rendered(body, etag, gzipped, etag[:-1] + '-gzip"')


class RenderedPages:
    """Rendered bodies by (origin, format, page), reused until the page's revision changes,
    so a project with thousands of files costs one dictionary lookup per request."""

    def __init__(self, capacity: int = 4096) -> None:
        self._entries: BoundedLRU[tuple[str, Format, str], tuple[str, Rendered]] = BoundedLRU(
            capacity
        )

    def kept(self, key: tuple[str, Format, str], revision: str) -> Rendered | None:
        """The warm path, with no coroutine: the page rendered at `revision`, if kept."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == revision and revision:
            return entry[1]
        return None

    async def get(
        self, key: tuple[str, Format, str], revision: str, render: Callable[[], bytes]
    ) -> Rendered:
        kept = self.kept(key, revision)
        if kept is not None:
            return kept

        def build() -> Rendered:
            body = render()
            # text/html and v1+html share a body but are different representations
            digest = hashlib.blake2b(body, digest_size=16, person=key[1].name.encode()[:16])
            return _rendered(body, f'"{digest.hexdigest()}"')

        # off the loop: a merged project list can take seconds to render and compress
        rendered = await asyncio.to_thread(build)
        if revision:
            self._entries.put(key, (revision, rendered))
        return rendered


RENDERED = web.AppKey("rendered_pages", RenderedPages)


def file_url(base: str, project: NormalizedName) -> Callable[[DistFile], str]:
    prefix = f"{base}/files/{project}/"
    return lambda dist: prefix + quote(dist.filename)


def _chosen_format(request: web.Request) -> Format:
    # no query string (what installers send): no query to parse
    asked = request.query.get("format") if request.rel_url.raw_query_string else None
    fmt = negotiate(request.headers.get(hdrs.ACCEPT), asked)
    if fmt is None:
        raise _not_acceptable()
    return fmt


def _not_acceptable() -> web.HTTPException:
    types = ", ".join(f.value for f in Format)
    return web.HTTPNotAcceptable(
        text=f"Not Acceptable: this index serves {types}\n",
        headers={hdrs.VARY: "Accept"},
    )


def _page_headers(request: web.Request, etag: str) -> dict[str, str]:
    return {
        hdrs.VARY: "Accept, Accept-Encoding",
        hdrs.ETAG: etag,
        hdrs.CACHE_CONTROL: (
            f"max-age={request.app[SERVICES].settings.page_max_age}, must-revalidate"
        ),
    }


# a page's headers change only with its revision: built once per (page, answer), bounded
@lru_cache(maxsize=4096)
def _kept_headers(
    etag: str, max_age: int, content_type: str | None, compressed: bool
) -> CIMultiDictProxy[str]:
    headers = CIMultiDict({
        hdrs.VARY: "Accept, Accept-Encoding",
        hdrs.ETAG: etag,
        hdrs.CACHE_CONTROL: f"max-age={max_age}, must-revalidate",
    })
    if content_type is not None:  # None: the 304's, which has no body
        headers[hdrs.CONTENT_TYPE] = content_type
        if compressed:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
    return CIMultiDictProxy(headers)


def _page(request: web.Request, fmt: Format, page: Rendered) -> web.Response:
    request_headers = request.headers
    compressed = (
        page.gzipped is not None and accepts_gzip(request_headers.get(hdrs.ACCEPT_ENCODING))
    )
    etag = page.gzip_etag if compressed else page.etag
    max_age = request.app[SERVICES].settings.page_max_age
    # web.Response copies the headers it is given: what the response hook adds goes to its copy
    if none_match(request_headers.get(hdrs.IF_NONE_MATCH), etag):
        return web.Response(status=304, headers=_kept_headers(etag, max_age, None, compressed))
    headers = _kept_headers(etag, max_age, fmt.content_type, compressed)
    return web.Response(body=page.gzipped if compressed else page.body, headers=headers)


def _redirect(request: web.Request, path: str) -> web.HTTPException:
    query = request.rel_url.raw_query_string  # as sent: decoding would turn "+" into " "
    location = path + (f"?{query}" if query else "")
    return web.HTTPMovedPermanently(location)


async def simple_root_without_slash(request: web.Request) -> web.StreamResponse:
    raise _redirect(request, "/simple/")


_INDEX, _PROJECT, _REDIRECT, _NOT_A_NAME = range(4)


# the same few tails come again and again: read each once (bounded: they are the clients')
@lru_cache(maxsize=4096)
def _read_tail(tail: str) -> tuple[int, str]:
    """What /simple/<tail> is: (_INDEX, ""), (_PROJECT, name), (_REDIRECT, path) or
    (_NOT_A_NAME, why)."""
    parts = [part for part in tail.split("/") if part]
    if not parts:
        return (_REDIRECT, "/simple/") if tail else (_INDEX, "")  # "/simple//" redirects
    if len(parts) > 1 or not valid_name(parts[0]):
        return _NOT_A_NAME, f"{tail.strip('/')!r} is not a project name"
    name = normalize(parts[0])
    if tail != f"{name}/":
        return _REDIRECT, f"/simple/{name}/"
    return _PROJECT, name


async def simple(request: web.Request) -> web.StreamResponse:
    """/simple/<anything>: the index, a project page, or a redirect to the canonical URL."""
    kind, value = _read_tail(request.match_info["tail"])
    if kind == _PROJECT:
        return await _project(request, NormalizedName(value))
    if kind == _INDEX:
        return await _index(request)
    if kind == _REDIRECT:
        raise _redirect(request, value)
    raise NotFound(value)


async def _index(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    fmt = _chosen_format(request)
    projects = await services.repository.list_projects()
    hidden = readauth.hidden_projects(request)
    # callers who may read the same projects share one rendering ("" is no project's name)
    variant = ""
    if hidden:
        digest = hashlib.blake2b("\n".join(sorted(hidden)).encode(), digest_size=16)
        variant = f"without:{digest.hexdigest()}"
        projects = filtered(projects, lambda name: name not in hidden, projects.revision)
    # relative links: the same file serves every origin; text/html and v1+html share it too
    kind = "json" if fmt.is_json else "html"
    revision = projects.revision or f"once:{uuid.uuid4().hex}"  # no revision: never reused
    name = hashlib.blake2b(
        f"{LIST_RENDERING}\n{revision}\n{variant}\n{kind}".encode(), digest_size=16
    ).hexdigest()
    etag = hashlib.blake2b(name.encode(), digest_size=16, person=fmt.name.encode()[:16])
    compressed = accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING))
    headers = _page_headers(request, f'"{etag.hexdigest()}{"-gzip" if compressed else ""}"')
    if none_match(request.headers.get(hdrs.IF_NONE_MATCH), headers[hdrs.ETAG]):
        return web.Response(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = fmt.content_type
    if compressed:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    lists = request.app[LISTS]
    response = await lists.send(
        request, name, lambda out: write_index(projects.entries(), fmt, out), compressed, headers
    )
    if not projects.revision:
        await asyncio.to_thread(lists.store.remove, name)  # sent from its open file
    return response


async def _project(request: web.Request, name: NormalizedName) -> web.StreamResponse:
    services = request.app[SERVICES]
    fmt = _chosen_format(request)
    project = await services.repository.project_page(name)
    base = origin(request)
    pages = request.app[RENDERED]
    key = (base, fmt, name)
    page = pages.kept(key, project.revision) or await pages.get(
        key, project.revision,
        lambda: render_project(project, fmt, file_url(base, name), provenance_url(base, name)),
    )
    # once rendered: a cold page of thousands of files is rendered in a thread, and the
    # warm-up's pick from it (in a thread too) would share the GIL with it
    warmup.page_requested(request, name)
    return _page(request, fmt, page)
