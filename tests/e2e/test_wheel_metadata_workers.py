"""End to end, `--workers 2`: the `.metadata` pyproxy makes for the wheels of an HTML index
without ranges (repository/wheel_metadata.py) costs upstream one request per wheel however the
cold page requests (each warming the likely wheel's `.metadata`) fall on the two workers: the
tail request that such a host answers with the whole wheel is asked inside the blob cache's
single flight, across processes, and is the wheel's one download."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.dists import make_wheel
from tests.e2e.clients import raw_request
from tests.e2e.conftest import FakeFactory, ServerFactory
from tests.e2e.test_workers import ready
from tests.waiting import wait_until

RUN = uuid.uuid4().hex[:6]
UV_AGENT = (  # as uv 0.13 sends it: its Python and platform tell pyproxy what it will pick
    'uv/0.13.10 {"installer":{"name":"uv","version":"0.13.10","subcommand":["pip","install"]},'
    '"python":"3.11.7","implementation":{"name":"CPython","version":"3.11.7"},'
    '"distro":{"name":"Debian GNU/Linux","version":"12","id":"bookworm",'
    '"libc":{"lib":"glibc","version":"2.36"}},"system":{"name":"Linux","release":"6.1"},'
    '"cpu":"x86_64","openssl_version":null,"setuptools_version":null,"rustc_version":null,'
    '"ci":null}'
)


def test_two_workers_download_each_cold_wheel_once(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path
) -> None:
    fake = fake_factory("html")  # no sizes, no .metadata
    fake.offer_metadata = False
    fake.chunk_delay = 0.05  # each wheel's body takes a moment: both workers come meanwhile
    projects = [f"mw-lib{i}-{RUN}" for i in range(4)]
    wheels = {}
    for i, name in enumerate(projects):
        data = random.Random(i).randbytes(400_000)  # a few 64 KiB chunks, not compressible
        wheel = make_wheel(tmp_path / "dists", name, "1.0", extra_members={"blob.bin": data})
        fake.add_file(name, wheel.name, wheel.read_bytes())
        wheels[name] = wheel.name
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url,
                                                          "--workers", "2"])
    wait_until(lambda: ready(server) == (200, "ready"), 20, "both workers serving")

    def page(name: str) -> int:
        url = f"{server.simple_url.rstrip('/')}/{name}/"
        return raw_request("GET", url, headers={"User-Agent": UV_AGENT}).status

    with ThreadPoolExecutor(8) as pool:  # new connections each: they land on both workers
        for name in projects:
            assert list(pool.map(page, [name] * 8)) == [200] * 8

    def metadata(name: str) -> tuple[int, str]:
        url = f"{server.url}/files/{name}/{wheels[name]}.metadata"
        response = raw_request("GET", url, headers={"User-Agent": UV_AGENT}, timeout=60)
        return response.status, response.body

    with ThreadPoolExecutor(8) as pool:  # joins the warm-ups (or finds their work)
        for name in projects:
            answers = list(pool.map(metadata, [name] * 4))
            assert all(status == 200 and f"Name: {name}" in body for status, body in answers)
    for name in projects:
        path = fake.file_path(name, wheels[name])
        assert fake.count(path, "GET") == 1, (name, fake.ranges_of(path))
