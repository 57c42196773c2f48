"""End to end: upstream files on a cluster of two `pyproxy serve` nodes sharing one PostgreSQL
and one moto bucket: real pip through one node, then the other; a leader killed with SIGKILL in
the middle of a download, taken over by the node that was following it; an offline node with an
empty data dir installing what the other node cached, with upstream gone."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tests.dists import make_wheel, underscored
from tests.e2e.clients import installed, listed_filenames, pip_install, uv_pip_install
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.e2e.test_pull_through import expected_tree, publish_tree, wheel_metadata
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import free_port
from tests.servers.s3 import S3Server
from tests.waiting import wait_until

RUN = uuid.uuid4().hex[:6]
MiB = 1024 * 1024


def start_node(factory: ServerFactory, fake: FakeUpstream, tmp_path: Path, *, pg_dsn: str,
               s3: S3Server, bucket: str, extra_args: tuple[str, ...] = ()) -> PyproxyServer:
    port = free_port()
    config = tmp_path / f"node-{port}.toml"
    config.write_text(
        f'[storage]\ndatabase = "{pg_dsn}"\nobjects = "s3://{bucket}"\n'
        f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:{port}"\n'
    )
    return factory.start(user=None, extra_args=[
        "--upstream", fake.index_url, "--config", str(config), "--port", str(port), *extra_args,
    ])


def test_pip_through_node_a_then_node_b_serves_the_wheel_without_upstream(
    fake_factory, pyproxy_factory, tmp_path, pg_dsn, s3, bucket
) -> None:
    fake = fake_factory("json")
    project = f"cl-app-{RUN}"
    wheel = make_wheel(tmp_path / "dists", project, "1.0")
    fake.add_file(project, wheel.name, wheel.read_bytes(), metadata=wheel_metadata(wheel),
                  upload_time=datetime(2025, 1, 1, tzinfo=UTC))
    a = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket)
    b = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket)
    pip_install(a.simple_url, project, target=tmp_path / "via-a")
    assert installed(tmp_path / "via-a") == {underscored(project): "1.0"}
    wheel_path = fake.file_path(project, wheel.name)
    assert fake.count(wheel_path) == 1
    wait_until(lambda: _listed(pg_dsn, wheel), 10, "a to share the wheel once verified")
    pip_install(b.simple_url, project, target=tmp_path / "via-b")
    assert installed(tmp_path / "via-b") == {underscored(project): "1.0"}
    assert fake.count(wheel_path) == 1  # b took it from the bucket


def test_an_offline_node_with_an_empty_data_dir_installs_what_another_node_cached(
    fake_factory, pyproxy_factory, tmp_path, pg_dsn, s3, bucket
) -> None:
    """A warms the cluster with pip; upstream and A go away; B, started --offline on an empty
    data dir, lists and serves what the cluster holds (pages from PostgreSQL, files copied from
    the bucket) and nothing it does not."""
    fake = fake_factory("json")
    tree = publish_tree(fake, tmp_path / "dists")
    a = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket)
    pip_install(a.simple_url, tree.app, target=tmp_path / "via-a")
    assert installed(tmp_path / "via-a") == expected_tree(tree)
    wanted = tuple(f"{underscored(project)}-{version}-" for project, version in
                   ((tree.app, "1.0"), (tree.lib, "1.1"), (tree.base, "1.0")))
    fetched = [wheel for name, wheel in tree.wheels.items() if name.startswith(wanted)]
    wait_until(lambda: all(_listed(pg_dsn, w) for w in fetched), 10,
               "a to share each wheel once verified")
    a.stop()
    fake.stop_blocking()

    b = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket,
                   extra_args=("--offline",))
    proc = pip_install(b.simple_url, tree.app, target=tmp_path / "via-b",
                       extra_args=["--retries", "0"])
    assert installed(tmp_path / "via-b") == expected_tree(tree), proc.stdout + proc.stderr
    proc = uv_pip_install(b.simple_url, tree.app, target=tmp_path / "via-b-uv")
    assert installed(tmp_path / "via-b-uv") == expected_tree(tree), proc.stdout + proc.stderr
    # base 2.0 was listed upstream, never fetched: not offered
    assert listed_filenames(b.simple_url, tree.base) == [
        name for name in tree.wheels if name.startswith(wanted[2])]


def _listed(dsn: str, wheel: Path) -> bool:
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM cache_blobs WHERE key = %s", (sha256,)).fetchone() \
            is not None


def test_a_killed_leader_is_taken_over_and_the_follower_gets_the_whole_file(
    fake_factory, pyproxy_factory, tmp_path, pg_dsn, s3, bucket
) -> None:
    fake = fake_factory("json")
    project = f"cl-big-{RUN}"
    filename = f"{underscored(project)}-1.0-py3-none-any.whl"
    dist = fake.add_generated_file(project, filename, 8 * MiB)
    fake.chunk_delay = 0.01  # 128 chunks: about 1.3 s upstream
    a = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket)
    b = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket)
    path = f"/files/{project}/{filename}"
    for node in (a, b):
        urllib.request.urlopen(f"{node.url}/simple/{project}/", timeout=10).read()

    leader = urllib.request.urlopen(a.url + path, timeout=30)
    assert leader.read(64 * 1024)  # a leads: the download is under way
    result: dict[str, object] = {}

    def follow() -> None:
        digest, size = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(b.url + path, timeout=30) as response:
                while chunk := response.read(256 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    if size >= 1 * MiB:
                        result.setdefault("following", time.monotonic())
        except Exception as exc:
            result["error"] = repr(exc)
        result["sha256"], result["size"] = digest.hexdigest(), size

    thread = threading.Thread(target=follow)
    thread.start()
    deadline = time.monotonic() + 10
    while "following" not in result and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "following" in result, result
    assert fake.count(fake.file_path(project, filename)) == 1  # b follows a, no GET of its own
    a.kill()
    killed = time.monotonic()
    leader.close()
    thread.join(30)
    assert result.get("error") is None, result
    assert (result["size"], result["sha256"]) == (dist.size, dist.sha256)
    assert fake.count(fake.file_path(project, filename)) == 2  # b took over upstream
    assert time.monotonic() - killed < 10
    # shared by b, and nothing left in flight
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(pg_dsn) as conn:
            listed = conn.execute("SELECT size FROM cache_blobs WHERE key = %s",
                                  (dist.sha256,)).fetchone()
            inflight = conn.execute("SELECT count(*) FROM cache_inflight").fetchone()
        if listed is not None:
            break
        time.sleep(0.05)
    assert listed == (dist.size,) and inflight == (0,)
