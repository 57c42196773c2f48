"""End to end: upstream pages shared by two `pyproxy serve` nodes (two workers each) on one
PostgreSQL: however many clients ask both nodes at once, one page request goes upstream, cold
and again once stale (a 304); a page one node fetched is served by the other without asking
upstream, and still when upstream is down and the page stale, by a node that never held it;
real pip installs through the node that did not fetch the page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import SIMPLE_JSON, get, pip_install
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import PostgresServer, free_port
from tests.servers.s3 import S3Server
from tests.servers.s3 import credentials as s3_credentials

pytestmark = pytest.mark.e2e

CLIENTS = 24
PAGE_TTL_S = 2


@dataclass
class Nodes:
    a: PyproxyServer
    b: PyproxyServer
    fake: FakeUpstream


@pytest.fixture
def nodes(
    postgres: PostgresServer, s3: S3Server, pyproxy_factory: ServerFactory,
    fake_factory: FakeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Nodes]:
    if postgres.pid is None:
        postgres.start()
    dsn, bucket = postgres.new_database(), s3.new_bucket()
    for key, value in s3_credentials().items():
        monkeypatch.setenv(key, value)
    fake = fake_factory("json")
    started = []
    for name in "ab":
        port = free_port()
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f"[upstream]\nurl = \"{fake.index_url}\"\npage_ttl = {PAGE_TTL_S}\nwarm_up = false\n"
            f"[storage]\ndatabase = \"{dsn}\"\nobjects = \"s3://{bucket}/nodes\"\n"
            f"s3_endpoint = \"{s3.endpoint}\"\nnode_url = \"http://127.0.0.1:{port}\"\n"
        )
        started.append(pyproxy_factory.start(
            tmp_path / f"data-{name}", user=None, create_user=False,
            extra_args=["--config", str(config), "--port", str(port), "--workers", "2",
                        "--upstream", fake.index_url],
        ))
    yield Nodes(started[0], started[1], fake)


def _all_at_once(nodes: Nodes, path: str) -> list[int]:
    """Statuses of CLIENTS GETs of `path`, released together, alternately on A and B, each on a
    new connection (so each node's kernel spreads them over its workers)."""
    start = threading.Barrier(CLIENTS)

    def one(n: int) -> int:
        node = nodes.a if n % 2 else nodes.b
        start.wait(timeout=30)
        return get(f"{node.url}{path}", accept=SIMPLE_JSON, timeout=60).status

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def test_one_page_request_upstream_for_every_worker_of_every_node(nodes: Nodes) -> None:
    fake = nodes.fake
    fake.add_file("foo", "foo-1.0.tar.gz", b"foo's bytes")
    page = fake.page_path("foo")
    fake.latency = 0.5  # every worker of both nodes asks while the first is still upstream
    assert _all_at_once(nodes, "/simple/foo/") == [200] * CLIENTS  # cold
    assert fake.count(page) == 1, fake.requests

    fake.reset_counters()
    time.sleep(PAGE_TTL_S + 0.5)  # stale in every worker's memory and in the shared record
    assert _all_at_once(nodes, "/simple/foo/") == [200] * CLIENTS
    assert fake.count(page) == 1, fake.requests
    assert fake.not_modified_count(page) == 1  # a revalidation: 304


def test_a_page_one_node_fetched_is_the_other_nodes_copy_and_pip_installs_through_it(
    nodes: Nodes, tmp_path: Path,
) -> None:
    fake = nodes.fake
    wheel = make_wheel(tmp_path / "dists", "lib", "1.0")
    fake.add_file("lib", wheel.name, wheel.read_bytes())
    fake.add_file("other", "other-1.0.tar.gz", b"other's bytes")
    for project in ("lib", "other"):
        assert get(f"{nodes.a.url}/simple/{project}/", accept=SIMPLE_JSON).status == 200
    fake.reset_counters()
    response = get(f"{nodes.b.url}/simple/lib/", accept=SIMPLE_JSON)
    assert response.status == 200 and wheel.name in response.body
    assert fake.count(fake.page_path("lib")) == 0, fake.requests  # B read A's record

    # (pip may take longer than the short TTL to ask: then B revalidates, which is fine)
    pip_install(f"{nodes.b.url}/simple/", "lib", target=tmp_path / "site")
    assert (tmp_path / "site" / "lib").is_dir()

    time.sleep(PAGE_TTL_S + 0.5)
    fake.fail_status = 503  # upstream down, and the page is stale
    response = get(f"{nodes.b.url}/simple/other/", accept=SIMPLE_JSON)  # B never held it
    assert response.status == 200
    assert "other-1.0.tar.gz" in response.body
    assert "serving a stale copy" in nodes.b.stderr_text()
