"""GET /health and GET /ready (pyproxy.web.ops); /metrics is tests/test_metrics.py."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from pyproxy.web.context import Services
from tests.fake_upstream import FakeUpstream

MakeClient = Callable[..., Awaitable[tuple[TestClient, Services]]]
CACHING_HEADERS = ("Cache-Control", "ETag", "Last-Modified", "Expires")


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    fake.add_file("up-proj", "up_proj-1.0.tar.gz", b"body")
    return fake


async def answer(client: TestClient, path: str) -> tuple[int, str]:
    response = await client.get(path)
    assert response.content_type == "text/plain"
    assert not [name for name in CACHING_HEADERS if name in response.headers]
    return response.status, await response.text()


def probes(fake: FakeUpstream) -> int:
    return sum(1 for method, _ in fake.requests if method == "HEAD")


async def test_health(client: TestClient) -> None:
    assert await answer(client, "/health") == (200, "ok\n")


async def test_private_only_is_ready(client: TestClient) -> None:
    assert await answer(client, "/ready") == (200, "ready\n")


async def test_ready_probes_a_live_upstream_once(fake: FakeUpstream, make_client: MakeClient) -> None:
    client, _ = await make_client(upstream_url=fake.index_url)
    assert await answer(client, "/ready") == (200, "ready\n")
    assert fake.requests == [("HEAD", "/simple/")]  # headers only: the index can be huge
    assert await answer(client, "/ready") == (200, "ready\n")
    assert probes(fake) == 1  # the success is recent: no second probe


async def test_a_recent_upstream_answer_needs_no_probe(fake: FakeUpstream, make_client: MakeClient) -> None:
    client, _ = await make_client(upstream_url=fake.index_url)
    assert (await client.get("/simple/up-proj/")).status == 200
    assert await answer(client, "/ready") == (200, "ready\n")
    assert probes(fake) == 0


async def test_not_ready_when_upstream_is_down(fake: FakeUpstream, make_client: MakeClient) -> None:
    client, _ = await make_client(upstream_url=fake.index_url)
    await fake.stop()
    status, text = await answer(client, "/ready")
    assert status == 503
    assert text.startswith("not ready: upstream did not answer: ") and text.count("\n") == 1


async def test_ready_follows_upstream_failing_and_recovering(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    client, _ = await make_client(upstream_url=fake.index_url, upstream_page_ttl=0)
    assert (await client.get("/simple/up-proj/")).status == 200
    fake.fail_status = 502
    assert (await client.get("/simple/up-proj/")).status == 200  # stale copy; upstream failed
    assert await answer(client, "/ready") == (
        503, "not ready: upstream did not answer: answered HTTP 502\n"
    )
    assert probes(fake) == 1
    assert (await answer(client, "/ready"))[0] == 503
    assert probes(fake) == 1  # the probe's outcome is reused for a few seconds
    fake.fail_status = None
    assert (await client.get("/simple/up-proj/")).status == 200  # upstream answers again
    assert await answer(client, "/ready") == (200, "ready\n")
    assert probes(fake) == 1


async def test_offline_is_ready_without_upstream(fake: FakeUpstream, make_client: MakeClient) -> None:
    client, _ = await make_client(upstream_url=fake.index_url, offline=True)
    await fake.stop()
    assert await answer(client, "/ready") == (200, "ready\n")
    assert fake.requests == []


async def test_not_ready_when_the_data_dir_takes_no_file(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    # works as root too, unlike a read-only mode: a path that is a file takes no new file
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    services.settings = dataclasses.replace(services.settings, data_dir=blocked)
    assert await answer(client, "/ready") == (
        503, "not ready: the data directory is not writable (Not a directory)\n"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories anyway")
async def test_not_ready_when_the_data_dir_is_read_only(client: TestClient, services: Services) -> None:
    data_dir = services.settings.data_dir
    data_dir.chmod(0o555)
    try:
        assert await answer(client, "/ready") == (
            503, "not ready: the data directory is not writable (Permission denied)\n"
        )
    finally:
        data_dir.chmod(0o755)


async def test_ready_leaves_nothing_behind(client: TestClient, services: Services) -> None:
    before = set(services.settings.data_dir.iterdir())
    for _ in range(3):
        assert (await client.get("/ready")).status == 200
    assert set(services.settings.data_dir.iterdir()) == before



async def test_not_ready_below_min_free_space(make_client: MakeClient) -> None:
    client, _ = await make_client(min_free_space=10**18)  # more than any disk has free
    status, text = await answer(client, "/ready")
    assert status == 503
    assert text.startswith("not ready: only ") and text.endswith(
        " free on the data directory's disk (below [server] min_free_space, 1000000.0 TB)\n"
    )
    assert (await client.get("/health")).status == 200
    unchecked, _ = await make_client(min_free_space=0)
    assert await answer(unchecked, "/ready") == (200, "ready\n")
