"""Composition: the stores and the repository stack, built from Settings (no aiohttp.web here).

The stack the web layer serves, one wrapper per concern:

    private only   PrivateRepository(private store)
    online         PrivateWins(PrivateRepository(...),
                               PolicyRepository(UpstreamRepository(client, pages, blobs), policy))
    offline        PrivateWins(PrivateRepository(...),
                               PolicyRepository(OnlyCached(UpstreamRepository(...)), policy))
    [[upstreams]]  PrivateWins(PrivateRepository(...), Routed(default, routes)), each route
                   PolicyRepository(FilesFrom([OnlyCached](UpstreamRepository(its client, its pages,
                   blobs))), its policy)

Every upstream has its own client (credentials, CA bundle, timeout) and page cache; they share
the blob cache, whose keys are the files' sha256, so one bound covers all upstream files.

[policy] wraps each upstream (its own overrides from [[upstreams]]) below PrivateWins, so private
files are never held back; one first-seen store serves them all, since a name has one upstream.

`Services` is what the handlers get: the repository, a narrow catalog of the private store for
what pages show beyond the Simple API, the publish service for uploads (which checks a new
name against the upstream side's project list), the users, `Health` for /ready and /metrics,
and the warm-up (repository/warmup.py), which fetches through the same repository.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyproxy.datadir import DataDir
from pyproxy.health import Health
from pyproxy.model import NormalizedName, PrivateCatalog, Repository
from pyproxy.publish.service import Publisher
from pyproxy.publish.upstream_names import ListedUpstream, RoutedUpstream, UpstreamNames
from pyproxy.repository.http import UpstreamClient, pip_default_index, redact
from pyproxy.repository.offline import OnlyCached
from pyproxy.repository.overlay import PrivateWins
from pyproxy.repository.policy import PolicyRepository, policy_from_settings
from pyproxy.repository.private import PrivateRepository
from pyproxy.repository.routes import FilesFrom, Route, Routed, SingleUpstream, UpstreamRoutes
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.repository.warmup import Side, WarmUp
from pyproxy.settings import DEFAULT_UPSTREAM, Settings
from pyproxy.stores.auth import UserStore
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.filecache import FileCache
from pyproxy.stores.first_seen import FirstSeen, FirstSeenStore
from pyproxy.stores.interfaces import PrivateStoreAPI, UserStoreAPI
from pyproxy.stores.local_copies import LocalCopies
from pyproxy.stores.pages import PageCache, PageStore
from pyproxy.stores.private import PrivateStore
from pyproxy.stores.private_files import PrivateFiles
from pyproxy.upstream_settings import PolicyValue, UpstreamSettings

# A cluster's modules are imported only where [storage] asks for them: the embedded default
# never loads their drivers (psycopg alone is 22 MB of each process's memory).
if TYPE_CHECKING:
    from pyproxy.stores.bucket_files import BucketFiles
    from pyproxy.stores.clusterblobs import ClusterBlobCache
    from pyproxy.stores.pg.cluster import Shared

log = logging.getLogger("pyproxy.compose")


# [cache] local_max_size is one bound for a node's local copies: a quarter for private bodies, the
# rest for upstream files (read far more often, and refetched from upstream if need be)
_PRIVATE_SHARE = 4


def local_bounds(settings: Settings) -> tuple[int, int]:
    """(private copies, upstream copies) of [cache] local_max_size."""
    private = settings.cache_local_max_size // _PRIVATE_SHARE
    return private, settings.cache_local_max_size - private


def open_stores(
    settings: Settings, *, listen: bool = False
) -> tuple[PrivateStoreAPI, UserStoreAPI]:
    """The private store and the users: in data_dir (SQLite), or with [storage] database set,
    in PostgreSQL (migrated first; DatabaseUnavailable, one line, when it cannot be reached).
    `listen`: a server's worker, which holds what it reads in memory and hears of changes.
    The bodies: see private_bodies."""
    layout = DataDir(settings.data_dir)
    bodies = private_bodies(settings)
    if not settings.storage_database:
        return PrivateStore(layout.private, bodies), UserStore(layout.users)
    from pyproxy.stores.pg.cluster import open_cluster_stores  # psycopg only for a cluster

    files = PrivateFiles(layout.private) if bodies is None else bodies
    return open_cluster_stores(settings.storage_database, files, listen=listen)


def private_bodies(settings: Settings, *, check: bool = False) -> BucketFiles | None:
    """Where private bodies live: None (data_dir/private/blobs) unless [storage] objects names a
    bucket; then in it, with this node's bounded local copies in data_dir. `check`: ask the
    bucket now (BucketUnavailable, one line, when it does not answer), for start-up."""
    if not settings.storage_objects:
        return None
    from pyproxy.stores.bucket_files import BucketFiles
    from pyproxy.stores.objects import Bucket

    layout = DataDir(settings.data_dir)
    bucket = Bucket(settings.storage_objects, endpoint=settings.storage_s3_endpoint)
    if check:
        bucket.check()
        bucket.sweep_staging()  # what a dead node left; not in a forked worker, where it hangs
    copies = LocalCopies(layout.copies, local_bounds(settings)[0])
    return BucketFiles(bucket, layout.private / "tmp", copies)


def upstream_url(settings: Settings) -> str | None:
    """The configured [upstream], pip's own default index when none is set, None for none."""
    if settings.upstream_url == "":
        return None
    if settings.upstream_url == DEFAULT_UPSTREAM:
        return pip_default_index()
    return settings.upstream_url


