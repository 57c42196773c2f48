"""End to end: real twine against a `pyproxy serve` subprocess whose fake upstream has
`requests`. A plain user's first upload cannot take over a name upstream has, nor claim one
under a reserved prefix; after `pyproxy reserve NAME` (or as an admin) it works, and a
reserved-prefix name is never asked about upstream."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import get, listed_filenames, output, twine_upload
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.fake_upstream import FakeUpstream

USER, PASSWORD = "alice", "alice-secret-pw"
ROOT, ROOT_PASSWORD = "root", "root-secret-pw"  # an admin


@pytest.fixture
def upstream_wheel(tmp_path: Path) -> Path:
    return make_wheel(tmp_path / "upstream", "requests", "2.99")


@pytest.fixture
def fake(fake_factory: FakeFactory, upstream_wheel: Path) -> FakeUpstream:
    upstream = fake_factory("json")
    upstream.add_file("requests", upstream_wheel.name, upstream_wheel.read_bytes())
    upstream.add_file("flask", "flask-3.0-py3-none-any.whl", b"upstream's flask")
    return upstream


@pytest.fixture
def server(fake: FakeUpstream, pyproxy_factory: ServerFactory, tmp_path: Path) -> PyproxyServer:
    config = tmp_path / "pyproxy.toml"
    config.write_text('[uploads]\nreserved_prefixes = ["acme-"]\n')
    args = ["--upstream", fake.index_url, "--config", str(config)]
    started = pyproxy_factory.start(user=USER, password=PASSWORD, extra_args=args)
    started.add_user(ROOT, ROOT_PASSWORD, admin=True)  # the CLI works beside the server
    fake.reset_counters()  # start-up asked for the project list (/simple/), nothing else
    return started


def named(fake: FakeUpstream, name: str) -> list[str]:
    """The upstream requests that name a project (its page, its files)."""
    return [path for _method, path in fake.requests if name in path]


def refused(proc: subprocess.CompletedProcess[str], status: str, *phrases: str) -> None:
    text = output(proc)
    assert proc.returncode != 0, text
    words = " ".join(text.split())  # twine wraps the reason phrase to the terminal's width
    assert f"HTTPError: {status}" in words, text
    for phrase in phrases:
        assert phrase in words, text


def test_a_name_upstream_has_needs_a_reserve(
    fake: FakeUpstream, server: PyproxyServer, upstream_wheel: Path, tmp_path: Path
) -> None:
    ours = make_wheel(tmp_path / "ours", "requests", "1.0")

    proc = twine_upload(server.upload_url, [ours], USER, PASSWORD, check=False)
    refused(proc, "403", "is a project on the upstream index",
            "An admin can make it private with: pyproxy reserve requests")
    # checked against upstream's project list (cached since start-up), never by asking for the name
    assert named(fake, "requests") == [], fake.requests
    assert listed_filenames(server.simple_url, "requests") == [upstream_wheel.name]

    server.cli("reserve", "requests")
    twine_upload(server.upload_url, [ours], USER, PASSWORD)
    assert listed_filenames(server.simple_url, "requests") == [ours.name]

    # an admin needs no reserve
    admins = make_wheel(tmp_path / "ours", "flask", "0.1")
    twine_upload(server.upload_url, [admins], ROOT, ROOT_PASSWORD)
    assert listed_filenames(server.simple_url, "flask") == [admins.name]


def test_a_reserved_prefix_needs_an_admin_and_never_reaches_upstream(
    fake: FakeUpstream, server: PyproxyServer, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "ours", "acme-widgets", "1.0")
    proc = twine_upload(server.upload_url, [wheel], USER, PASSWORD, check=False)
    refused(proc, "403", "is under a reserved prefix", "pyproxy reserve acme-widgets")

    twine_upload(server.upload_url, [wheel], ROOT, ROOT_PASSWORD)
    assert listed_filenames(server.simple_url, "acme-widgets") == [wheel.name]
    later = make_wheel(tmp_path / "ours", "acme-widgets", "1.1")
    server.cli("grant", "acme-widgets", USER)
    twine_upload(server.upload_url, [later], USER, PASSWORD)
    assert listed_filenames(server.simple_url, "acme-widgets") == [wheel.name, later.name]
    assert fake.requests == [], f"pyproxy asked upstream about an acme- name: {fake.requests}"


def test_a_reserved_prefix_name_nobody_uploaded_is_404_and_never_asked_upstream(
    fake: FakeUpstream, server: PyproxyServer
) -> None:
    fake.add_file("acme-tools", "acme_tools-9.9-py3-none-any.whl", b"a public squatter's wheel")
    for path in ("/simple/acme-tools/", "/files/acme-tools/acme_tools-9.9-py3-none-any.whl",
                 "/pypi/acme-tools/json"):
        status = get(server.url + path).status
        assert status == 404, (path, status)
    assert named(fake, "acme") == [], fake.requests


# ---- with [[upstreams]] routes: the upstream serving a name decides, never the merged list
# (which leaves out the names of an upstream whose list fails, so they looked free)

GPU_TORCH = "torch-2.0-py3-none-any.whl"


@pytest.fixture
def gpu(fake_factory: FakeFactory) -> FakeUpstream:
    upstream = fake_factory("json")
    upstream.add_file("torch", GPU_TORCH, b"the gpu index's torch")
    return upstream


def start_routed(
    pyproxy_factory: ServerFactory, tmp_path: Path, gpu: FakeUpstream,
    public: FakeUpstream | None,
) -> PyproxyServer:
    """pyproxy with `public` behind [upstream] (None: --no-upstream) and `gpu` routed "torch"
    and "nvidia-*"; set the fakes' failures first: start-up fetches the lists."""
    config = tmp_path / "routed.toml"
    config.write_text(
        f'[[upstreams]]\nname = "gpu"\nurl = "{gpu.index_url}"\n'
        'projects = ["torch", "nvidia-*"]\n'
    )
    args = ["--config", str(config)]
    if public is not None:
        args += ["--upstream", public.index_url]
    started = pyproxy_factory.start(user=USER, password=PASSWORD, extra_args=args)
    started.add_user(ROOT, ROOT_PASSWORD, admin=True)
    return started


