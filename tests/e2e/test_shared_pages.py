"""One upstream page request per page across worker processes: `pyproxy serve --workers 2`,
many clients at once (each on its own connection, so the kernel spreads them over both
workers) asking for a page nobody has fetched, then for the same page once it is stale, and
the fake upstream counts the page requests.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.clients import get
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory

CLIENTS = 24
JSON = "application/vnd.pypi.simple.v1+json"


def _all_at_once(server: PyproxyServer, path: str) -> list[int]:
    """Statuses of CLIENTS GETs of `path`, released together, each on a new connection."""
    start = threading.Barrier(CLIENTS)

    def one(_: int) -> int:
        start.wait(timeout=30)
        return get(f"{server.url}{path}", accept=JSON, timeout=60).status

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def test_each_page_is_asked_upstream_once_however_many_workers_want_it(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path
) -> None:
    fake = fake_factory("json")
    fake.add_file("foo", "foo-1.0.tar.gz", b"foo's bytes")
    config = tmp_path / "pyproxy.toml"
    config.write_text("[upstream]\npage_ttl = 2\n")
    server = pyproxy_factory.start(
        user=None,
        extra_args=["--workers", "2", "--upstream", fake.index_url, "--config", str(config)],
    )
    page = fake.page_path("foo")
    fake.latency = 0.5  # every worker asks while the first request is still upstream

    assert _all_at_once(server, "/simple/foo/") == [200] * CLIENTS  # cold
    assert fake.count(page) == 1, fake.requests

    fake.reset_counters()
    time.sleep(2.5)  # past page_ttl: stale in both workers' memory and on disk
    assert _all_at_once(server, "/simple/foo/") == [200] * CLIENTS
    assert fake.count(page) == 1, fake.requests
    assert fake.not_modified_count(page) == 1  # a revalidation: 304, nothing reparsed


def test_a_failure_is_shared_with_the_workers_that_waited_for_it(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory
) -> None:
    """While one worker's request fails, the others that waited take its failure: an outage
    costs one upstream request (and one wait), not one per worker."""
    fake = fake_factory("json")
    fake.add_file("foo", "foo-1.0.tar.gz", b"foo's bytes")
    server = pyproxy_factory.start(
        user=None, extra_args=["--workers", "2", "--upstream", fake.index_url]
    )
    page = fake.page_path("foo")
    fake.latency = 0.5
    fake.fail_paths[page] = 503
    assert _all_at_once(server, "/simple/foo/") == [503] * CLIENTS  # no copy to serve
    assert fake.count(page) == 1, fake.requests
