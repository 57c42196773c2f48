"""Human-facing pages (server-rendered with aiohttp-jinja2)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from pyproxy.web.context import SERVICES, origin


@aiohttp_jinja2.template("landing.html")
async def landing(request: web.Request) -> dict[str, object]:
    services = request.app[SERVICES]
    return {
        "base": origin(request),
        "upstream": services.upstream_description,
        "private_count": len(services.private.list_projects().names),
    }
