"""Composition (pyproxy/compose.py): which repository stack each setting builds, what /ready
watches, and that closing the services closes what was opened. The upstream URLs here are
never contacted (nothing answers there); only the probe of several upstreams asks one, a fake
upstream on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pyproxy.compose import (
    build_services,
    describe_storage,
    describe_upstream,
    private_bodies,
    route_policy,
)
from pyproxy.datadir import DataDir
from pyproxy.model import DistFile, NormalizedName, Origin, ProjectPage
from pyproxy.repository.offline import OnlyCached
from pyproxy.repository.overlay import PrivateWins
from pyproxy.repository.policy import PolicyRepository
from pyproxy.repository.private import PrivateRepository
from pyproxy.repository.routes import FilesFrom, Routed
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.settings import Settings
from pyproxy.stores.bucket_files import BucketFiles
from pyproxy.stores.first_seen import FirstSeenStore
from pyproxy.stores.objects import BucketUnavailable
from pyproxy.upstream_settings import UpstreamSettings
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server

UPSTREAM = "http://127.0.0.1:9/simple/"  # the discard port: nothing answers there


def settings(tmp_path: Path, **overrides: object) -> Settings:
    defaults = Settings(data_dir=tmp_path / "data", upstream_url=UPSTREAM)
    return dataclasses.replace(defaults, **overrides)


@pytest.mark.parametrize(
    ("overrides", "served", "watched"),
    [
        ({"upstream_url": ""}, None, False),
        ({}, UpstreamRepository, True),
        ({"offline": True}, OnlyCached, False),
    ],
    ids=["private-only", "online", "offline"],
)
async def test_the_stack_each_setting_builds(
    tmp_path: Path, overrides: dict[str, object], served: type | None, watched: bool
) -> None:
    services = build_services(settings(tmp_path, **overrides))
    try:
        repository = services.repository
        if served is None:
            assert isinstance(repository, PrivateRepository)
            assert services.health.blobs is None and services.closers == ()
            assert services.policy_for(NormalizedName("anything")) is None
        else:
            assert isinstance(repository, PrivateWins)
            assert isinstance(repository.private, PrivateRepository)
            # the policy sits under private-wins: private files are never held back
            assert isinstance(repository.upstream, PolicyRepository)
            assert type(repository.upstream.upstream) is served
            assert services.policy_for(NormalizedName("anything")) is repository.upstream
            assert services.health.blobs is not None
        assert services.health.watches_upstream is watched
        assert services.catalog is services.private  # the store, seen through PrivateCatalog
    finally:
        await services.close()


async def test_merge_reaches_the_private_wins_wrapper(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path, merge=("Foo_Bar",)))
    try:
        assert isinstance(services.repository, PrivateWins)
        assert services.repository.merge == {"foo-bar"}
    finally:
        await services.close()


async def test_close_closes_the_upstream_client(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path))
    repository = services.repository
    assert isinstance(repository, PrivateWins)
    assert isinstance(repository.upstream, PolicyRepository)
    upstream = repository.upstream.upstream
    assert isinstance(upstream, UpstreamRepository)
    session = upstream.client.session  # opened as the first request would
    assert not session.closed
    first_seen = repository.upstream.first_seen
    assert first_seen is not None
    await services.close()
    assert session.closed
    with pytest.raises(sqlite3.ProgrammingError):  # closed with the upstream side
        first_seen.record("foo", ["foo-1.0.tar.gz"], 0.0)


class _UndatedPage:
    """An upstream whose one page lists a file with no upload time."""

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        return ProjectPage.build(name, (DistFile("foo-1.0.tar.gz", {}, origin=Origin.UPSTREAM),))


async def test_close_records_the_first_seen_times_still_waiting(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path))
    repository = services.repository
    assert isinstance(repository, PrivateWins)
    policed = repository.upstream
    assert isinstance(policed, PolicyRepository)
    policed.upstream = _UndatedPage()  # type: ignore[assignment]  # only its pages are asked for
    await policed.project_page(NormalizedName("foo"))
    await services.close()  # at once: the times wait to be recorded after the page is out
    store = FirstSeenStore(DataDir(tmp_path / "data").first_seen)
    try:
        assert list(store.record("foo", [], 0.0)) == ["foo-1.0.tar.gz"]
    finally:
        store.close()


async def test_the_policy_reaches_its_wrapper(tmp_path: Path) -> None:
    services = build_services(settings(
        tmp_path, policy_min_age="7d", policy_deny=("evil-pkg",), policy_exempt=("Certifi",),
        policy_allow_only=("Certifi", "Evil_Pkg"), policy_missing_upload_time="deny",
    ))
    try:
        assert isinstance(services.repository, PrivateWins)
        wrapper = services.repository.upstream
        assert isinstance(wrapper, PolicyRepository)
        assert wrapper.policy.min_age == timedelta(days=7)
        assert [rule.name for rule in wrapper.policy.exempt] == ["certifi"]
        assert [rule.name for rule in wrapper.policy.deny] == ["evil-pkg"]
        assert [rule.name for rule in wrapper.policy.allow_only] == ["certifi", "evil-pkg"]
        assert wrapper.policy.missing_upload_time == "deny"
    finally:
        await services.close()


@pytest.mark.parametrize(
    ("overrides", "described"),
    [
        ({"upstream_url": ""}, "none (private packages only)"),
        ({"upstream_url": "https://u:secret@index.example.test/simple/"},
         "https://index.example.test/simple/"),
        ({"offline": True}, UPSTREAM + " (offline: never contacted)"),
    ],
)
def test_describe_upstream(tmp_path: Path, overrides: dict[str, object], described: str) -> None:
    assert describe_upstream(settings(tmp_path, **overrides)) == described


def test_describe_storage_names_the_cluster_without_its_password(tmp_path: Path) -> None:
    assert describe_storage(settings(tmp_path)) == "SQLite and files in the data directory"
    cluster = settings(
        tmp_path, storage_database="postgresql://px:s3cret@db:5432/px", storage_objects="s3://b/p",
        storage_node_url="http://10.0.0.5:8080",
    )
    assert describe_storage(cluster) == ("PostgreSQL postgresql://px:***@db:5432/px, bucket "
                                         "s3://b/p, this node http://10.0.0.5:8080")


# ---- [[upstreams]]


def gpu_route(**overrides: object) -> UpstreamSettings:
    values: dict[str, object] = {
        "name": "gpu", "url": "https://u:secret@gpu.example.test/simple/", "projects": ("torch",)
    }
    return UpstreamSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
async def test_routes_build_a_routed_stack(tmp_path: Path, offline: bool) -> None:
    services = build_services(settings(tmp_path, upstreams=(gpu_route(offline=offline),)))
    try:
        repository = services.repository
        assert isinstance(repository, PrivateWins)
        routed = repository.upstream
        assert isinstance(routed, Routed)
        assert isinstance(routed.default, PolicyRepository)  # each upstream under its [policy]
        default = routed.default.upstream
        assert type(default) is UpstreamRepository  # [upstream] stays online
        (route,) = routed.route_list
        assert isinstance(route.repository, PolicyRepository)
        files_from = route.repository.upstream
        assert isinstance(files_from, FilesFrom)
        below = files_from.upstream
        assert type(below) is (OnlyCached if offline else UpstreamRepository)
        upstream = below.upstream if isinstance(below, OnlyCached) else below
        assert isinstance(upstream, UpstreamRepository)
        assert upstream.client.index_url == "https://gpu.example.test/simple/"  # no password
        assert upstream.blobs is default.blobs  # one bound over every upstream file
        assert upstream.pages is not default.pages
        assert services.upstreams is routed
        assert services.health.watches_upstream
        assert len(services.health._clients) == (1 if offline else 2)
    finally:
        await services.close()


async def test_close_closes_every_upstream_client(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path, upstreams=(gpu_route(),)))
    routed = services.repository.upstream  # type: ignore[attr-defined]
    route_upstream = routed.route_list[0].repository.upstream.upstream  # policy, files_from
    sessions = [routed.default.upstream.client.session, route_upstream.client.session]
    await services.close()
    assert all(session.closed for session in sessions)


async def test_global_offline_makes_every_route_offline(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path, offline=True, upstreams=(gpu_route(),)))
    try:
        routed = services.repository.upstream  # type: ignore[attr-defined]
        assert isinstance(routed.route_list[0].repository.upstream.upstream, OnlyCached)
        assert not services.health.watches_upstream
    finally:
        await services.close()


def test_describe_upstream_names_the_routes(tmp_path: Path) -> None:
    described = describe_upstream(
        settings(tmp_path, upstreams=(gpu_route(projects=("torch", "nvidia-*")),))
    )
    assert described == (
        UPSTREAM + "; routed: gpu (https://gpu.example.test/simple/) for torch, nvidia-*"
    )
    assert "secret" not in described


async def test_routes_without_a_default_upstream(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path, upstream_url="", upstreams=(gpu_route(),)))
    try:
        routed = services.repository.upstream  # type: ignore[attr-defined]
        assert isinstance(routed, Routed) and routed.default is None
        assert services.upstream_description == (
            "none (private packages and the names routed to [[upstreams]] only)"
        )
    finally:
        await services.close()


async def test_a_route_overrides_the_global_policy_for_its_own_names_only(tmp_path: Path) -> None:
    route = gpu_route(policy=(("min_age", "0d"), ("exempt", ("torch==2.1.0",))))
    assert route_policy(route) == {"policy_min_age": "0d", "policy_exempt": ("torch==2.1.0",)}
    services = build_services(
        settings(tmp_path, upstreams=(route,), policy_min_age="7d", policy_deny=("evil",))
    )
    try:
        routed_policy = services.policy_for(NormalizedName("torch"))
        default_policy = services.policy_for(NormalizedName("requests"))
        assert routed_policy is not None and default_policy is not None
        assert routed_policy is not default_policy
        assert not routed_policy.policy.min_age  # "0d": no cooldown on the GPU index
        assert [rule.text for rule in routed_policy.policy.exempt] == ["torch==2.1.0"]
        assert [rule.text for rule in routed_policy.policy.deny] == ["evil"]  # not overridden
        assert default_policy.policy.min_age == timedelta(days=7)
        assert default_policy.policy.exempt == ()
    finally:
        await services.close()


async def test_objects_put_private_bodies_in_the_bucket(
    tmp_path: Path, s3: S3Server, bucket: str
) -> None:
    services = build_services(settings(
        tmp_path, upstream_url="", storage_objects=f"s3://{bucket}/pfx",
        storage_s3_endpoint=s3.endpoint, cache_local_max_size=12345,
    ))
    try:
        files = services.private.files
        assert isinstance(files, BucketFiles)
        assert files.bucket.url == f"s3://{bucket}/pfx" and files.copies.max_size == 12345 // 4  # a quarter
        assert files.copies.directory == tmp_path / "data" / "cache" / "copies"
    finally:
        await services.close()
    assert private_bodies(settings(tmp_path)) is None  # one box: data_dir, as ever


def test_an_unreachable_bucket_is_one_line(tmp_path: Path, bucket: str) -> None:
    unreachable = settings(tmp_path, storage_objects=f"s3://{bucket}/pfx",
                           storage_s3_endpoint="http://127.0.0.1:9")
    with pytest.raises(BucketUnavailable) as failure:
        private_bodies(unreachable, check=True)
    assert "\n" not in str(failure.value) and f"bucket s3://{bucket}/pfx" in str(failure.value)


# ---- [storage] database: the cluster's stores ----


async def test_a_database_setting_opens_the_postgresql_stores_migrated(tmp_path: Path, pg_dsn: str) -> None:
    import psycopg

    from pyproxy.compose import open_stores
    from pyproxy.stores.pg.private import PgPrivateStore
    from pyproxy.stores.pg.users import PgUserStore
    from pyproxy.stores.private import PrivateStore

    embedded = open_stores(settings(tmp_path, upstream_url=""))
    assert isinstance(embedded[0], PrivateStore)
    for store in embedded:
        store.close()
    services = build_services(settings(tmp_path, upstream_url="", storage_database=pg_dsn))
    try:
        assert isinstance(services.private, PgPrivateStore)
        assert isinstance(services.users, PgUserStore)
        assert services.catalog is services.private
        listener = services.private._listener
        assert listener is not None and listener.connected  # a server's worker listens
        services.users.add_user("alice", "secret123")
        assert services.users.exists("alice")
    finally:
        await services.close()
    assert not listener.connected  # closed with the services
    with psycopg.connect(pg_dsn) as conn:
        versions = {row[0] for row in conn.execute("SELECT version FROM schema_versions")}
    assert {10, 11, 30, 31} <= versions


async def test_a_database_setting_puts_the_page_caches_and_first_seen_times_in_it(
    tmp_path: Path, pg_dsn: str, s3: S3Server, bucket: str
) -> None:
    from pyproxy.stores.pg.first_seen import PgFirstSeenStore
    from pyproxy.stores.pg.pages import ClusterPageStore

    services = build_services(settings(
        tmp_path, storage_database=pg_dsn, storage_objects=f"s3://{bucket}",
        storage_s3_endpoint=s3.endpoint, storage_node_url="http://127.0.0.1:9",
        upstreams=(gpu_route(),), upstream_page_memory=2**20,
    ))
    try:
        routed = services.repository.upstream  # type: ignore[attr-defined]
        assert isinstance(routed, Routed) and isinstance(routed.default, PolicyRepository)
        default = routed.default.upstream
        assert isinstance(default, UpstreamRepository)
        assert isinstance(default.pages, ClusterPageStore) and default.pages._upstream == ""
        route = routed.route_list[0].repository
        assert isinstance(route, PolicyRepository) and isinstance(route.upstream, FilesFrom)
        gpu = route.upstream.upstream
        assert isinstance(gpu, UpstreamRepository)
        assert isinstance(gpu.pages, ClusterPageStore) and gpu.pages._upstream == "gpu"
        assert isinstance(routed.default.first_seen, PgFirstSeenStore)
        assert route.first_seen is routed.default.first_seen
        # in data_dir: only the project list's directory (each node keeps its own)
        assert not any(path.is_file() for path in (tmp_path / "data" / "cache" / "pages").rglob("*"))
        listener = services.private._listener  # type: ignore[attr-defined]
    finally:
        await services.close()
    assert not listener.connected  # the pool and the listener closed with the last store


async def test_the_file_index_pool_is_renewed_once_the_database_is_back(
    tmp_path: Path, pg_dsn: str, s3: S3Server, bucket: str, postgres: PostgresServer
) -> None:
    from pyproxy.stores.pg.notify import wait_connected

    services = build_services(settings(
        tmp_path, storage_database=pg_dsn, storage_objects=f"s3://{bucket}",
        storage_s3_endpoint=s3.endpoint, storage_node_url="http://127.0.0.1:9",
    ))
    try:
        assert services.cluster_blobs is not None and services.cluster_blobs.database is not None
        index = services.cluster_blobs.database
        before = index.pool
        listener = services.private._listener  # type: ignore[attr-defined]
        postgres.stop()
        try:
            deadline = time.monotonic() + 10
            while listener.connected:
                assert time.monotonic() < deadline, "the listener did not notice"
                await asyncio.sleep(0.02)
        finally:
            postgres.start()
        assert await asyncio.to_thread(wait_connected, listener, 15)
        # a pool that waited out its reconnect backoff would keep serving 503s long after
        assert index.pool is not before
        assert services.cluster_blobs.shared.index.get("no-such-key") is None
    finally:
        await services.close()


_EMBEDDED = """
import asyncio, sys
from pathlib import Path
from pyproxy.cli import main
from pyproxy.compose import build_services
from pyproxy.settings import Settings
from pyproxy.web.app import build_app

async def serve_once() -> None:
    services = build_services(Settings(data_dir=Path(sys.argv[1]), upstream_url=sys.argv[2]))
    build_app(services)
    await services.close()

asyncio.run(serve_once())
print(sorted({m.split(".")[0] for m in sys.modules} & {"psycopg", "psycopg_pool", "obstore"}))
"""


def test_the_embedded_default_loads_no_cluster_driver(tmp_path: Path) -> None:
    # psycopg alone is 22 MB of every worker's memory, for stores the embedded default never opens
    done = subprocess.run([sys.executable, "-c", _EMBEDDED, str(tmp_path / "data"), UPSTREAM],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