def _offline_note(offline: bool) -> str:
    return " (offline: never contacted)" if offline else ""


def describe_default(settings: Settings) -> str:
    """[upstream], the one serving every name no route claims: for pages."""
    url = upstream_url(settings)
    if url is None:
        if settings.private_only:
            return "none (private packages only)"
        return "none (private packages and the names routed to [[upstreams]] only)"
    return redact(url) + _offline_note(settings.offline)


def describe_route(upstream: UpstreamSettings, offline: bool) -> str:
    return f"{upstream.name} ({redact(upstream.url)}){_offline_note(offline)}"


def describe_storage(settings: Settings) -> str:
    """Where the shared state is, for the start-up log (the DSN's password never shown)."""
    if not settings.storage_database:
        return "SQLite and files in the data directory"
    from pyproxy.stores.pg.connect import redact_dsn  # psycopg only for a cluster

    return (f"PostgreSQL {redact_dsn(settings.storage_database)}, bucket "
            f"{settings.storage_objects}, this node {settings.storage_node_url}")


def describe_upstream(settings: Settings) -> str:
    """Every upstream, for the start-up log."""
    routes = "; ".join(
        f"{describe_route(u, settings.offline or u.offline)} for {', '.join(u.projects)}"
        for u in settings.upstreams
    )
    return describe_default(settings) + (f"; routed: {routes}" if routes else "")


@dataclass
class Services:
    settings: Settings
    repository: Repository  # what the Simple API, the file routes and the pages serve
    catalog: PrivateCatalog  # the private store, as far as pages read it
    private: PrivateStoreAPI  # the store behind catalog and publisher, closed with them
    publisher: Publisher  # where uploads go
    users: UserStoreAPI
    health: Health
    upstream_description: str  # [upstream], for the landing page
    upstreams: UpstreamRoutes  # which upstream serves a name, for pages
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()  # the upstream client and caches
    # a cluster node's upstream file cache, for the route other nodes follow downloads on
    cluster_blobs: ClusterBlobCache | None = None
    warmup: WarmUp | None = None  # fetches ahead of the client; None: off, offline, no upstream
    # the [policy] wrapper that serves an upstream name (for `pyproxy policy check`)
    policy_for: Callable[[NormalizedName], PolicyRepository | None] = lambda _name: None

    async def close(self) -> None:
        for close in self.closers:
            await close()
        self.private.close()
        self.users.close()


def _upstream(
    url: str, pages: PageCache, blobs: FileCache, settings: Settings, *, timeout: float,
    ca_bundle: str, page_ttl: float, index_ttl: float, files_from: tuple[str, ...],
) -> UpstreamRepository:
    """One upstream index: its own settings, and the download rules and page memory of all."""
    return UpstreamRepository(
        UpstreamClient(
            url,
            timeout=timeout,
            ca_bundle=ca_bundle,
            files_from=files_from,
            deadline=settings.upstream_deadline,
            min_rate=settings.upstream_min_rate,
            rate_window=settings.upstream_rate_window,
        ),
        pages,
        blobs,
        page_ttl=page_ttl,
        index_ttl=index_ttl,
    )


