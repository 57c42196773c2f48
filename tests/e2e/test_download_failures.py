"""End to end, `--workers 2`: a cold file whose one upstream download fails cleanly (upstream hangs
past the deadline, or answers 500 slowly) is one upstream request for every client on every
worker, and each gets that failure's own words in its 503: the workers that follow the download
through its part file take the failure its holder noted instead of each retrying upstream. A
`.metadata` bigger than any core metadata is cut off at the limit, and is a 503 for every client
(never a 200 aborted part-way), with nothing cached."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.dists import core_metadata, make_wheel
from tests.e2e.clients import raw_request
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.e2e.test_workers import ready
from tests.waiting import wait_until

RUN = uuid.uuid4().hex[:6]
DEADLINE = 1.0  # [upstream] deadline: short, so the hang costs the test little
CLIENTS = 12  # at once, a new connection each: they land on both workers


def start(factory: ServerFactory, fake_url: str, tmp_path: Path) -> PyproxyServer:
    config = tmp_path / "pyproxy.toml"
    config.write_text(f"[upstream]\ndeadline = {DEADLINE}\nwarm_up = false\n")
    server = factory.start(user=None, extra_args=[
        "--upstream", fake_url, "--workers", "2", "--config", str(config),
    ])
    wait_until(lambda: ready(server) == (200, "ready"), 20, "both workers serving")
    return server


def get_all(url: str, count: int = CLIENTS) -> list[tuple[int, str]]:
    def one(_: int) -> tuple[int, str]:
        response = raw_request("GET", url, timeout=30)
        return response.status, response.body.strip()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("fault", ["hang", "slow 500"])
def test_a_failed_download_is_one_request_and_its_own_503_on_every_worker(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path, fault: str
) -> None:
    fake = fake_factory("json")
    name = f"df-lib-{RUN}"
    wheel = make_wheel(tmp_path / "dists", name, "1.0")
    fake.add_file(name, wheel.name, wheel.read_bytes())
    server = start(pyproxy_factory, fake.index_url, tmp_path)
    assert raw_request("GET", f"{server.simple_url}{name}/").status == 200  # the page, fresh
    path = fake.file_path(name, wheel.name)
    if fault == "hang":
        fake.latency = DEADLINE * 1.5
        words = f"upstream sent no answer for a file within {DEADLINE:g} s"
    else:
        fake.latency = DEADLINE / 2  # within the deadline: the 500 itself is the failure
        fake.fail_paths[path] = 500
        words = "upstream answered HTTP 500 for a file"

    asked = time.monotonic()
    answers = get_all(f"{server.url}/files/{name}/{wheel.name}")
    assert answers == [(503, f"Service Unavailable: {words}")] * CLIENTS
    # one GET, not one more per worker that followed it (each a deadline longer)
    assert fake.count(path, "GET") == 1

    fake.latency, fake.fail_paths = 0.0, {}  # nothing of the failure is kept
    answer = raw_request("GET", f"{server.url}/files/{name}/{wheel.name}")
    assert (answer.status, answer.content) == (200, wheel.read_bytes())
    assert fake.count(path, "GET") == 2
    time.sleep(max(0.0, asked + DEADLINE * 1.5 + 0.3 - time.monotonic()))  # the fake's hung answer


@pytest.mark.parametrize("listed_hash", [True, False])
def test_an_oversized_metadata_is_cut_off_and_a_503_on_every_worker(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path, listed_hash: bool
) -> None:
    fake = fake_factory("json")
    name = f"df-big-{RUN}"
    wheel = make_wheel(tmp_path / "dists", name, "1.0")
    limit = 10 * 1024 * 1024  # stores.proof.MAX_METADATA_BYTES
    huge = core_metadata(name, "1.0") + b"Description: " + b"x" * (limit + 1024 * 1024)
    fake.add_file(name, wheel.name, wheel.read_bytes(), metadata=huge,
                  listed_metadata_hash=listed_hash)
    server = start(pyproxy_factory, fake.index_url, tmp_path)
    assert raw_request("GET", f"{server.simple_url}{name}/").status == 200
    url = f"{server.url}/files/{name}/{wheel.name}.metadata"
    path = fake.file_path(name, wheel.name + ".metadata")
    fake.latency = 0.3  # the clients all come while the one download is under way

    answers = get_all(url, 6)
    assert {status for status, _ in answers} == {503}, answers
    for _, body in answers:
        assert f"more than {limit} bytes, more than a core metadata file can be" in body
    assert fake.count(path, "GET") == 1
    assert server.stderr_text().count("nothing cached") == 1  # logged once, by its holder

    assert raw_request("GET", url).status == 503  # not cached: asked again, refused again
    assert fake.count(path, "GET") == 2
