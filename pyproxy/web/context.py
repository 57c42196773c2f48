"""What every handler needs, stored once on the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from pyproxy.auth import UserStore
from pyproxy.blobcache import BlobCache
from pyproxy.config import Settings
from pyproxy.model import Repository
from pyproxy.private import PrivateStore
from pyproxy.upstream import Upstream

if TYPE_CHECKING:
    from pyproxy.web.simple import RenderedPages


@dataclass
class Services:
    settings: Settings
    repository: Repository  # what the Simple API and file routes serve
    private: PrivateStore  # where uploads go
    users: UserStore
    pages: RenderedPages
    upstream_description: str  # for the landing page and start-up log
    upstream: Upstream | None = None
    blobs: BlobCache | None = None

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
        if self.blobs is not None:
            await self.blobs.aclose()
        self.private.close()
        self.users.close()


SERVICES = web.AppKey("services", Services)


def origin(request: web.Request) -> str:
    """scheme://host[:port] for the absolute URLs pyproxy writes."""
    configured = request.app[SERVICES].settings.base_url
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"
