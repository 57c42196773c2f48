"""End to end: what a single box guarantees holds on a cluster of two `pyproxy serve` nodes
(one PostgreSQL database, one moto bucket, a fake upstream), with one configuration that turns
several guarantees on at once: `[auth] read = "authenticated"` and `[policy] min_age = "7d"`.

Private wins (the name-takeover refusal and the reserve that lifts it, on both nodes), read
auth, upload validation, the cooldown, metrics on either node, and credentials (the database
password, the S3 secret) never written to a log, an answer or /metrics.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.dists import make_wheel, underscored
from tests.e2e.clients import (
    basic_auth,
    describe,
    installed,
    pip_install,
    raw_request,
    raw_upload,
    twine_upload,
)
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.e2e.test_cluster_nodes import add_users, command, within
from tests.e2e.test_pull_through import wheel_metadata
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import PostgresServer, free_port
from tests.servers.s3 import S3Server
from tests.servers.s3 import credentials as s3_credentials

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:6]
ADMIN, ADMIN_PW = "root", "parity-root-pw"
ALICE, ALICE_PW = "alice", "parity-alice-pw"
DB_PASSWORD = "parity-db-secret-pw"  # trust auth ignores it; it must still never be shown
S3_SECRET = "parity-s3-secret-key"  # moto checks no signature; never shown either
IN_EFFECT_S = 1.0
OLD = datetime(2025, 1, 1, tzinfo=UTC)

TAKEN = f"cp-taken-{RUN}"  # upstream has it; a plain user may not make it private
COOLED = f"cp-cooled-{RUN}"  # 1.0 is old, 2.0 is a day old: min_age holds 2.0 back


@dataclass
class Cluster:
    a: PyproxyServer
    b: PyproxyServer
    fake: FakeUpstream
    config: Path
    dsn: str
    dists: Path

    def cli(self, *args: str) -> tuple[int, str]:
        return command(self.config, self.a.data_dir, *args)

    @property
    def nodes(self) -> tuple[PyproxyServer, PyproxyServer]:
        return self.a, self.b


def _with_password(dsn: str) -> str:
    scheme, rest = dsn.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{DB_PASSWORD}@{host}"


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, s3: S3Server, module_pyproxy_factory: ServerFactory,
    module_fake_factory: FakeFactory, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("parity")
    if postgres.pid is None:
        postgres.start()
    dsn = _with_password(postgres.new_database())
    bucket = s3.new_bucket()
    fake = module_fake_factory("json")
    dists = base / "dists"
    taken = make_wheel(dists / "upstream", TAKEN, "99.0")
    fake.add_file(TAKEN, taken.name, taken.read_bytes(), metadata=wheel_metadata(taken),
                  upload_time=OLD)
    for version, uploaded in (("1.0", OLD), ("2.0", datetime.now(UTC) - timedelta(days=1))):
        wheel = make_wheel(dists / "upstream", COOLED, version)
        fake.add_file(COOLED, wheel.name, wheel.read_bytes(), metadata=wheel_metadata(wheel),
                      upload_time=uploaded)
    ports = free_port(), free_port()
    configs = []
    for name, port in zip("ab", ports, strict=True):
        config = base / f"{name}.toml"
        config.write_text(
            f'[storage]\ndatabase = "{dsn}"\nobjects = "s3://{bucket}/parity"\n'
            f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:{port}"\n'
            '[auth]\nread = "authenticated"\n'
            '[policy]\nmin_age = "7d"\n'
        )
        configs.append(config)
    data_dirs = base / "data-a", base / "data-b"
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_credentials().items():
            env.setenv(key, value)
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        add_users(configs[0], data_dirs[0], (ADMIN, ADMIN_PW, True), (ALICE, ALICE_PW, False))
        a, b = (
            module_pyproxy_factory.start(
                data_dir, user=None, create_user=False,
                extra_args=["--config", str(config), "--port", str(port),
                            "--upstream", fake.index_url],
            )
            for config, port, data_dir in zip(configs, ports, data_dirs, strict=True)
        )
        yield Cluster(a, b, fake, configs[0], dsn, dists)


def auth(user: str = ALICE, password: str = ALICE_PW) -> dict[str, str]:
    return {"Authorization": basic_auth(user, password)}


def page(node: PyproxyServer, project: str) -> list[str]:
    """The filenames a node lists for `project` (JSON), as alice."""
    answer = raw_request("GET", f"{node.simple_url}{project}/", headers={
        **auth(), "Accept": "application/vnd.pypi.simple.v1+json"})
    assert answer.status == 200, str(answer)
    return [f["filename"] for f in json.loads(answer.body)["files"]]


def index_with(node: PyproxyServer, user: str = ALICE, password: str = ALICE_PW) -> str:
    return f"http://{user}:{password}@127.0.0.1:{node.port}/simple/"


def test_reads_need_credentials_on_every_node(cluster: Cluster, tmp_path: Path) -> None:
    for node in cluster.nodes:
        anonymous = raw_request("GET", f"{node.simple_url}{COOLED}/")
        assert anonymous.status == 401, str(anonymous)
        assert anonymous.headers["www-authenticate"] == 'Basic realm="pyproxy"'
        wrong = raw_request("GET", f"{node.simple_url}{COOLED}/", headers=auth(ALICE, "nope"))
        assert wrong.status == 401, str(wrong)
    # a user added through node A's configuration reads on B: the users live in PostgreSQL
    proc = pip_install(index_with(cluster.b), COOLED, target=tmp_path / "pip")
    assert installed(tmp_path / "pip") == {underscored(COOLED): "1.0"}, describe(proc)


def test_the_cooldown_holds_back_the_same_files_on_every_node(cluster: Cluster) -> None:
    young = f"{underscored(COOLED)}-2.0-py3-none-any.whl"
    for node in cluster.nodes:
        assert page(node, COOLED) == [f"{underscored(COOLED)}-1.0-py3-none-any.whl"]
        refused = raw_request("GET", f"{node.url}/files/{COOLED}/{young}", headers=auth())
        assert refused.status == 403, str(refused)
        assert 'held back by [policy] min_age = "7d"' in refused.body
    path = cluster.fake.file_path(COOLED, young)
    assert cluster.fake.count(path) == 0, "a held-back file was fetched from upstream"


def test_private_wins_and_a_name_upstream_has_needs_a_reserve_on_every_node(
    cluster: Cluster,
) -> None:
    ours = make_wheel(cluster.dists / "ours", TAKEN, "1.0")
    upstreams = f"{underscored(TAKEN)}-99.0-py3-none-any.whl"
    for node in cluster.nodes:
        assert page(node, TAKEN) == [upstreams]
        proc = twine_upload(node.upload_url, [ours], ALICE, ALICE_PW, check=False)
        assert proc.returncode != 0 and "is a project on the upstream index" in (
            proc.stdout + proc.stderr), describe(proc)
    assert cluster.cli("reserve", TAKEN)[0] == 0
    twine_upload(cluster.b.upload_url, [ours], ALICE, ALICE_PW)
    for node in cluster.nodes:
        within(IN_EFFECT_S, lambda node=node: page(node, TAKEN) == [ours.name],
               "the private upload, on every node")
        gone = raw_request("GET", f"{node.url}/files/{TAKEN}/{upstreams}", headers=auth())
        assert gone.status == 404, str(gone)


def test_an_invalid_upload_is_refused_on_either_node_and_stores_nothing(
    cluster: Cluster,
) -> None:
    project = f"cp-bad-{RUN}"
    wheel = make_wheel(cluster.dists / "bad", project, "1.0")
    for node in cluster.nodes:
        answer = raw_upload(node.upload_url, wheel, ALICE, ALICE_PW,
                            content=b"PK\x03\x04 this is no zip archive")
        assert answer.status == 400, str(answer)
        assert "Traceback" not in answer.body
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute("SELECT filename FROM private_files WHERE project = %s",
                            (project,)).fetchall()
    assert rows == []
    for node in cluster.nodes:
        missing = raw_request("GET", f"{node.simple_url}{project}/", headers=auth())
        assert missing.status == 404, str(missing)


def test_metrics_on_every_node_and_no_credentials_anywhere(cluster: Cluster) -> None:
    young = f"{underscored(COOLED)}-2.0-py3-none-any.whl"
    for node in cluster.nodes:
        assert raw_request("GET", f"{node.url}/files/{COOLED}/{young}",
                           headers=auth()).status == 403
        metrics = raw_request("GET", f"{node.url}/metrics")
        assert metrics.status == 200, str(metrics)
        counted = [line for line in metrics.body.splitlines()
                   if line.startswith('pyproxy_policy_refused_requests_total{reason="min_age"}')]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, counted
        for secret in (DB_PASSWORD, S3_SECRET, ADMIN_PW, ALICE_PW):
            assert secret not in metrics.body
            assert secret not in node.stderr_text(), f"{secret!r} in {node!r}'s log"
            assert secret not in node.stdout_path.read_text(errors="replace")