def _cluster(private: PrivateStoreAPI) -> Shared:
    from pyproxy.stores.pg.cluster import ClusterPrivateStore  # psycopg only for a cluster

    assert isinstance(private, ClusterPrivateStore)
    return private.shared


def page_cache(settings: Settings, private: PrivateStoreAPI, upstream: str) -> PageCache:
    """The page cache of [upstream] ('') or of a [[upstreams]] name: in data_dir, or with
    [storage] database set in PostgreSQL, on the private store's pool and listener."""
    memory = settings.upstream_page_memory
    layout = DataDir(settings.data_dir)
    directory = layout.upstream_pages(upstream) if upstream else layout.pages
    if settings.storage_database:  # the project list is built in data_dir from the bucket's
        from pyproxy.stores.objects import Bucket
        from pyproxy.stores.pg.cluster import cluster_pages

        bucket = Bucket(settings.storage_objects, endpoint=settings.storage_s3_endpoint)
        return cluster_pages(
            _cluster(private), upstream, directory, memory_bytes=memory, bucket=bucket
        )
    return PageStore(directory, memory_bytes=memory)


def first_seen_store(settings: Settings, private: PrivateStoreAPI) -> FirstSeen:
    if settings.storage_database:
        from pyproxy.stores.pg.cluster import cluster_first_seen

        return cluster_first_seen(_cluster(private))
    return FirstSeenStore(DataDir(settings.data_dir).first_seen)


def file_cache(settings: Settings, layout: DataDir) -> FileCache:
    """The upstream file cache: in data_dir, or a cluster node's ([storage] database set), with
    its local copies in data_dir bounded by [cache] local_max_size."""
    if not settings.storage_database:
        return BlobCache(layout.files, settings.cache_max_size)
    from pyproxy.stores.clusterblobs import open_cluster_blobs

    return open_cluster_blobs(
        database=settings.storage_database, objects=settings.storage_objects,
        s3_endpoint=settings.storage_s3_endpoint, node_url=settings.storage_node_url,
        directory=layout.files, max_size=settings.cache_max_size,
        local_max_size=local_bounds(settings)[1],
    )


def route_policy(route: UpstreamSettings) -> dict[str, PolicyValue]:
    """A routed upstream's [policy] keys as the Settings fields of the global [policy]
    (`policy_min_age`, …), to build its own policy from the global one with these replaced."""
    return {f"policy_{key}": value for key, value in route.policy}


