"""Composition: the stores and the repository stack, built from Settings (no aiohttp.web here).

The stack the web layer serves, one wrapper per concern:

    private only   PrivateRepository(private store)
    online         PrivateWins(PrivateRepository(...), UpstreamRepository(client, pages, blobs))
    offline        PrivateWins(PrivateRepository(...), OnlyCached(UpstreamRepository(...)))

`Services` is what the handlers get: the repository, a narrow catalog of the private store for
what pages show beyond the Simple API, the publish service for uploads (which checks a new
name against the upstream side's project list), the users, and `Health` for /ready and
/metrics.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyproxy.config import DEFAULT_UPSTREAM, Settings
from pyproxy.datadir import DataDir
from pyproxy.model import PrivateCatalog, Repository
from pyproxy.publish.service import Publisher
from pyproxy.publish.upstream_names import ListedUpstream
from pyproxy.repository.http import UpstreamClient, UpstreamError, pip_default_index, redact
from pyproxy.repository.offline import OnlyCached
from pyproxy.repository.overlay import PrivateWins
from pyproxy.repository.private import PrivateRepository
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.auth import UserStore
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageStore
from pyproxy.stores.private import PrivateStore


def open_stores(data_dir: Path) -> tuple[PrivateStore, UserStore]:
    layout = DataDir(data_dir)
    return PrivateStore(layout.private), UserStore(layout.users)


def upstream_url(settings: Settings) -> str | None:
    """The configured upstream, pip's own default index when none is set, None for none."""
    if settings.private_only:
        return None
    if settings.upstream_url == DEFAULT_UPSTREAM:
        return pip_default_index()
    return settings.upstream_url


def describe_upstream(settings: Settings) -> str:
    url = upstream_url(settings)
    if url is None:
        return "none (private packages only)"
    return redact(url) + (" (offline: never contacted)" if settings.offline else "")


class Health:
    """What /ready and /metrics read beyond the data directory: whether upstream answered
    lately, a probe of it, and the upstream file cache's gauges."""

    def __init__(
        self, client: UpstreamClient | None = None, blobs: BlobCache | None = None
    ) -> None:
        self._client = client  # None: nothing to watch (no upstream, or offline)
        self.blobs = blobs

    @property
    def watches_upstream(self) -> bool:
        return self._client is not None

    def upstream_answered_within(self, seconds: float) -> bool:
        """A request to upstream succeeded within `seconds`, and none has failed since."""
        if self._client is None:
            return False
        succeeded, failed = self._client.last_success, self._client.last_failure
        return (
            succeeded is not None
            and time.monotonic() - succeeded < seconds
            and (failed is None or failed <= succeeded)
        )

    async def probe_upstream(self) -> str | None:
        """None if upstream answers a HEAD of its index, else what is wrong (one line)."""
        if self._client is None:
            return None
        try:
            await self._client.probe()
        except UpstreamError as exc:
            return f"upstream did not answer: {exc}"
        return None

    def cache_gauges(self) -> Iterator[tuple[str, str, float]]:
        """(name, help, value) of state all workers share, read when asked."""
        if self.blobs is None:
            return
        yield (
            "pyproxy_cache_size_bytes", "Bytes the upstream file cache holds (files and index).",
            self.blobs.volume(),
        )
        yield (
            "pyproxy_cache_max_size_bytes", "The cache's bound ([cache] max_size).",
            self.blobs.max_size,
        )


@dataclass
class Services:
    settings: Settings
    repository: Repository  # what the Simple API, the file routes and the pages serve
    catalog: PrivateCatalog  # the private store, as far as pages read it
    private: PrivateStore  # the store behind catalog and publisher, closed with them
    publisher: Publisher  # where uploads go
    users: UserStore
    health: Health
    upstream_description: str  # for the landing page and start-up log
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()  # the upstream client and caches

    async def close(self) -> None:
        for close in self.closers:
            await close()
        self.private.close()
        self.users.close()


def build_services(settings: Settings) -> Services:
    private, users = open_stores(settings.data_dir)
    repository: Repository = PrivateRepository(private)
    health = Health()
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()
    upstream_names: ListedUpstream | None = None
    url = upstream_url(settings)
    if url is not None:
        layout = DataDir(settings.data_dir)
        upstream = UpstreamRepository(
            UpstreamClient(
                url, timeout=settings.upstream_timeout, ca_bundle=settings.upstream_ca_bundle
            ),
            PageStore(layout.pages),
            BlobCache(layout.files, settings.cache_max_size),
            page_ttl=settings.upstream_page_ttl,
            index_ttl=settings.upstream_index_ttl,
        )
        served: Repository = OnlyCached(upstream) if settings.offline else upstream
        repository = PrivateWins(
            repository, served, settings.merge, private_prefixes=settings.reserved_prefixes
        )
        upstream_names = ListedUpstream(served.list_projects)  # offline: the names it can serve
        health = Health(None if settings.offline else upstream.client, upstream.blobs)
        closers = (upstream.close,)
    return Services(
        settings=settings,
        repository=repository,
        catalog=private,
        private=private,
        publisher=Publisher(
            private, upstream=upstream_names, reserved_prefixes=settings.reserved_prefixes
        ),
        users=users,
        health=health,
        upstream_description=describe_upstream(settings),
        closers=closers,
    )
