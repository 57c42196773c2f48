"""Composition (pyproxy/compose.py): which repository stack each setting builds, what /ready
watches, and that closing the services closes what was opened. The upstream URLs here are
never contacted (nothing answers there); only the probe of several upstreams asks one, a fake
upstream on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from pyproxy.compose import Health, build_services, describe_upstream, route_policy
from pyproxy.config import Settings
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.offline import OnlyCached
from pyproxy.repository.overlay import PrivateWins
from pyproxy.repository.private import PrivateRepository
from pyproxy.repository.routes import FilesFrom, Routed
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.upstream_settings import UpstreamSettings
from tests.fake_upstream import FakeUpstream

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
        else:
            assert isinstance(repository, PrivateWins)
            assert isinstance(repository.private, PrivateRepository)
            assert type(repository.upstream) is served
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
    assert isinstance(repository.upstream, UpstreamRepository)
    session = repository.upstream.client.session  # opened as the first request would
    assert not session.closed
    await services.close()
    assert session.closed


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


async def test_health_without_upstream_has_nothing_to_report() -> None:
    health = Health()
    assert not health.watches_upstream
    assert not health.upstream_answered_within(60.0)
    assert await health.probe_upstream() is None
    assert list(health.cache_gauges()) == []


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
        assert type(routed.default) is UpstreamRepository  # [upstream] stays online
        (route,) = routed.route_list
        assert isinstance(route.repository, FilesFrom)
        below = route.repository.upstream
        assert type(below) is (OnlyCached if offline else UpstreamRepository)
        upstream = below.upstream if isinstance(below, OnlyCached) else below
        assert isinstance(upstream, UpstreamRepository)
        assert upstream.client.index_url == "https://gpu.example.test/simple/"  # no password
        assert upstream.blobs is routed.default.blobs  # one bound over every upstream file
        assert upstream.pages is not routed.default.pages
        assert services.upstreams is routed
        assert services.health.watches_upstream
        assert len(services.health._clients) == (1 if offline else 2)
    finally:
        await services.close()


async def test_close_closes_every_upstream_client(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path, upstreams=(gpu_route(),)))
    routed = services.repository.upstream  # type: ignore[attr-defined]
    route_upstream = routed.route_list[0].repository.upstream
    sessions = [routed.default.client.session, route_upstream.client.session]
    await services.close()
    assert all(session.closed for session in sessions)


async def test_global_offline_makes_every_route_offline(tmp_path: Path) -> None:
    services = build_services(settings(tmp_path, offline=True, upstreams=(gpu_route(),)))
    try:
        routed = services.repository.upstream  # type: ignore[attr-defined]
        assert isinstance(routed.route_list[0].repository.upstream, OnlyCached)
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


async def test_health_probes_every_upstream_and_names_the_one_that_fails(
    fake: FakeUpstream,
) -> None:
    answering = UpstreamClient(fake.index_url, timeout=5)
    down = UpstreamClient(UPSTREAM, timeout=5)
    health = Health([("", answering), ("gpu", down)])
    try:
        problem = await health.probe_upstream()
        assert problem is not None and problem.startswith("upstream gpu did not answer: "), problem
        assert fake.count("/simple/", "HEAD") == 1
        assert answering.last_success is not None
        assert not health.upstream_answered_within(60.0)  # one answered, the other did not
        assert await Health([("", answering)]).probe_upstream() is None
    finally:
        await answering.close()
        await down.close()


async def test_per_upstream_policy_keys_are_kept_for_the_policy_wrapper(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = gpu_route(policy=(("min_age", "0d"), ("exempt", ("torch==2.1.0",))))
    assert route_policy(route) == {"policy_min_age": "0d", "policy_exempt": ("torch==2.1.0",)}
    with caplog.at_level(logging.WARNING, logger="pyproxy.compose"):
        services = build_services(settings(tmp_path, upstreams=(route,)))
    await services.close()
    # until the [policy] wrapper is composed here, an operator is told the keys do nothing
    assert "upstreams.gpu: min_age, exempt not applied" in caplog.text
