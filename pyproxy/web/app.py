"""Building the aiohttp application: routes, middleware, templates."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from pyproxy.datadir import DataDir
from pyproxy.stores.rendered_lists import RenderedLists
from pyproxy.web import (
    downloads,
    inflight,
    integrity,
    json_api,
    lifecycle,
    list_files,
    middleware,
    ops,
    pages,
    readauth,
    simple,
    upload,
)
from pyproxy.web.context import SERVICES, Services
from pyproxy.web.html_cache import RenderedHTML
from pyproxy.web.local_files import SMALL_FILES
from pyproxy.web.small_files import SmallFiles


async def _before_sending(request: web.Request, response: web.StreamResponse) -> None:
    """The one response hook (each hook is a coroutine call per response): CORS on every
    answer, `private` on personal ones, `Connection: close` once stopping."""
    middleware.add_cors_headers(request, response)
    readauth.keep_out_of_shared_caches(request, response)
    lifecycle.close_when_stopping(request, response)


def build_app(services: Services) -> web.Application:
    # uploads are streamed part by part, so the body-size limit never applies to them
    app = web.Application(middlewares=[middleware.errors])
    app[SERVICES] = services
    readauth.setup(app)  # who may read what: before any handler, inside the error middleware
    lifecycle.install(app)  # the count of requests in flight (errors keeps it), for a graceful stop
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("pyproxy", "templates"), autoescape=True)
    app.on_response_prepare.append(_before_sending)
    router = app.router
    router.add_get("/", pages.landing)
    router.add_get("/search", pages.search)
    router.add_get("/projects", pages.projects_without_slash)
    router.add_get("/projects/", pages.projects)
    router.add_get("/project/{tail:.*}", pages.project)
    router.add_get("/simple", simple.simple_root_without_slash)
    # where pip-tools before 7.6 looks for hashes given the index URL /simple/ (a PEP 503 URL
    # has no such path: /simple/pypi/ stays the page of a project named pypi)
    router.add_get("/simple/pypi/{project}/json", json_api.project_beside_simple)
    router.add_get("/simple/{tail:.*}", simple.simple)
    router.add_get("/files/{project}/{filename}", downloads.download)
    router.add_get(integrity.ROUTE, integrity.provenance)
    router.add_get(inflight.ROUTE, inflight.follow)  # cluster nodes only; they prove it
    router.add_get("/health", ops.health)
    router.add_get("/ready", ops.ready)
    router.add_get("/metrics", ops.metrics_page)
    app[ops.READINESS] = ops.Readiness()
    app[simple.RENDERED] = simple.RenderedPages()
    app[list_files.LISTS] = list_files.ListFiles(
        RenderedLists(DataDir(services.settings.data_dir).rendered_lists)
    )
    app[json_api.RENDERED] = json_api.RenderedDocuments()
    app[pages.RENDERED] = RenderedHTML()
    app[SMALL_FILES] = SmallFiles()
    # the public index also answers these with a trailing slash
    for suffix in ("json", "json/"):
        router.add_get(f"/pypi/{{project}}/{suffix}", json_api.project)
        router.add_get(f"/pypi/{{project}}/{{version}}/{suffix}", json_api.release)
    # where pip-tools 7.6 looks for hashes given the index URL /simple/; after every other
    # route, so that /simple/json, /project/json and the like keep their meaning
    router.add_get("/{project}/json", json_api.project_beside_simple)
    # twine aborts on any redirect, so every spelling of the upload URL is served directly
    for path in ("/legacy/", "/legacy", "/"):
        router.add_post(path, upload.upload)
    return app
