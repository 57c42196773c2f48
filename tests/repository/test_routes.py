"""Several upstreams (pyproxy/repository/routes.py): each name goes to exactly one upstream.

The whole app runs in process (tests/conftest.py's `make_client`) over two FakeUpstreams in the
test's loop: "public" behind `[upstream]` and "gpu" behind one `[[upstreams]]` route. Every
test that says an upstream was not asked reads that fake upstream's request counters.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.model import NormalizedName
from pyproxy.repository.routes import Routed
from pyproxy.upstream_settings import UpstreamSettings
from pyproxy.web.context import Services
from tests.conftest import StartFake, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
TORCH_GPU = "torch-1.0+cu128-py3-none-any.whl"
TORCH_PUBLIC = "torch-9.0-py3-none-any.whl"

Proxy = tuple[TestClient, Services, FakeUpstream, FakeUpstream]
MakeProxy = Callable[..., Awaitable[Proxy]]


def route(gpu: FakeUpstream, **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = {
        "name": "gpu", "url": gpu.index_url, "projects": ("torch", "nvidia-*")
    }
    return UpstreamSettings(**{**values, **overrides})


@pytest.fixture
async def make_proxy(make_client: Any, fake_upstream: StartFake) -> MakeProxy:
    async def make(**route_overrides: Any) -> Proxy:
        public, gpu = await fake_upstream(), await fake_upstream()
        # the name confusion case: the public index has a "torch" of a higher version
        public.add_file("torch", TORCH_PUBLIC, b"public torch")
        public.add_file("requests", "requests-2.0.tar.gz", b"requests")
        gpu.add_file("torch", TORCH_GPU, b"gpu torch")
        gpu.add_file("nvidia-cudnn", "nvidia_cudnn-9.1-py3-none-any.whl", b"cudnn")
        gpu.add_file("requests", "requests-0.1.tar.gz", b"not claimed by the route")
        client, services = await make_client(
            upstream_url=public.index_url, upstreams=(route(gpu, **route_overrides),)
        )
        return client, services, public, gpu

    return make


async def filenames(client: TestClient, name: str) -> list[str]:
    response = await client.get(f"/simple/{name}/", headers={"Accept": JSON})
    assert response.status == 200, await response.text()
    return [entry["filename"] for entry in orjson.loads(await response.read())["files"]]


async def test_a_routed_name_comes_from_its_upstream_only(make_proxy: MakeProxy) -> None:
    client, _services, public, gpu = await make_proxy()
    assert await filenames(client, "torch") == [TORCH_GPU]
    assert await filenames(client, "nvidia-cudnn") == ["nvidia_cudnn-9.1-py3-none-any.whl"]
    response = await client.get(f"/files/torch/{TORCH_GPU}")
    assert response.status == 200 and await response.read() == b"gpu torch"
    assert public.total == 0, public.requests
    # and an unrouted name goes to [upstream] only
    assert await filenames(client, "requests") == ["requests-2.0.tar.gz"]
    assert gpu.count(gpu.page_path("requests")) == 0
    assert public.count(public.page_path("requests")) == 1


@pytest.mark.parametrize("spelling", ["Torch", "TORCH", "NVIDIA_cudnn", "nvidia.cudnn"])
async def test_routes_match_normalised_names(make_proxy: MakeProxy, spelling: str) -> None:
    client, _services, public, _gpu = await make_proxy()
    response = await client.get(f"/simple/{spelling}/", headers={"Accept": JSON})
    assert response.status == 200  # after the redirect to the normalised name
    assert public.total == 0, public.requests


async def test_a_routed_name_missing_upstream_is_404_never_the_default(
    make_proxy: MakeProxy,
) -> None:
    client, _services, public, gpu = await make_proxy()
    gpu.remove_file("torch", TORCH_GPU)
    gpu.fail_paths[gpu.page_path("torch")] = 404
    response = await client.get("/simple/torch/", headers={"Accept": JSON})
    assert response.status == 404
    # not even the default's file, by a guessed URL
    assert (await client.get(f"/files/torch/{TORCH_PUBLIC}")).status == 404
    assert (await client.get(f"/files/torch/{TORCH_PUBLIC}.metadata")).status == 404
    assert (await client.get("/pypi/torch/json")).status == 404
    assert public.total == 0, public.requests


async def test_a_routed_upstream_that_fails_is_503_never_the_default(
    make_proxy: MakeProxy,
) -> None:
    client, _services, public, gpu = await make_proxy()
    gpu.fail_status = 500
    response = await client.get("/simple/torch/", headers={"Accept": JSON})
    assert response.status == 503
    assert (await client.get(f"/files/torch/{TORCH_PUBLIC}")).status == 503
    assert gpu.count(gpu.page_path("torch")) >= 1
    assert public.total == 0, public.requests
    await gpu.stop()  # and unreachable altogether
    assert (await client.get("/simple/torch/", headers={"Accept": JSON})).status == 503
    assert public.total == 0, public.requests


async def test_a_private_name_a_route_claims_is_private_and_never_asked(
    make_proxy: MakeProxy, tmp_path: Any,
) -> None:
    client, services, public, gpu = await make_proxy(projects=("torch", "acme-*"))
    gpu.add_file("acme-tools", "acme_tools-5.0-py3-none-any.whl", b"squatted")
    public.add_file("acme-tools", "acme_tools-6.0-py3-none-any.whl", b"squatted too")
    wheel = make_wheel(tmp_path, "acme-tools", "1.0")
    # the routed upstream lists the name, so claiming it takes an admin (no name takeover)
    assert (await upload(client, wheel)).status == 403
    services.users.add_user("root", "root-secret", admin=True)
    assert (await upload(client, wheel, "root", "root-secret")).status == 200
    public.reset_counters()
    gpu.reset_counters()
    assert await filenames(client, "acme-tools") == [wheel.name]
    assert (await client.get("/files/acme-tools/acme_tools-5.0-py3-none-any.whl")).status == 404
    assert (await client.get("/project/acme-tools/")).status == 200
    assert gpu.total == 0, gpu.requests
    assert public.total == 0, public.requests


async def test_the_project_list_takes_each_name_from_the_upstream_serving_it(
    make_proxy: MakeProxy,
) -> None:
    client, _services, _public, _gpu = await make_proxy()
    response = await client.get("/simple/", headers={"Accept": JSON})
    assert response.status == 200
    names = sorted(p["name"] for p in orjson.loads(await response.read())["projects"])
    # torch from gpu (not also from public), requests from public (gpu's is not claimed)
    assert names == ["nvidia-cudnn", "requests", "torch"]


async def test_the_project_list_survives_one_upstream_down(make_proxy: MakeProxy) -> None:
    client, _services, _public, gpu = await make_proxy()
    gpu.fail_status = 500
    response = await client.get("/simple/", headers={"Accept": JSON})
    assert response.status == 200
    names = sorted(p["name"] for p in orjson.loads(await response.read())["projects"])
    assert names == ["requests"]  # public's torch is still not listed: gpu serves that name


async def test_each_upstream_has_its_own_page_cache(make_proxy: MakeProxy) -> None:
    client, services, public, gpu = await make_proxy()
    await filenames(client, "torch")
    await filenames(client, "requests")
    data = services.settings.data_dir
    assert (data / "cache" / "upstreams" / "gpu" / "pages").is_dir()
    assert (data / "cache" / "pages").is_dir()
    repository = services.repository
    assert isinstance(repository.upstream, Routed)  # type: ignore[attr-defined]
    # served from the caches again: neither upstream asked twice
    await filenames(client, "torch")
    await filenames(client, "requests")
    assert gpu.count(gpu.page_path("torch")) == 1
    assert public.count(public.page_path("requests")) == 1


async def test_file_urls_on_other_hosts_are_refused(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture,
) -> None:
    client, _services, _public, gpu = await make_proxy()
    gpu.files_host = "localhost"  # the same files, under a host neither the index nor files_from
    with caplog.at_level(logging.WARNING, logger="pyproxy.routes"):
        assert await filenames(client, "torch") == []
    assert any(TORCH_GPU in r.getMessage() and "files_from" in r.getMessage()
               for r in caplog.records), caplog.text
    assert (await client.get(f"/files/torch/{TORCH_GPU}")).status == 404
    assert gpu.count(gpu.file_path("torch", TORCH_GPU)) == 0


async def test_file_urls_on_a_files_from_host_are_served(make_proxy: MakeProxy) -> None:
    client, _services, _public, gpu = await make_proxy(files_from=("localhost",))
    gpu.files_host = "localhost"
    assert await filenames(client, "torch") == [TORCH_GPU]
    response = await client.get(f"/files/torch/{TORCH_GPU}")
    assert response.status == 200 and await response.read() == b"gpu torch"


async def test_a_files_from_port_allows_that_port_only(make_proxy: MakeProxy) -> None:
    client, _services, _public, gpu = await make_proxy(files_from=("localhost:1",))
    gpu.files_host = "localhost"
    assert await filenames(client, "torch") == []


async def test_an_offline_route_serves_only_what_is_cached(make_proxy: MakeProxy) -> None:
    client, _services, public, gpu = await make_proxy(offline=True)
    response = await client.get("/simple/torch/", headers={"Accept": JSON})
    assert response.status == 404  # never fetched, and the route is offline
    assert gpu.total == 0 and public.total == 0
    assert await filenames(client, "requests") == ["requests-2.0.tar.gz"]  # [upstream] is online


async def test_pages_say_which_upstream_serves_a_name(make_proxy: MakeProxy) -> None:
    client, services, public, gpu = await make_proxy()
    landing = await (await client.get("/")).text()
    assert f"gpu ({gpu.index_url})" in landing and "nvidia-*" in landing
    torch = await (await client.get("/project/torch/")).text()
    assert f"gpu ({gpu.index_url})" in torch
    requests = await (await client.get("/project/requests/")).text()
    assert public.index_url in requests and f"gpu ({gpu.index_url})" not in requests
    names = services.upstreams
    assert names.upstream_for(NormalizedName("nvidia-nccl")) == f"gpu ({gpu.index_url})"
    assert names.upstream_for(NormalizedName("numpy")) == public.index_url


async def test_routes_without_a_default_upstream_serve_routed_names_only(
    make_client: Any, fake_upstream: StartFake,
) -> None:
    gpu = await fake_upstream()
    gpu.add_file("torch", TORCH_GPU, b"gpu torch")
    gpu.add_file("requests", "requests-0.1.tar.gz", b"not claimed")
    client, services = await make_client(upstream_url="", upstreams=(route(gpu),))
    assert not services.settings.private_only
    assert await filenames(client, "torch") == [TORCH_GPU]
    assert (await client.get("/simple/requests/", headers={"Accept": JSON})).status == 404
    assert gpu.count(gpu.page_path("requests")) == 0
