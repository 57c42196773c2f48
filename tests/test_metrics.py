"""pyproxy.metrics, read through GET /metrics with prometheus-client's own parser: exact values
after a known sequence of requests against a pyproxy whose upstream is the fake upstream.

In-process, metrics are process-wide (prometheus-client's default, in memory), so each test
compares a scrape before and after its requests; every counter that moved must have moved by
exactly the expected amount, and nothing else may have moved. (With `pyproxy serve` the values
live in per-worker files: tests/e2e/test_operations.py checks that with two workers.)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.web.context import Services
from tests.conftest import PASSWORD, USER, MakeClient, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

Sample = tuple[str, tuple[tuple[str, str], ...]]
MakeProxy = Callable[..., Awaitable[tuple[TestClient, Services]]]
FILES_ROUTE = "/files/{project}/{filename}"


def parse(text: str) -> dict[Sample, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: TestClient) -> dict[Sample, float]:
    response = await client.get("/metrics")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(await response.text())


def moved(before: dict[Sample, float], after: dict[Sample, float]) -> dict[Sample, float]:
    """Counters (and histogram counts) that changed, without /metrics itself; bucket and sum
    series are left out (timings are not exact), gauges too (checked on their own)."""
    changes = {}
    for key, value in after.items():
        name, labels = key
        if name.endswith(("_bucket", "_sum")) or not name.endswith(("_total", "_count")):
            continue
        if ("route", "/metrics") in labels:
            continue
        if value != before.get(key, 0.0):
            changes[key] = value - before.get(key, 0.0)
    return changes


def s(name: str, **labels: str) -> Sample:
    return name, tuple(sorted(labels.items()))


def http(route: str, method: str, status: int, count: int) -> dict[Sample, float]:
    return {
        s("pyproxy_http_requests_total", route=route, method=method, status=str(status)): count,
    }


def durations(**per_route: int) -> dict[Sample, float]:
    """Histogram counts: keyword `GET__health` means route "/health", method GET."""
    out = {}
    for key, count in per_route.items():
        method, route = key.split("__", 1)
        out[s("pyproxy_http_request_duration_seconds_count", route=ROUTES[route], method=method)] = count
    return out


ROUTES = {"health": "/health", "ready": "/ready", "simple": "/simple/{tail}", "files": FILES_ROUTE,
          "legacy": "/legacy/", "unmatched": "unmatched"}


async def settle(client: TestClient, before: dict[Sample, float], expected: dict[Sample, float]
                 ) -> dict[Sample, float]:
    """The changes since `before`, once they equal `expected` (an access-log record is written
    just after its response, so the last one may land a moment after the client has read it)."""
    changes: dict[Sample, float] = {}
    for _ in range(50):
        changes = moved(before, await scrape(client))
        if changes == expected:
            break
        await asyncio.sleep(0.02)
    return changes


@pytest.fixture
def make_proxy(make_client: MakeClient) -> MakeProxy:
    """`await make_proxy(upstream_url=..., **settings)`: a pyproxy app served with the access
    logger (which records the request metrics), as `pyproxy serve` runs it."""
    return functools.partial(make_client, access_log=True)


async def test_counters_after_a_known_sequence(
    fake: FakeUpstream, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    one = fake.add_generated_file("Up-Proj", "up_proj-1.0.tar.gz", 100_000)
    two = fake.add_generated_file("Up-Proj", "up_proj-2.0.tar.gz", 5 * 64 * 1024 + 10)
    client, services = await make_proxy(upstream_url=fake.index_url)
    wheel = make_wheel(tmp_path / "dists", "Private_Proj", "1.0")
    before = await scrape(client)

    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 200  # nothing asked yet: one HEAD probe
    assert (await client.get("/simple/up-proj/")).status == 200
    for _ in range(2):  # a miss, then a hit
        response = await client.get(f"/files/up-proj/{one.filename}")
        assert response.status == 200 and len(await response.read()) == one.size

    # two clients want the same file: the second joins the download the first started
    fake.chunk_delay = 0.05

    async def fetch() -> bytes:
        response = await client.get(f"/files/up-proj/{two.filename}")
        assert response.status == 200
        return await response.read()

    first = asyncio.create_task(fetch())
    while not any(path.endswith(two.filename) for _, path in fake.requests):
        await asyncio.sleep(0.005)
    bodies = [await fetch(), await first]
    fake.chunk_delay = 0.0
    assert [len(body) for body in bodies] == [two.size, two.size]

    assert (await upload(client, wheel, USER, "not-" + PASSWORD)).status == 403
    assert (await upload(client, wheel)).status == 200
    assert (await client.get("/no/such/page")).status == 404

    expected = {
        **http("/health", "GET", 200, 1),
        **http("/ready", "GET", 200, 1),
        **http("/simple/{tail}", "GET", 200, 1),
        **http(FILES_ROUTE, "GET", 200, 4),
        **http("/legacy/", "POST", 403, 1),
        **http("/legacy/", "POST", 200, 1),
        **http("unmatched", "GET", 404, 1),
        **durations(GET__health=1, GET__ready=1, GET__simple=1, GET__files=4, POST__legacy=2,
                    GET__unmatched=1),
        s("pyproxy_cache_requests_total", result="miss"): 2,
        s("pyproxy_cache_requests_total", result="hit"): 1,
        s("pyproxy_cache_requests_total", result="coalesced"): 1,
        s("pyproxy_served_bytes_total", source="cache"): one.size,
        s("pyproxy_served_bytes_total", source="upstream"): one.size + 2 * two.size,
        s("pyproxy_upstream_requests_total", kind="probe"): 1,
        # the project page, and the project list the upload's new name was checked against
        s("pyproxy_upstream_requests_total", kind="page"): 2,
        s("pyproxy_upstream_requests_total", kind="file"): 2,  # one download for three clients
        s("pyproxy_upstream_request_duration_seconds_count", kind="probe"): 1,
        s("pyproxy_upstream_request_duration_seconds_count", kind="page"): 2,
        s("pyproxy_upstream_request_duration_seconds_count", kind="file"): 2,
        s("pyproxy_uploads_rejected_total", reason="unauthenticated"): 1,
        s("pyproxy_uploads_accepted_total"): 1,
    }
    assert await settle(client, before, expected) == expected

    # the cache size is read from the cache itself at scrape time
    after = await scrape(client)
    assert after[s("pyproxy_cache_size_bytes")] == services.health.blobs.volume()
    assert after[s("pyproxy_cache_size_bytes")] > one.size + two.size
    assert after[s("pyproxy_cache_max_size_bytes")] == services.settings.cache_max_size


async def test_stale_pages_and_upstream_errors(fake: FakeUpstream, make_proxy: MakeProxy) -> None:
    dist = fake.add_generated_file("Up-Proj", "up_proj-1.0.tar.gz", 1000)
    # page_ttl 0: every request revalidates the page
    client, _ = await make_proxy(upstream_url=fake.index_url, upstream_page_ttl=0)
    before = await scrape(client)
    assert (await client.get("/simple/up-proj/")).status == 200

    fake.fail_status = 503
    # each revalidation fails and is answered from the stale copy: for the page, and for the
    # page the file request looks the file up in
    assert (await client.get("/simple/up-proj/")).status == 200
    assert (await client.get(f"/files/up-proj/{dist.filename}")).status == 503
    ready = await client.get("/ready")  # the last upstream answer was a failure: probe again
    assert ready.status == 503
    assert await ready.text() == "not ready: upstream did not answer: answered HTTP 503\n"

    expected = {
        **http("/simple/{tail}", "GET", 200, 2),
        **http(FILES_ROUTE, "GET", 503, 1),
        **http("/ready", "GET", 503, 1),
        **durations(GET__simple=2, GET__files=1, GET__ready=1),
        s("pyproxy_stale_pages_served_total"): 2,
        s("pyproxy_upstream_requests_total", kind="page"): 3,
        s("pyproxy_upstream_requests_total", kind="file"): 1,
        s("pyproxy_upstream_requests_total", kind="probe"): 1,
        s("pyproxy_upstream_errors_total", kind="page"): 2,
        s("pyproxy_upstream_errors_total", kind="file"): 1,
        s("pyproxy_upstream_errors_total", kind="probe"): 1,
        s("pyproxy_upstream_request_duration_seconds_count", kind="page"): 3,
        s("pyproxy_upstream_request_duration_seconds_count", kind="file"): 1,
        s("pyproxy_upstream_request_duration_seconds_count", kind="probe"): 1,
    }
    assert await settle(client, before, expected) == expected


async def test_evictions(fake: FakeUpstream, make_proxy: MakeProxy) -> None:
    files = [fake.add_generated_file("Up-Proj", f"up_proj-{n}.0.tar.gz", 100_000) for n in (1, 2)]
    client, services = await make_proxy(upstream_url=fake.index_url)
    assert services.health.blobs is not None
    # room for one file beside the cache's own index, not for two
    services.health.blobs.max_size = services.health.blobs.volume() + 160_000
    before = await scrape(client)
    for dist in files:
        response = await client.get(f"/files/up-proj/{dist.filename}")
        assert response.status == 200 and len(await response.read()) == dist.size
    await services.health.blobs.idle()  # the client has its bytes before the cache commits
    changes = moved(before, await scrape(client))
    assert changes[s("pyproxy_cache_evictions_total")] == 1
    assert changes[s("pyproxy_cache_evicted_bytes_total")] == 100_000


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no credentials", "unauthenticated"),
        ("not a maintainer", "forbidden"),
        ("over the size limit", "too_large"),
        ("not multipart", "malformed"),
        ("no version field", "invalid_metadata"),
        ("not a wheel inside", "invalid_file"),
        ("same filename, other bytes", "duplicate"),
    ],
)
async def test_upload_rejections_by_reason(
    case: str, reason: str, make_proxy: MakeProxy, tmp_path: Path
) -> None:
    client, services = await make_proxy(max_upload_size=50_000)
    wheel = make_wheel(tmp_path / "dists", "Private_Proj", "1.0")
    if case == "not a maintainer":
        services.users.add_user("mallory", "mallory-pw")
        assert (await upload(client, wheel)).status == 200  # alice owns the project now
    if case == "same filename, other bytes":
        assert (await upload(client, wheel)).status == 200
        make_wheel(tmp_path / "other", "Private_Proj", "1.0", summary="changed")
    before = await scrape(client)
    if case == "no credentials":
        response = await upload(client, wheel, user=None)
    elif case == "not a maintainer":
        response = await upload(client, wheel, "mallory", "mallory-pw")
    elif case == "over the size limit":
        response = await upload(client, wheel, content=b"x" * 60_000)
    elif case == "not multipart":
        headers = {"Authorization": encode_basic_auth(USER, PASSWORD),
                   "Content-Type": "application/json"}
        response = await client.post("/legacy/", data=b"{}", headers=headers)
    elif case == "no version field":
        response = await upload(client, wheel, version=None)
    elif case == "not a wheel inside":
        response = await upload(client, wheel, content=b"not a zip file")
    else:
        response = await upload(client, tmp_path / "other" / wheel.name)
    assert 400 <= response.status < 500, await response.text()
    changes = moved(before, await scrape(client))
    uploads = {k: v for k, v in changes.items() if k[0].startswith("pyproxy_uploads")}
    assert uploads == {s("pyproxy_uploads_rejected_total", reason=reason): 1}


async def test_labels_stay_bounded_whatever_clients_send(make_proxy: MakeProxy) -> None:
    client, _ = await make_proxy()
    before = await scrape(client)
    for n in range(3):
        assert (await client.request("PROPFIND", f"/health?n={n}")).status == 405
        assert (await client.get(f"/no-such-page-{n}")).status == 404
        assert (await client.get(f"/simple/project-{n}/")).status == 404
    expected = {
        **http("unmatched", "other", 405, 3),  # any other method name: one label value
        **http("unmatched", "GET", 404, 3),  # any unknown path: one route label
        **http("/simple/{tail}", "GET", 404, 3),  # the route's template, not the path
        **durations(other__unmatched=3, GET__unmatched=3, GET__simple=3),
    }
    assert await settle(client, before, expected) == expected

    # a request the HTTP parser refuses never reaches the router
    before = await scrape(client)
    assert (await client.request("BREW", "/health")).status == 400
    expected = {**http("unmatched", "other", 400, 1), **durations(other__unmatched=1)}
    assert await settle(client, before, expected) == expected
