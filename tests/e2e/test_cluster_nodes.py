"""End to end: two `pyproxy serve` nodes (processes) sharing one PostgreSQL database.

What one node writes is in effect on the other within 1 s: a twine upload, yank, remove, grant,
restrict and token revoke (each measured by polling the other node; the notification normally
takes a few milliseconds). 20 parallel uploads of one file spread over both nodes store
exactly one. With PostgreSQL stopped, an upload answers 503 while a warm page is still served;
once it is back, uploads work again without restarting either node.

The nodes get [storage] objects (a moto bucket) and node_url as a cluster node does, and a
data_dir each: the private bodies are in the bucket, so a file uploaded on A is served by B
from its own copy of the bucket's object.

Commands run through the CLI's entry point in this process (with the nodes' configuration),
as tests/e2e/test_revocation.py does: a subprocess's interpreter shutdown would cost more than
the delay being measured.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pyproxy.cli.main import main
from tests.dists import make_sdist, make_wheel
from tests.e2e.clients import (
    SIMPLE_JSON,
    basic_auth,
    get,
    listed_filenames,
    project_json,
    raw_request,
    raw_upload,
    twine_upload,
)
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.servers.postgres import PostgresServer, free_port
from tests.servers.s3 import S3Server
from tests.servers.s3 import credentials as s3_credentials

pytestmark = pytest.mark.e2e

IN_EFFECT_S = 1.0  # the guarantee: a change on one node is in effect on the other within this
ADMIN, ADMIN_PW = "root", "cluster-root-pw"
BOB, BOB_PW = "bob", "cluster-bob-pw1"


def command(config: Path, data_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    """`pyproxy ARGS` with a node's configuration: (exit status, what it printed)."""
    out = io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out):
            status = main([*args, "--config", str(config), "--data-dir", str(data_dir)])
    finally:
        sys.stdin = saved
    return status, out.getvalue()


def add_users(config: Path, data_dir: Path, *users: tuple[str, str, bool]) -> None:
    """`pyproxy user add` for each (name, password, admin) with a node's configuration."""
    for user, password, admin in users:
        added = command(config, data_dir, "user", "add", user, *(["--admin"] if admin else []),
                        "--password-stdin", stdin=password + "\n")
        assert added[0] == 0, added


@dataclass
class Cluster:
    a: PyproxyServer
    b: PyproxyServer
    config: Path  # node A's configuration, for commands
    dsn: str

    def cli(self, *args: str) -> int:
        return command(self.config, self.a.data_dir, *args)[0]


def _node_config(directory: Path, name: str, dsn: str, s3: S3Server, bucket: str, port: int) -> Path:
    config = directory / f"{name}.toml"
    config.write_text(
        "[storage]\n"
        f'database = "{dsn}"\n'
        f'objects = "s3://{bucket}/nodes"\n'
        f's3_endpoint = "{s3.endpoint}"\n'
        f'node_url = "http://127.0.0.1:{port}"\n'
    )
    return config


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, s3: S3Server, module_pyproxy_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    if postgres.pid is None:
        postgres.start()
    dsn = postgres.new_database()
    bucket = s3.new_bucket()
    data_dirs = base / "data-a", base / "data-b"
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_credentials().items():
            env.setenv(key, value)
        ports = free_port(), free_port()
        configs = [_node_config(base, name, dsn, s3, bucket, port)
                   for name, port in zip("ab", ports, strict=True)]
        add_users(configs[0], data_dirs[0], (ADMIN, ADMIN_PW, True), (BOB, BOB_PW, False))
        a, b = (
            module_pyproxy_factory.start(
                data_dir, user=None, create_user=False,
                extra_args=["--config", str(config), "--port", str(port)],
            )
            for config, port, data_dir in zip(configs, ports, data_dirs, strict=True)
        )
        yield Cluster(a, b, configs[0], dsn)


@pytest.fixture(scope="module")
def admin_token(cluster: Cluster) -> str:
    return _token(cluster, ADMIN)


def _token(cluster: Cluster, user: str) -> str:
    status, printed = command(cluster.config, cluster.a.data_dir, "token", "create", user)
    assert status == 0
    return printed.strip()


def within(seconds: float, check: Callable[[], bool], what: str) -> float:
    """Poll `check` until it holds; how long that took (asserted <= `seconds`)."""
    start = time.monotonic()
    while not check():
        elapsed = time.monotonic() - start
        assert elapsed <= seconds, f"{what}: not in effect within {seconds} s"
        time.sleep(0.01)
    return time.monotonic() - start


def name() -> str:
    return f"cluster-{uuid.uuid4().hex[:8]}"


def authorized(token: str) -> dict[str, str]:
    return {"Authorization": basic_auth("__token__", token), "Accept": SIMPLE_JSON}


def test_a_twine_upload_on_one_node_is_served_by_the_other_within_a_second(
    cluster: Cluster, admin_token: str, tmp_path: Path,
) -> None:
    project = name()
    wheel = make_wheel(tmp_path, project, "1.0")
    assert listed_filenames(cluster.b.simple_url, project) == []  # B has looked: it holds a 404
    twine_upload(cluster.a.upload_url, [wheel], "__token__", admin_token)
    elapsed = within(IN_EFFECT_S, lambda: listed_filenames(cluster.b.simple_url, project) == [
        wheel.name], "the upload on A, on B")
    print(f"upload on A listed on B after {elapsed * 1000:.1f} ms")
    (entry,) = project_json(cluster.b.simple_url, project)["files"]
    body = get(f"{cluster.b.url}{entry['url']}" if entry["url"].startswith("/") else entry["url"])
    assert body.status == 200 and body.content == wheel.read_bytes()


