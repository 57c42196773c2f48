"""pyproxy.health: what /ready and /metrics read of the upstreams and the file cache."""

from __future__ import annotations

from pyproxy.health import Health
from pyproxy.repository.http import UpstreamClient
from tests.fake_upstream import FakeUpstream

UPSTREAM = "http://127.0.0.1:9/simple/"  # the discard port: nothing answers there


async def test_health_without_upstream_has_nothing_to_report() -> None:
    health = Health()
    assert not health.watches_upstream
    assert not health.upstream_answered_within(60.0)
    assert await health.probe_upstream() is None
    assert list(health.cache_gauges()) == []


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
