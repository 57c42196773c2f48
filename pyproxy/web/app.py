"""Building the aiohttp application: routes, middleware, templates."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from pyproxy.web import files, legacy, middleware, pages, simple
from pyproxy.web.context import SERVICES, Services


def build_app(services: Services) -> web.Application:
    # uploads are streamed part by part, so the body-size limit never applies to them
    app = web.Application(middlewares=[middleware.errors])
    app[SERVICES] = services
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("pyproxy", "templates"), autoescape=True)
    app.on_response_prepare.append(middleware.add_cors_headers)
    router = app.router
    router.add_get("/", pages.landing)
    router.add_get("/simple", simple.simple_root_without_slash)
    router.add_get("/simple/{tail:.*}", simple.simple)
    router.add_get("/files/{project}/{filename}", files.download)
    # twine aborts on any redirect, so every spelling of the upload URL is served directly
    for path in ("/legacy/", "/legacy", "/"):
        router.add_post(path, legacy.upload)
    return app