def test_yank_remove_and_restrict_on_one_node_are_in_effect_on_the_other(
    cluster: Cluster, admin_token: str, tmp_path: Path,
) -> None:
    project = name()
    for version in ("1.0", "2.0"):
        wheel = make_wheel(tmp_path, project, version)
        assert raw_upload(cluster.a.upload_url, wheel, "__token__", admin_token).status == 200
    within(IN_EFFECT_S, lambda: len(listed_filenames(cluster.b.simple_url, project)) == 2,
           "two uploads")

    def yanked() -> bool:
        files = project_json(cluster.b.simple_url, project)["files"]
        return any(f.get("yanked") for f in files if "-1.0-" in f["filename"])

    assert cluster.cli("yank", project, "1.0", "--reason", "broken") == 0
    print(f"yank: {within(IN_EFFECT_S, yanked, 'the yank') * 1000:.1f} ms")

    assert cluster.cli("remove", project, "2.0") == 0
    removed = within(IN_EFFECT_S, lambda: all(
        "-2.0-" not in f for f in listed_filenames(cluster.b.simple_url, project)), "the removal")
    print(f"remove: {removed * 1000:.1f} ms")

    page = f"{cluster.b.simple_url}{project}/"
    assert cluster.cli("restrict", project) == 0
    restricted = within(IN_EFFECT_S, lambda: get(page).status == 401, "the restriction")
    print(f"restrict: {restricted * 1000:.1f} ms")


def test_grant_and_token_revoke_on_one_node_are_in_effect_on_the_other(
    cluster: Cluster, admin_token: str, tmp_path: Path,
) -> None:
    project = name()
    wheel = make_wheel(tmp_path, project, "1.0")
    assert raw_upload(cluster.a.upload_url, wheel, "__token__", admin_token).status == 200
    assert cluster.cli("restrict", project) == 0
    bob = _token(cluster, BOB)
    page = f"{cluster.b.simple_url}{project}/"

    def bob_reads() -> int:
        return raw_request("GET", page, headers=authorized(bob)).status

    within(IN_EFFECT_S, lambda: bob_reads() == 403, "the restriction")
    assert cluster.cli("grant", project, BOB, "--read") == 0
    print(f"grant: {within(IN_EFFECT_S, lambda: bob_reads() == 200, 'the grant') * 1000:.1f} ms")
    assert cluster.cli("token", "revoke", bob) == 0
    revoked = within(IN_EFFECT_S, lambda: bob_reads() == 401, "the token revoke")
    print(f"token revoke: {revoked * 1000:.1f} ms")


def test_twenty_parallel_uploads_of_one_file_over_both_nodes_store_one(
    cluster: Cluster, admin_token: str, tmp_path: Path,
) -> None:
    project = name()
    sdist = make_sdist(tmp_path, project, "1.0")
    statuses: list[int] = []
    answers: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def send(node: PyproxyServer) -> None:
        barrier.wait(timeout=30)
        response = raw_upload(node.upload_url, sdist, "__token__", admin_token, timeout=60)
        with lock:
            statuses.append(response.status)
            answers.append(str(response))

    threads = [threading.Thread(target=send, args=(cluster.a if i % 2 else cluster.b,))
               for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    # the identical file again is a success that stores nothing
    assert statuses == [200] * 20, answers
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute(
            "SELECT filename FROM private_files WHERE project = %s", (project,)
        ).fetchall()
    assert rows == [(sdist.name,)]
    for node in (cluster.a, cluster.b):
        assert listed_filenames(node.simple_url, project) == [sdist.name]


def test_database_down_uploads_answer_503_warm_pages_are_served_and_it_recovers(
    cluster: Cluster, admin_token: str, postgres: PostgresServer, tmp_path: Path,
) -> None:
    project = name()
    first = make_wheel(tmp_path, project, "1.0")
    assert raw_upload(cluster.a.upload_url, first, "__token__", admin_token).status == 200
    page = f"{cluster.b.simple_url}{project}/"
    within(IN_EFFECT_S, lambda: get(page).status == 200, "the upload")  # warm on B
    assert get(f"{cluster.a.simple_url}{project}/").status == 200  # and on A
    second = make_wheel(tmp_path, project, "2.0")
    postgres.stop()
    try:
        for node in (cluster.a, cluster.b):
            response = raw_upload(node.upload_url, second, "__token__", admin_token)
            assert response.status == 503, str(response)
            assert "the database is unavailable" in response.body, str(response)
            assert "Traceback" not in node.stderr_text()
            warm = get(f"{node.simple_url}{project}/")
            assert warm.status == 200 and first.name in warm.body
    finally:
        postgres.start()
    for node in (cluster.a, cluster.b):
        def uploads(node: PyproxyServer = node) -> bool:
            return raw_upload(node.upload_url, second, "__token__", admin_token).status == 200

        within(10, uploads, "uploads after the database came back")
    within(IN_EFFECT_S, lambda: second.name in listed_filenames(cluster.b.simple_url, project),
           "the upload after the restart")
