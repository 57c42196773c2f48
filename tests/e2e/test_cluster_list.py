"""End to end: the project list (`/simple/`) of a cluster of `pyproxy serve` nodes (two workers
each) on one PostgreSQL and one moto bucket, in front of a fake upstream listing thousands of
generated names.

However many clients ask both nodes at once, the list is asked upstream once for the cluster,
cold and again once stale (a 304); both nodes serve it merged with the private names (HTML and
JSON, relative links, gzip), a private project created on one node is in the other's list
within 1 s; a node that never held the list serves the cluster's stale copy while upstream is
down; an offline node on an empty data dir lists what the cluster fetched and the private names.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.dists import make_wheel
from tests.e2e.clients import SIMPLE_JSON, get, raw_request, twine_upload
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.e2e.test_cluster_nodes import add_users, command, within
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import PostgresServer, free_port
from tests.servers.s3 import S3Server
from tests.servers.s3 import credentials as s3_credentials

pytestmark = pytest.mark.e2e

CLIENTS = 24
INDEX_TTL_S = 10  # long enough for a few steps of a test on a busy machine
NAMES = 5_000
ADMIN, ADMIN_PW = "root", "list-root-pw"
RUN = uuid.uuid4().hex[:6]


@dataclass
class Nodes:
    a: PyproxyServer
    b: PyproxyServer
    fake: FakeUpstream
    dsn: str
    token: str
    start: Callable[..., PyproxyServer]


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
    fake.synthetic_names = NAMES

    def config(name: str, port: int, ttl: int = INDEX_TTL_S) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f"[upstream]\nurl = \"{fake.index_url}\"\nindex_ttl = {ttl}\n"
            "warm_up = false\n"
            f"[storage]\ndatabase = \"{dsn}\"\nobjects = \"s3://{bucket}/nodes\"\n"
            f"s3_endpoint = \"{s3.endpoint}\"\nnode_url = \"http://127.0.0.1:{port}\"\n"
        )
        return path

    def start(name: str, *args: str, ttl: int = INDEX_TTL_S) -> PyproxyServer:
        """A node on an empty data dir (its start-up check GETs /simple/, which has it fetch
        or take the cluster's list)."""
        port = free_port()
        return pyproxy_factory.start(
            tmp_path / f"data-{name}", user=None, create_user=False,
            extra_args=["--config", str(config(name, port, ttl)), "--port", str(port),
                        "--workers", "2", "--upstream", fake.index_url, *args],
        )

    first = config("admin", free_port())
    add_users(first, tmp_path / "data-admin", (ADMIN, ADMIN_PW, True))
    token = command(first, tmp_path / "data-admin", "token", "create", ADMIN)[1].strip()
    yield Nodes(start("a"), start("b"), fake, dsn, token, start)


def _all_at_once(nodes: Nodes, accept: str = SIMPLE_JSON) -> list[int]:
    """Statuses of CLIENTS GETs of /simple/, released together, alternately on A and B."""
    start = threading.Barrier(CLIENTS)

    def one(n: int) -> int:
        node = nodes.a if n % 2 else nodes.b
        start.wait(timeout=30)
        return get(f"{node.url}/simple/", accept=accept, timeout=60).status

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def listed(node: PyproxyServer) -> list[str]:
    response = get(f"{node.url}/simple/", accept=SIMPLE_JSON, timeout=60)
    assert response.status == 200, response.body
    return [project["name"] for project in json.loads(response.body)["projects"]]


def root_gets(fake: FakeUpstream) -> int:
    return fake.count("/simple/", "GET")


def upload(nodes: Nodes, node: PyproxyServer, project: str, directory: Path) -> None:
    twine_upload(node.upload_url, [make_wheel(directory, project, "1.0")], "__token__",
                 nodes.token)


def test_one_list_request_upstream_for_the_cluster_merged_with_private_names_on_every_node(
    nodes: Nodes, tmp_path: Path,
) -> None:
    fake = nodes.fake
    private = f"pl-private-{RUN}"
    upload(nodes, nodes.a, private, tmp_path / "dists")  # a new name: checked against the list
    fake.reset_counters()
    time.sleep(INDEX_TTL_S + 0.5)  # stale on both nodes and in the cluster's record
    fake.latency = 0.5  # every worker of both nodes asks while the first is still upstream
    assert _all_at_once(nodes) == [200] * CLIENTS
    assert root_gets(fake) == 1, fake.requests  # revalidated by one node for all
    fake.latency = 0.0
    fake.reset_counters()

    expected = sorted([f"Project_{n}" for n in range(NAMES)] + [private],
                      key=lambda name: name.lower().replace("_", "-"))
    assert listed(nodes.a) == listed(nodes.b) == expected
    with psycopg.connect(nodes.dsn) as conn:
        (revision, size), = conn.execute("SELECT revision, size FROM upstream_lists").fetchall()
    assert size > NAMES * 20 and revision  # the raw body, in the bucket

    html = get(f"{nodes.b.url}/simple/", accept="text/html")
    assert html.status == 200 and 'href="project-4999/"' in html.body
    assert f'href="{private}/"' in html.body and "://" not in html.body.split("<body>")[1]
    zipped = raw_request("GET", f"{nodes.b.url}/simple/",
                         headers={"Accept": SIMPLE_JSON, "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert [p["name"] for p in json.loads(gzip.decompress(zipped.content))["projects"]] == expected

    # a project created on A is in B's list within 1 s (the private store's notification)
    later = f"pl-later-{RUN}"
    upload(nodes, nodes.a, later, tmp_path / "dists")
    within(1.0, lambda: later in listed(nodes.b), "a private project created on A, in B's list")
    assert root_gets(fake) == 0  # the private names changed, upstream's list did not

    fake.reset_counters()
    time.sleep(INDEX_TTL_S + 0.5)
    fake.latency = 0.5
    assert _all_at_once(nodes, accept="text/html") == [200] * CLIENTS
    assert root_gets(fake) == 1 and fake.not_modified_count("/simple/") == 1, fake.requests


def test_a_node_that_never_held_the_list_serves_the_clusters_copy_and_offline_what_it_fetched(
    nodes: Nodes, tmp_path: Path,
) -> None:
    fake = nodes.fake
    fake.add_file("fetched", "fetched-1.0.tar.gz", b"fetched's bytes")
    private = f"pl-own-{RUN}"
    upload(nodes, nodes.a, private, tmp_path / "dists")
    assert get(f"{nodes.a.url}/simple/fetched/", accept=SIMPLE_JSON).status == 200
    assert len(listed(nodes.a)) == NAMES + 1
    fake.reset_counters()

    # an empty data dir, and the cluster's copy is fresh by its TTL: no upstream request
    fresh = nodes.start("c", ttl=3600)
    assert len(listed(fresh)) == NAMES + 1 and root_gets(fake) == 0, fake.requests

    fake.fail_status = 503  # upstream down, and the cluster's copy stale by D's TTL
    late = nodes.start("d", ttl=1)  # it never held the list
    shown = listed(late)
    assert len(shown) == NAMES + 1 and "Project_4999" in shown and private in shown
    assert "serving a stale copy" in late.stderr_text()

    offline = nodes.start("e", "--offline")  # lists what the cluster fetched, and private names
    assert listed(offline) == sorted(["fetched", private])
