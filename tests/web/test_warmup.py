"""pyproxy.web.warmup: serving an upstream .metadata or wheel warms its dependencies' pages (and
the .metadata each would be picked by), through the whole stack over the fake upstream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient

from pyproxy import metrics
from pyproxy.web.context import Services
from tests.conftest import MakeClient, upload
from tests.dists import core_metadata, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.repository.test_warmup import value

PIP = "pip/24.0 " + json.dumps({
    "python": "3.11.7", "implementation": {"name": "CPython", "version": "3.11.7"},
    "system": {"name": "Linux", "release": "6.1.0"}, "cpu": "x86_64",
    "distro": {"libc": {"lib": "glibc", "version": "2.36"}},
})
APP = "app-1.0-py3-none-any.whl"


def publish(fake: FakeUpstream, tmp_path: Path, name: str, version: str, requires: list[str]) -> str:
    wheel = make_wheel(tmp_path / "dists", name, version, requires_dist=requires)
    metadata = core_metadata(name, version, requires_dist=requires)
    fake.add_file(name, wheel.name, wheel.read_bytes(), metadata=metadata)
    return wheel.name


def chain(fake: FakeUpstream, tmp_path: Path) -> None:
    """app needs lib (on Linux) and base; lib needs base; docs only with an extra."""
    publish(fake, tmp_path, "app", "1.0", ['lib>=1 ; sys_platform == "linux"', "base", 'docs ; extra == "docs"'])
    publish(fake, tmp_path, "lib", "1.0", ["base"])
    publish(fake, tmp_path, "lib", "2.0", ["base"])
    publish(fake, tmp_path, "base", "1.0", [])
    publish(fake, tmp_path, "docs", "1.0", [])


async def metadata(client: TestClient, services: Services, project: str = "app", filename: str = APP,
                   agent: str = PIP) -> int:
    response = await client.get(f"/files/{project}/{filename}.metadata", headers={"User-Agent": agent})
    await response.read()
    assert services.warmup is not None
    await services.warmup.idle()
    return response.status


async def test_serving_metadata_warms_the_dependencies_pages_and_metadata(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url)
    assert (await client.get("/simple/app/")).status == 200
    assert await metadata(client, services) == 200
    for name in ("lib", "base"):
        assert fake.count(fake.page_path(name)) == 1, name
    assert fake.count(fake.page_path("docs")) == 0  # an extra's: never asked for
    lib2 = "lib-2.0-py3-none-any.whl"
    assert fake.count(fake.file_path("lib", lib2) + ".metadata") == 1  # the newest lib
    assert fake.count(fake.file_path("base", "base-1.0-py3-none-any.whl") + ".metadata") == 1
    assert fake.count(fake.file_path("lib", "lib-1.0-py3-none-any.whl") + ".metadata") == 0
    before = fake.total
    # what the client asks next is there already: no upstream request
    for name in ("lib", "base"):
        assert (await client.get(f"/simple/{name}/")).status == 200
    response = await client.get(f"/files/lib/{lib2}.metadata", headers={"User-Agent": PIP})
    assert response.status == 200 and response.headers["X-Pyproxy-Cache"] == "hit"
    await services.warmup.idle()  # type: ignore[union-attr]
    # ...and lib's own .metadata being served warms nothing more: base is warm already
    assert fake.total == before


async def test_a_wheel_served_warms_too_and_garbage_agents_skip_markers(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url)
    response = await client.get(f"/files/app/{APP}", headers={"User-Agent": "Mozilla/5.0"})
    assert response.status == 200 and response.headers["X-Pyproxy-Cache"] == "miss"
    await response.read()
    assert services.warmup is not None
    await services.warmup.idle()
    assert fake.count(fake.page_path("base")) == 1
    assert fake.count(fake.page_path("lib")) == 0  # behind a marker the agent cannot decide
    # without an environment, no file can be picked: no .metadata is warmed
    assert fake.count(fake.file_path("base", "base-1.0-py3-none-any.whl") + ".metadata") == 0


async def test_never_for_private_names(make_client: MakeClient, fake: FakeUpstream, tmp_path: Path) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url, reserved_prefixes=("acme-",))
    admin = services.users
    admin.add_user("root", "rootpass1", admin=True)
    private = make_wheel(tmp_path / "private", "lib", "9.0")
    assert (await upload(client, private, "root", "rootpass1")).status == 200
    publish(fake, tmp_path, "app", "1.0", ["lib", "acme-thing", "base"])
    assert await metadata(client, services) == 200
    assert fake.count(fake.page_path("lib")) == 0
    assert fake.count(fake.page_path("acme-thing")) == 0
    assert fake.count(fake.page_path("base")) == 1


async def test_never_past_the_policy(make_client: MakeClient, fake: FakeUpstream, tmp_path: Path) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url, policy_deny=("lib",))
    assert await metadata(client, services) == 200
    assert fake.count(fake.page_path("lib")) == 0 and fake.count(fake.page_path("base")) == 1
    curated, curated_services = await make_client(
        upstream_url=fake.index_url, policy_allow_only=("app", "lib"))
    fake.reset_counters()
    assert await metadata(curated, curated_services) == 200
    assert fake.count(fake.page_path("lib")) == 1 and fake.count(fake.page_path("base")) == 0


async def test_offline_or_switched_off_there_is_none(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url, upstream_warm_up=False)
    assert services.warmup is None
    for path in (f"/files/app/{APP}.metadata", f"/files/app/{APP}"):
        response = await client.get(path, headers={"User-Agent": PIP})
        assert response.status == 200
        await response.read()
    assert fake.count(fake.page_path("base")) == 0
    await make_client.close(client)
    offline, offline_services = await make_client(
        upstream_url=fake.index_url, offline=True, data_dir=tmp_path / "data-0")
    assert offline_services.warmup is None
    assert (await offline.get(f"/files/app/{APP}.metadata", headers={"User-Agent": PIP})).status == 200
    assert fake.count(fake.page_path("base")) == 0


async def test_a_dead_upstream_does_not_hurt_the_request(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url, upstream_timeout=2.0)
    warm, services.warmup = services.warmup, None
    first = await client.get(f"/files/app/{APP}.metadata")
    assert first.status == 200 and await first.read()  # cached now, nothing warmed
    services.warmup = warm
    assert warm is not None
    fake.latency = 10.0  # upstream hangs from now on
    started = asyncio.get_running_loop().time()
    response = await client.get(f"/files/app/{APP}.metadata", headers={"User-Agent": PIP})
    assert response.status == 200 and response.headers["X-Pyproxy-Cache"] == "hit"
    await response.read()
    # waiting for a warm-up would have taken upstream's timeout
    assert asyncio.get_running_loop().time() - started < 2.0
    assert warm._tasks  # still trying, in the background
    await asyncio.wait_for(warm.idle(), 30)  # the warm-ups fail on their own (timeout)
    assert fake.count(fake.page_path("base")) == 1


def metadata_path(fake: FakeUpstream, project: str, filename: str) -> str:
    return fake.file_path(project, filename) + ".metadata"


async def page(client: TestClient, services: Services, project: str, agent: str = PIP) -> int:
    response = await client.get(f"/simple/{project}/", headers={"User-Agent": agent})
    await response.read()
    assert services.warmup is not None
    await services.warmup.idle()
    return response.status


async def test_a_page_served_warms_the_tree_below_it(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url)
    assert await page(client, services, "app") == 200
    # the file pip will pick, then what it needs, then what that needs: one request each
    assert fake.count(metadata_path(fake, "app", APP)) == 1
    assert fake.count(fake.page_path("lib")) == 1 and fake.count(fake.page_path("base")) == 1
    assert fake.count(metadata_path(fake, "lib", "lib-2.0-py3-none-any.whl")) == 1
    assert fake.count(metadata_path(fake, "base", "base-1.0-py3-none-any.whl")) == 1
    # ...and nothing the client will not ask for: an older lib, an extra's project, any file
    assert fake.count(metadata_path(fake, "lib", "lib-1.0-py3-none-any.whl")) == 0
    assert fake.count(fake.page_path("docs")) == 0
    assert fake.count(fake.file_path("app", APP)) == 0
    before = fake.total
    response = await client.get(f"/files/app/{APP}.metadata", headers={"User-Agent": PIP})
    assert response.status == 200 and response.headers["X-Pyproxy-Cache"] == "hit"
    await response.read()
    assert await page(client, services, "lib") == 200
    await services.warmup.idle()  # type: ignore[union-attr]
    assert fake.total == before  # the client's next requests cost upstream nothing


async def test_a_page_warms_nothing_for_an_unknown_client_or_a_private_name(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url)
    assert await page(client, services, "app", agent="Mozilla/5.0") == 200
    assert fake.total == 1  # the page itself: no environment, so no file to pick
    admin = services.users
    admin.add_user("root", "rootpass1", admin=True)
    assert (await upload(client, make_wheel(tmp_path / "private", "mine", "1.0", requires_dist=["base"]),
                         "root", "rootpass1")).status == 200
    fake.reset_counters()
    skipped = value(metrics.WARMUP_SKIPPED, "private")
    assert await page(client, services, "mine") == 200
    assert fake.total == 0  # a private page: nothing of it, or below it, is asked upstream
    assert value(metrics.WARMUP_SKIPPED, "private") == skipped  # no dependency was skipped


async def test_a_page_warms_within_the_policy(make_client: MakeClient, fake: FakeUpstream, tmp_path: Path) -> None:
    for name, version, age, requires in (("app", "1.0", 30, ["lib", "evil"]), ("lib", "1.0", 30, []),
                                         ("lib", "2.0", 1, []), ("evil", "1.0", 30, [])):
        wheel = make_wheel(tmp_path / "dists", name, version, requires_dist=requires)
        fake.add_file(name, wheel.name, wheel.read_bytes(), upload_time=datetime.now(UTC) - timedelta(days=age),
                      metadata=core_metadata(name, version, requires_dist=requires))  # lib 2.0: too new
    client, services = await make_client(upstream_url=fake.index_url, policy_min_age="7d",
                                         policy_deny=("evil",))
    assert await page(client, services, "app") == 200
    assert fake.count(metadata_path(fake, "lib", "lib-1.0-py3-none-any.whl")) == 1
    assert fake.count(metadata_path(fake, "lib", "lib-2.0-py3-none-any.whl")) == 0  # held back
    assert fake.count(fake.page_path("evil")) == 0


async def test_without_ranges_a_page_served_brings_the_picked_wheel_whole(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    fake.offer_metadata = False  # an HTML-only index: the metadata is in the wheel alone
    client, services = await make_client(upstream_url=fake.index_url)
    assert await page(client, services, "app") == 200
    assert fake.count(metadata_path(fake, "app", APP)) == 0  # never asked: not offered
    # the first wheel's range is answered whole, and that answer is its one download; from then
    # on that host is asked for no range: one whole download per picked wheel
    assert fake.count(fake.file_path("app", APP), "GET") == 1
    assert fake.count(fake.file_path("lib", "lib-2.0-py3-none-any.whl"), "GET") == 1
    assert fake.ranges_of(fake.file_path("lib", "lib-2.0-py3-none-any.whl")) == []
    assert fake.count(fake.file_path("lib", "lib-1.0-py3-none-any.whl")) == 0
    before = fake.total
    for path in (f"/files/app/{APP}.metadata", f"/files/app/{APP}"):
        response = await client.get(path, headers={"User-Agent": PIP})
        assert response.status == 200 and response.headers["X-Pyproxy-Cache"] == "hit", path
        await response.read()
    assert fake.total == before


async def test_one_budget_bounds_the_whole_tree_of_a_page(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url, upstream_warm_up_budget=2,
                                         upstream_warm_up_concurrency=1)
    assert await page(client, services, "app") == 200
    warmed = fake.total - 1  # all but the client's page
    assert warmed == 2
    assert fake.count(metadata_path(fake, "app", APP)) == 1  # the first step, then one page
    assert fake.count(fake.page_path("lib")) + fake.count(fake.page_path("base")) == 1
    assert fake.count(metadata_path(fake, "lib", "lib-2.0-py3-none-any.whl")) == 0


async def test_a_dependencys_page_picks_nothing_past_its_requirement(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    publish(fake, tmp_path, "app", "1.0", ["lib<2"])
    publish(fake, tmp_path, "lib", "1.0", [])
    publish(fake, tmp_path, "lib", "2.0", [])
    client, services = await make_client(upstream_url=fake.index_url)
    assert await page(client, services, "app") == 200
    assert await page(client, services, "lib") == 200  # the client follows the requirement
    assert fake.count(metadata_path(fake, "lib", "lib-1.0-py3-none-any.whl")) == 1
    # lib's page served has no requirement to go by: the one the warm-up had stands
    assert fake.count(metadata_path(fake, "lib", "lib-2.0-py3-none-any.whl")) == 0