@pytest.mark.parametrize("failure", [503, 404])  # 404: no root list, as many routed indexes
def test_a_routed_name_whose_upstream_list_fails_needs_a_reserve(
    fake: FakeUpstream, gpu: FakeUpstream, pyproxy_factory: ServerFactory, tmp_path: Path,
    failure: int,
) -> None:
    gpu.fail_paths["/simple/"] = failure
    server = start_routed(pyproxy_factory, tmp_path, gpu, fake)
    ours = make_wheel(tmp_path / "ours", "torch", "99.0")

    proc = twine_upload(server.upload_url, [ours], USER, PASSWORD, check=False)
    refused(proc, "403", "An admin can make it private with: pyproxy reserve torch")
    assert listed_filenames(server.simple_url, "torch") == [GPU_TORCH]

    server.cli("reserve", "torch")
    twine_upload(server.upload_url, [ours], USER, PASSWORD)
    assert listed_filenames(server.simple_url, "torch") == [ours.name]


def test_a_name_a_route_claims_is_the_route_s_even_when_its_list_lacks_it(
    fake: FakeUpstream, gpu: FakeUpstream, pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    server = start_routed(pyproxy_factory, tmp_path, gpu, fake)
    fake.reset_counters()
    gpu.reset_counters()
    squat = make_wheel(tmp_path / "ours", "nvidia-newthing", "1.0")  # not on the gpu index (yet)
    proc = twine_upload(server.upload_url, [squat], USER, PASSWORD, check=False)
    refused(proc, "403", "pyproxy reserve nvidia-newthing")
    proc = twine_upload(server.upload_url, [make_wheel(tmp_path / "ours", "requests", "1.0")],
                        USER, PASSWORD, check=False)
    refused(proc, "403", "pyproxy reserve requests")
    assert named(gpu, "nvidia") == [] and named(fake, "requests") == []  # nothing was asked

    # a name no upstream has is free; an admin needs no reserve for a routed one
    free = make_wheel(tmp_path / "ours", "ours-tool", "1.0")
    twine_upload(server.upload_url, [free], USER, PASSWORD)
    assert listed_filenames(server.simple_url, "ours-tool") == [free.name]
    twine_upload(server.upload_url, [squat], ROOT, ROOT_PASSWORD)
    assert listed_filenames(server.simple_url, "nvidia-newthing") == [squat.name]


def test_the_default_list_down_is_503_for_its_names_while_a_route_answers(
    fake: FakeUpstream, gpu: FakeUpstream, pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    fake.fail_paths["/simple/"] = 503
    server = start_routed(pyproxy_factory, tmp_path, gpu, fake)
    for name in ("requests", "ours-tool"):  # one the default upstream has, one nobody has
        wheel = make_wheel(tmp_path / "ours", name, "99.0")
        proc = twine_upload(server.upload_url, [wheel], USER, PASSWORD, check=False)
        refused(proc, "503", f"Cannot tell whether {name!r} is a project on the upstream index")
    proc = twine_upload(server.upload_url, [make_wheel(tmp_path / "ours", "torch", "99.0")],
                        USER, PASSWORD, check=False)
    refused(proc, "403", "pyproxy reserve torch")

    server.cli("reserve", "requests")  # what an admin does meanwhile
    ours = make_wheel(tmp_path / "ours", "requests", "99.0")
    twine_upload(server.upload_url, [ours], USER, PASSWORD)
    assert listed_filenames(server.simple_url, "requests") == [ours.name]


def test_without_a_default_upstream_an_unrouted_name_is_free_whatever_a_route_lists(
    gpu: FakeUpstream, pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    gpu.fail_paths["/simple/"] = 503
    server = start_routed(pyproxy_factory, tmp_path, gpu, None)
    free = make_wheel(tmp_path / "ours", "ours-tool", "1.0")
    twine_upload(server.upload_url, [free], USER, PASSWORD)
    assert listed_filenames(server.simple_url, "ours-tool") == [free.name]
    proc = twine_upload(server.upload_url, [make_wheel(tmp_path / "ours", "torch", "99.0")],
                        USER, PASSWORD, check=False)
    refused(proc, "403", "pyproxy reserve torch")
