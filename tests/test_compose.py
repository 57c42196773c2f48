"""Composition (pyproxy/compose.py): which repository stack each setting builds, what /ready
watches, and that closing the services closes what was opened. No request is sent: nothing here
contacts the (unreachable) upstream URLs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyproxy.compose import Health, build_services, describe_upstream
from pyproxy.config import Settings
from pyproxy.repository.offline import OnlyCached
from pyproxy.repository.overlay import PrivateWins
from pyproxy.repository.private import PrivateRepository
from pyproxy.repository.upstream import UpstreamRepository

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
