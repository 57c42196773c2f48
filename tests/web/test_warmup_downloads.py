"""pyproxy.web.warmup and repository/warmup_files.py: pip asking for the first file it resolved
downloads the others it resolved ahead of it, within the bounds; and the warm-up's limit on the
wheels it downloads whole for their METADATA. Through the whole stack over the fake upstream."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from pyproxy import metrics
from pyproxy.formats import wheel_zip
from pyproxy.web.context import Services
from tests.conftest import MakeClient, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream
from tests.repository.test_warmup import value
from tests.web.test_warmup import APP, PIP, chain, publish

UV = "uv/0.5.0 " + PIP.split(" ", 1)[1]
LIB1, LIB2, BASE = "lib-1.0-py3-none-any.whl", "lib-2.0-py3-none-any.whl", "base-1.0-py3-none-any.whl"


async def get(client: TestClient, services: Services, path: str, agent: str = PIP) -> str:
    response = await client.get(path, headers={"User-Agent": agent})
    assert response.status == 200, path
    await response.read()
    assert services.warmup is not None
    await services.warmup.idle()
    return response.headers["X-Pyproxy-Cache"] if "/files/" in path else ""


async def resolve(client: TestClient, services: Services, files: list[tuple[str, str]],
                  agent: str = PIP) -> None:
    """What pip does before it downloads: each project's page, then the `.metadata` it picks."""
    for project, filename in files:
        await get(client, services, f"/simple/{project}/", agent)
        await get(client, services, f"/files/{project}/{filename}.metadata", agent)


async def test_pips_first_download_brings_the_rest_of_what_it_resolved(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url)
    # it got lib 2.0's .metadata first, then settled on lib 1.0 (backtracking)
    await resolve(client, services, [("app", APP), ("lib", LIB2), ("lib", LIB1), ("base", BASE)])
    assert fake.count(fake.file_path("lib", LIB1)) == 0  # nothing downloaded while resolving
    used = value(metrics.WARMUP_USED, "file")
    assert await get(client, services, f"/files/app/{APP}") == "miss"
    assert fake.count(fake.file_path("lib", LIB1)) == 1
    assert fake.count(fake.file_path("base", BASE)) == 1
    assert fake.count(fake.file_path("lib", LIB2)) == 0  # rejected: never downloaded
    before = fake.total
    for project, filename in (("lib", LIB1), ("base", BASE)):
        assert await get(client, services, f"/files/{project}/{filename}") == "hit"
    assert fake.total == before  # one upstream download per file
    assert value(metrics.WARMUP_USED, "file") == used + 2


async def test_not_for_other_clients_nor_files_it_did_not_resolve(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    client, services = await make_client(upstream_url=fake.index_url)
    await resolve(client, services, [("app", APP), ("lib", LIB2), ("base", BASE)], agent=UV)
    await get(client, services, f"/files/app/{APP}", agent=UV)  # uv downloads in parallel
    assert fake.count(fake.file_path("base", BASE)) == 0
    await resolve(client, services, [("lib", LIB2), ("base", BASE)])
    await get(client, services, f"/files/lib/{LIB1}")  # not the lib it resolved
    assert fake.count(fake.file_path("base", BASE)) == 0


async def test_within_the_size_limit_and_when_switched_on(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    size = fake.file("base", BASE).size
    small, small_services = await make_client(
        upstream_url=fake.index_url, upstream_warm_up_max_file_size=size - 1)
    skipped = value(metrics.WARMUP_SKIPPED, "size")
    await resolve(small, small_services, [("app", APP), ("base", BASE)])
    await get(small, small_services, f"/files/app/{APP}")
    assert fake.count(fake.file_path("base", BASE)) == 0
    assert value(metrics.WARMUP_SKIPPED, "size") > skipped
    await make_client.close(small)
    off, off_services = await make_client(
        upstream_url=fake.index_url, upstream_warm_up_downloads=False, data_dir=tmp_path / "d2")
    await resolve(off, off_services, [("app", APP), ("base", BASE)])
    await get(off, off_services, f"/files/app/{APP}")
    assert fake.count(fake.file_path("base", BASE)) == 0


async def test_never_a_private_file_nor_one_the_policy_denies(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    publish(fake, tmp_path, "evil", "1.0", [])
    client, services = await make_client(upstream_url=fake.index_url, policy_deny=("evil",))
    services.users.add_user("root", "rootpass1", admin=True)
    mine = make_wheel(tmp_path / "private", "mine", "1.0")
    assert (await upload(client, mine, "root", "rootpass1")).status == 200
    await resolve(client, services, [("app", APP), ("mine", mine.name), ("base", BASE)])
    response = await client.get("/files/evil/evil-1.0-py3-none-any.whl.metadata",
                                headers={"User-Agent": PIP})
    assert response.status == 403
    await get(client, services, f"/files/app/{APP}")
    assert fake.count(fake.file_path("base", BASE)) == 1
    assert fake.count(fake.page_path("mine")) == 0
    assert fake.count(fake.file_path("evil", "evil-1.0-py3-none-any.whl")) == 0


async def test_a_wheel_over_the_limit_is_not_downloaded_whole_for_its_metadata(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    fake.formats = "html"  # no sizes on the page: upstream's answer to the tail tells it
    fake.offer_metadata = False  # and no .metadata, no ranges: the wheel is the only source
    client, services = await make_client(upstream_url=fake.index_url,
                                         upstream_warm_up_max_file_size=100)
    skipped = value(metrics.WARMUP_SKIPPED, "size")
    await get(client, services, "/simple/app/")
    path = fake.file_path("app", APP)
    assert fake.count(path, "HEAD") == 0  # no round trip of its own for the size
    assert fake.count(path, "GET") == 1 and fake.ranges_of(path) == [
        f"bytes=-{wheel_zip.TAIL_BYTES}"]  # answered whole, dropped unread: nothing kept
    assert services.health.blobs is not None
    assert services.health.blobs.entries() == []
    assert value(metrics.WARMUP_SKIPPED, "size") == skipped + 1
    # the client asking itself gets it, made from the whole wheel
    assert await get(client, services, f"/files/app/{APP}.metadata") == "miss"
    assert fake.count(fake.file_path("app", APP), "GET") >= 1


async def test_a_file_of_unknown_size_is_not_downloaded_ahead(
    make_client: MakeClient, fake: FakeUpstream, tmp_path: Path,
) -> None:
    chain(fake, tmp_path)
    fake.formats = "html"  # no sizes; asking upstream would be one more request of the file
    client, services = await make_client(upstream_url=fake.index_url)
    skipped = value(metrics.WARMUP_SKIPPED, "size")
    await resolve(client, services, [("app", APP), ("base", BASE)])
    await get(client, services, f"/files/app/{APP}")
    assert fake.count(fake.file_path("base", BASE)) == 0
    assert value(metrics.WARMUP_SKIPPED, "size") == skipped + 1