def build_services(settings: Settings) -> Services:
    private, users = open_stores(settings, listen=True)
    repository: Repository = PrivateRepository(private)
    health = Health()
    closers: list[Callable[[], Awaitable[None]]] = []
    names: UpstreamRoutes = SingleUpstream(describe_default(settings))
    policed: dict[str, PolicyRepository] = {}  # by upstream name, "" for [upstream]
    sides: dict[str, Side] = {}  # the same, for the warm-up
    upstream_names: UpstreamNames | None = None
    blobs: FileCache | None = None
    warmup: WarmUp | None = None
    url = upstream_url(settings)
    if url is not None or settings.upstreams:
        layout = DataDir(settings.data_dir)
        blobs = file_cache(settings, layout)
        if (cluster_blobs := _cluster_blobs(blobs, settings)) is not None:
            _renewed_with_the_listener(cluster_blobs, _cluster(private))
        first_seen = first_seen_store(settings, private)

        async def close_first_seen() -> None:
            for policed_repository in policed.values():
                await policed_repository.settled()  # the times waiting to be recorded
            first_seen.close()

        closers.append(close_first_seen)
        watched: list[tuple[str, UpstreamClient]] = []
        default: Repository | None = None
        # a new private name is checked against upstream's own lists, whatever [policy] serves
        unfiltered: Repository | None = None
        if url is not None:
            upstream = _upstream(
                url, page_cache(settings, private, ""), blobs, settings,
                timeout=settings.upstream_timeout,
                ca_bundle=settings.upstream_ca_bundle, page_ttl=settings.upstream_page_ttl,
                index_ttl=settings.upstream_index_ttl, files_from=settings.upstream_files_from,
            )
            unfiltered = OnlyCached(upstream) if settings.offline else upstream
            policed[""] = PolicyRepository(unfiltered, policy_from_settings(settings), first_seen)
            default = policed[""]
            sides[""] = Side(
                upstream.pages, settings.upstream_page_ttl, policed[""].policy, settings.offline
            )
            closers.append(upstream.close)  # its client, its pages and the shared blob cache
            if not settings.offline:
                watched.append(("", upstream.client))
        routes, unfiltered_routes = [], []
        for route in settings.upstreams:
            routed = _upstream(
                route.url, page_cache(settings, private, route.name), blobs, settings,
                timeout=route.timeout, ca_bundle=route.ca_bundle, page_ttl=route.page_ttl,
                index_ttl=route.index_ttl, files_from=route.files_from,
            )
            offline = settings.offline or route.offline
            served: Repository = FilesFrom(OnlyCached(routed) if offline else routed, route)
            own_settings = dataclasses.replace(settings, **route_policy(route))  # type: ignore[arg-type]  # the keys are policy_* fields, checked by config
            own_policy = policy_from_settings(own_settings)
            policed[route.name] = PolicyRepository(served, own_policy, first_seen)
            sides[route.name] = Side(routed.pages, route.page_ttl, own_policy, offline)
            described = describe_route(route, offline)
            routes.append(Route(route, policed[route.name], described))
            unfiltered_routes.append(Route(route, served, described))
            closers.append(routed.close)
            if not offline:
                watched.append((route.name, routed.client))
        if routes:
            routed_names = Routed(default, describe_default(settings), routes)
            default, names = routed_names, routed_names
            unfiltered = Routed(unfiltered, describe_default(settings), unfiltered_routes)
        assert default is not None and unfiltered is not None
        overlay = PrivateWins(
            repository, default, settings.merge, private_prefixes=settings.reserved_prefixes
        )
        repository = overlay
        # for uploads: the names upstream serves (offline: those it can serve), each asked of
        # the upstream serving it, never of the merged list, which drops a list that failed
        if isinstance(unfiltered, Routed):
            default_names = (
                None if unfiltered.default is None
                else ListedUpstream(unfiltered.default.list_projects)
            )
            upstream_names = RoutedUpstream(unfiltered.is_routed, default_names)
        else:
            upstream_names = ListedUpstream(unfiltered.list_projects)
        health = Health(watched, blobs)
        if settings.upstream_warm_up and not settings.offline:
            warmup = WarmUp(
                repository, lambda name: sides.get(_route_name(names, name)),
                overlay.goes_upstream, concurrency=settings.upstream_warm_up_concurrency,
                budget=settings.upstream_warm_up_budget,
                metadata=settings.upstream_warm_up_metadata,
                downloads=settings.upstream_warm_up_downloads,
                max_file_size=settings.upstream_warm_up_max_file_size,
            )
            closers.insert(0, warmup.close)  # its tasks first, then what they use
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
        upstream_description=describe_default(settings),
        upstreams=names,
        closers=tuple(closers),
        cluster_blobs=_cluster_blobs(blobs, settings),
        warmup=warmup,
        policy_for=lambda name: policed.get(_route_name(names, name)),
    )


def _route_name(names: UpstreamRoutes, name: NormalizedName) -> str:
    """The name of the upstream serving `name`: a route's, or "" for [upstream]."""
    route = names.route_for(name) if isinstance(names, Routed) else None
    return "" if route is None else route.settings.name


def _closer(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def closing() -> None:
        close()

    return closing


def _renewed_with_the_listener(blobs: ClusterBlobCache, shared: Shared) -> None:
    """The file index's pool renewed when the private store's is: once the server is back."""
    if shared.listener is not None and blobs.database is not None:
        shared.listener.on_back(blobs.database.reset)


def _cluster_blobs(blobs: FileCache | None, settings: Settings) -> ClusterBlobCache | None:
    if blobs is None or not settings.storage_database:  # no upstream, or one box
        return None
    from pyproxy.stores.clusterblobs import ClusterBlobCache

    assert isinstance(blobs, ClusterBlobCache)  # file_cache's, for a cluster
    return blobs
