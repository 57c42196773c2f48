"""`pyproxy cache stats|prune|verify` on a cluster (pyproxy/ops/clustercache.py): run through
cli.main() with the cluster's configuration and a data directory of its own (an operator's
box, not a node), while an in-process node on the same PostgreSQL and moto bucket serves. The
commands see and change the shared cache, never a node's local copies, and never private
objects."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pyproxy.cli import main as cli
from pyproxy.ops import clustercache
from pyproxy.stores.clusterblobs import ClusterBlobCache, object_key
from pyproxy.stores.objects import Bucket
from pyproxy.web.app import build_app
from pyproxy.web.context import Services
from tests.conftest import base_settings, open_services
from tests.dists import core_metadata, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.servers.postgres import free_port
from tests.servers.s3 import S3Server

SIZES = {"a": 300_000, "b": 200_000, "c": 100_000}
ERROR_PAGE = b"<html><body>Please log in</body></html>"


@pytest.fixture(autouse=True)
def _isolated(isolated_cwd: Path) -> None:
    """No ./pyproxy.toml and no PYPROXY_* variables reach the commands."""


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    for name, size in SIZES.items():
        fake.add_generated_file(name, f"{name}-1.0-py3-none-any.whl", size,
                                metadata=f"Name: {name}\nMetadata-Version: 2.1\n".encode())
    return fake


@pytest.fixture
def store(s3: S3Server, bucket: str) -> Bucket:
    return Bucket(f"s3://{bucket}", endpoint=s3.endpoint)


@pytest.fixture
def config(tmp_path: Path, pg_dsn: str, s3: S3Server, bucket: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(f'[storage]\ndatabase = "{pg_dsn}"\nobjects = "s3://{bucket}"\n'
                    f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:9"\n')
    return path


class Node:
    def __init__(self, client: TestClient, services: Services) -> None:
        self.client, self.services = client, services

    @property
    def blobs(self) -> ClusterBlobCache:
        assert self.services.cluster_blobs is not None
        return self.services.cluster_blobs

    async def download(self, name: str, suffix: str = "", project: str | None = None) -> bytes:
        async with self.client.get(f"/files/{project or name}/{name}{suffix}") as response:
            assert response.status == 200, await response.text()
            body = await response.read()
        await asyncio.gather(*list(self.blobs._flight.tasks))  # shared with the cluster
        return body


@pytest.fixture
async def node(tmp_path: Path, pg_dsn: str, s3: S3Server, bucket: str, fake: FakeUpstream
               ) -> AsyncIterator[Node]:
    port = free_port()
    settings = base_settings(
        tmp_path / "node", upstream_url=fake.index_url, upstream_warm_up=False,
        storage_database=pg_dsn, storage_objects=f"s3://{bucket}",
        storage_s3_endpoint=s3.endpoint, storage_node_url=f"http://127.0.0.1:{port}",
    )
    services = open_services(settings)
    client = TestClient(TestServer(build_app(services), host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield Node(client, services)
    finally:
        await client.close()
        await services.close()


def run(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
        ) -> tuple[int, str, str]:
    """The command on an operator's box: the cluster's configuration, a data dir of its own."""
    code = cli.main([*args, "--config", str(config), "--data-dir", str(tmp_path / "ops")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def rows(dsn: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query.encode(), args).fetchall()


async def _warm_all(node: Node) -> None:
    for name in SIZES:  # a is used first, so it is the least recently used
        await node.download(f"{name}-1.0-py3-none-any.whl", project=name)


def _sha(fake: FakeUpstream, name: str) -> str:
    return fake.file(name, f"{name}-1.0-py3-none-any.whl").sha256


async def test_stats_counts_the_cluster_s_files_bytes_and_pages(
    node: Node, fake: FakeUpstream, config: Path, tmp_path: Path, store: Bucket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _warm_all(node)
    await node.download("a-1.0-py3-none-any.whl", ".metadata", project="a")
    async with node.client.get("/simple/") as response:  # the list: its body into the bucket
        assert response.status == 200
    listed = sum(size for key, size in store.keys("lists/"))
    assert listed > 0
    code, out, _ = run(config, tmp_path, capsys, "cache", "stats", "--json")
    assert code == 0
    figures = orjson.loads(out)
    assert figures["list_bytes"] == listed
    assert figures["projects"] == 3
    assert figures["files"] == 3 and figures["metadata_files"] == 1
    assert figures["bytes"] == sum(SIZES.values()) + len(b"Name: a\nMetadata-Version: 2.1\n")
    assert figures["page_bytes"] > 0
    assert figures["hits"] is None  # no node runs on the operator's data dir

    code, out, _ = run(config, tmp_path, capsys, "cache", "stats")
    assert code == 0
    assert "3 upstream project pages (" in out and "in PostgreSQL)" in out
    assert "3 files, 1 .metadata" in out
    assert "of project lists" in out
    assert "a/a-1.0-py3-none-any.whl" in out  # named from the pages in PostgreSQL
    assert "no node runs on this data directory" in out
    assert not (tmp_path / "ops" / "files").exists()  # nothing local was opened


async def test_prune_evicts_cluster_wide_least_recently_used_first_never_private(
    node: Node, fake: FakeUpstream, config: Path, tmp_path: Path, store: Bucket, pg_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "private").write_bytes(b"p" * 300_000)
    assert store.put_file("private/blobs/x", tmp_path / "private")
    await _warm_all(node)
    node.blobs.flush_uses()  # as the node's timer would
    with psycopg.connect(pg_dsn) as conn:  # uses in whole seconds: b is the least used
        for name, used in (("a", 300), ("b", 100), ("c", 200)):
            conn.execute("UPDATE cache_blobs SET last_used = %s WHERE key = %s",
                         (used, _sha(fake, name)))
    bound = sum(SIZES.values()) - 150_000  # b alone (200 kB) brings it under
    code, out, _ = run(config, tmp_path, capsys, "cache", "prune", "--max-size", str(bound))
    assert code == 0 and out.startswith("removed 1 files") and "the shared cache holds" in out
    assert {key for (key,) in rows(pg_dsn, "SELECT key FROM cache_blobs")} == {
        _sha(fake, "a"), _sha(fake, "c")}
    assert {key for key, _ in store.keys("cache/")} == {
        object_key(_sha(fake, "a")), object_key(_sha(fake, "c"))}

    # --older-than: by the last use the index holds
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("UPDATE cache_blobs SET last_used = extract(epoch FROM now())::bigint"
                     " WHERE key = %s", (_sha(fake, "a"),))
    code, out, _ = run(config, tmp_path, capsys, "cache", "prune", "--older-than", "30")
    assert code == 0 and out.startswith("removed 1 files")
    assert rows(pg_dsn, "SELECT key FROM cache_blobs") == [(_sha(fake, "a"),)]

    code, _, _ = run(config, tmp_path, capsys, "cache", "prune", "--max-size", "0")
    assert code == 0
    assert rows(pg_dsn, "SELECT key FROM cache_blobs") == [] and list(store.keys("cache/")) == []
    assert store.size("private/blobs/x") == 300_000  # private bodies are never the cache's


async def test_prune_waits_for_the_node_that_is_evicting(
    node: Node, config: Path, tmp_path: Path, pg_dsn: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _warm_all(node)
    monkeypatch.setattr(clustercache, "EVICTION_PATIENCE_S", 0.0)
    with psycopg.connect(pg_dsn, autocommit=True) as other:  # a node evicting now
        other.execute("SELECT pg_advisory_lock(hashtextextended('cache:evict', 0))")
        code, out, err = run(config, tmp_path, capsys, "cache", "prune", "--max-size", "0")
        assert code == 1 and out == ""
        assert err.strip().splitlines() == [
            "pyproxy: another node has been evicting from the shared cache for 0 s: try again later"]
        assert len(rows(pg_dsn, "SELECT key FROM cache_blobs")) == 3  # nothing removed
    code, _, _ = run(config, tmp_path, capsys, "cache", "prune", "--max-size", "0")
    assert code == 0 and rows(pg_dsn, "SELECT key FROM cache_blobs") == []


def _replace(store: Bucket, tmp_path: Path, key: str, body: bytes) -> None:
    store.delete(object_key(key))
    (tmp_path / "planted").write_bytes(body)
    assert store.put_file(object_key(key), tmp_path / "planted")


async def test_verify_rehashes_the_bucket_s_objects_and_removes_the_bad_ones(
    node: Node, fake: FakeUpstream, config: Path, tmp_path: Path, store: Bucket, pg_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _warm_all(node)
    code, out, _ = run(config, tmp_path, capsys, "cache", "verify")
    assert code == 0 and "checked 3 files" in out and "0 damaged" in out
    b, c = _sha(fake, "b"), _sha(fake, "c")
    body = bytearray(b"".join(fake.file("b", "b-1.0-py3-none-any.whl").chunks()))
    body[0] ^= 0xFF  # same size, one byte flipped
    _replace(store, tmp_path, b, bytes(body))
    _replace(store, tmp_path, c, b"short")

    code, out, _ = run(config, tmp_path, capsys, "cache", "verify")
    assert code == 1, "damage found must show in the exit status"
    assert "removed b/b-1.0-py3-none-any.whl: sha256" in out
    assert "removed c/c-1.0-py3-none-any.whl: 5 bytes in the bucket, 100000 when cached" in out
    assert "checked 3 files" in out and "2 damaged and removed" in out
    assert rows(pg_dsn, "SELECT key FROM cache_blobs") == [(_sha(fake, "a"),)]
    assert {key for key, _ in store.keys("cache/")} == {object_key(_sha(fake, "a"))}

    # an object lost while the index lists it: forgotten, so a node fetches the file anew
    store.delete(object_key(_sha(fake, "a")))
    code, out, _ = run(config, tmp_path, capsys, "cache", "verify")
    assert code == 1 and "removed a/a-1.0-py3-none-any.whl: listed in the cache" in out
    assert rows(pg_dsn, "SELECT key FROM cache_blobs") == []


async def test_verify_checks_the_kind_of_objects_cached_without_a_hash(
    node: Node, fake: FakeUpstream, config: Path, tmp_path: Path, store: Bucket, pg_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wheel = make_wheel(tmp_path / "dists", "d", "1.0")
    fake.add_file("d", wheel.name, wheel.read_bytes(), metadata=core_metadata("d", "1.0"),
                  listed_hash=False, listed_size=False)
    assert await node.download(wheel.name, project="d") == wheel.read_bytes()
    assert await node.download(wheel.name, ".metadata", project="d") == core_metadata("d", "1.0")
    keys = [key for (key,) in rows(pg_dsn, "SELECT key FROM cache_blobs")]
    assert len(keys) == 2
    code, out, _ = run(config, tmp_path, capsys, "cache", "verify")
    assert code == 0 and "checked 2 files" in out, "good files without a hash stay"

    digest = hashlib.sha256(ERROR_PAGE).hexdigest()  # cached as pyproxy did before it asked
    for key in keys:                                  # bodies without a hash for proof
        _replace(store, tmp_path, key, ERROR_PAGE)
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("UPDATE cache_blobs SET sha256 = %s, size = %s WHERE key = %s",
                         (digest, len(ERROR_PAGE), key))
    code, out, _ = run(config, tmp_path, capsys, "cache", "verify")
    assert code == 1
    assert "removed d/d-1.0-py3-none-any.whl: upstream lists no sha256" in out
    assert "removed d/d-1.0-py3-none-any.whl.metadata: upstream lists no sha256" in out
    assert "not a zip file" in out and "no Metadata-Version" in out
    assert rows(pg_dsn, "SELECT key FROM cache_blobs") == []


@pytest.mark.parametrize("command", [("stats",), ("prune", "--max-size", "0"), ("verify",)])
def test_an_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, s3: S3Server, bucket: str, capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(f'[storage]\ndatabase = "postgresql://pyproxy:s3cr3t-pw@127.0.0.1:'
                      f'{free_port()}/db"\nobjects = "s3://{bucket}"\n'
                      f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:9"\n')
    code, out, err = run(config, tmp_path, capsys, "cache", *command)
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("pyproxy: cannot connect to PostgreSQL at postgresql://pyproxy:***@")
    assert "s3cr3t-pw" not in err


@pytest.mark.parametrize("command", [("prune", "--max-size", "0"), ("verify",)])
async def test_an_unreachable_bucket_is_one_line_and_exit_1(
    node: Node, config: Path, tmp_path: Path, s3: S3Server, pg_dsn: str,
    capsys: pytest.CaptureFixture[str], command: tuple[str, ...],
) -> None:
    await node.download("c-1.0-py3-none-any.whl", project="c")
    s3.stop()  # the next test's `bucket` starts it again
    code, out, err = run(config, tmp_path, capsys, "cache", *command)
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("pyproxy: bucket s3://") and "cannot" in line
    assert len(rows(pg_dsn, "SELECT key FROM cache_blobs")) == 1  # nothing forgotten
