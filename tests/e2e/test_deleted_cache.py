"""End to end: the upstream file cache deleted by hand while pyproxy runs (README: the cache
"may be deleted at any time"). A cached body that is gone is a miss, fetched anew, never a 500;
after `rm -rf cache/files` the cache works again (a cold file is fetched and cached), on one
worker and on two, and on a cluster node (its local copy comes back from the bucket)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.dists import underscored
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.e2e.test_cluster_files import start_node
from tests.e2e.test_pull_through import fetch, file_url, start_proxy
from tests.fake_upstream import FakeFile, FakeUpstream
from tests.waiting import wait_until

RUN = uuid.uuid4().hex[:6]
SIZE = 512 * 1024  # beyond what is held in memory (web/small_files.py): read from disk


def _files(server: PyproxyServer) -> Path:
    return server.data_dir / "cache" / "files"


def _bodies(server: PyproxyServer) -> list[Path]:
    return list((_files(server) / "blobs").rglob("*.val"))


def _served(server: PyproxyServer, project: str, dist: FakeFile, times: int) -> None:
    """`times` GETs (spread over the workers), each 200 with the whole, right body."""
    url = file_url(server, project, dist.filename)
    for _ in range(times):
        got = fetch(url)
        assert (got.status, got.complete, got.length, got.sha256) == (
            200, True, dist.size, dist.sha256
        ), (got, server.stderr_text()[-3000:])


def _cached(fake: FakeUpstream, server: PyproxyServer, project: str, dist: FakeFile) -> None:
    """Fetched once from upstream, committed, and looked up by every worker."""
    _served(server, project, dist, 1)
    wait_until(lambda: len(_bodies(server)) >= 1, 10, "the file to be committed")
    _served(server, project, dist, 6)
    assert fake.count(fake.file_path(project, dist.filename)) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_deleted_cached_bodies_are_fetched_anew(
    fake_factory, pyproxy_factory: ServerFactory, tmp_path: Path, workers: int
) -> None:
    fake = fake_factory("json")
    project = f"gone-{workers}-{RUN}"
    dist = fake.add_generated_file(project, f"{underscored(project)}-1.0.tar.gz", SIZE)
    server = start_proxy(pyproxy_factory, fake, tmp_path, extra_args=("--workers", str(workers)))
    _cached(fake, server, project, dist)

    for body in _bodies(server):  # as `find cache/files/blobs -name '*.val' -delete`
        body.unlink()
    _served(server, project, dist, 6)
    assert fake.count(fake.file_path(project, dist.filename)) == 2  # one fetch, then cached
    assert "unhandled error" not in server.stderr_text()
    wait_until(lambda: len(_bodies(server)) == 1, 10, "the file to be cached again")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_removed_files_directory_is_made_again(
    fake_factory, pyproxy_factory: ServerFactory, tmp_path: Path, workers: int
) -> None:
    fake = fake_factory("json")
    project = f"rmrf-{workers}-{RUN}"
    warm = fake.add_generated_file(project, f"{underscored(project)}-1.0.tar.gz", SIZE)
    cold = fake.add_generated_file(project, f"{underscored(project)}-2.0.tar.gz", SIZE)
    server = start_proxy(pyproxy_factory, fake, tmp_path, extra_args=("--workers", str(workers)))
    _cached(fake, server, project, warm)

    shutil.rmtree(_files(server))  # as `rm -rf DATA/cache/files`
    _served(server, project, cold, 6)
    _served(server, project, warm, 6)
    assert fake.count(fake.file_path(project, cold.filename)) == 1  # cached again
    assert fake.count(fake.file_path(project, warm.filename)) == 2
    assert "unhandled error" not in server.stderr_text()
    assert len(_bodies(server)) == 2


def test_a_cluster_node_copies_a_deleted_body_from_the_bucket_again(
    fake_factory, pyproxy_factory: ServerFactory, tmp_path: Path, pg_dsn, s3, bucket
) -> None:
    fake = fake_factory("json")
    project = f"clgone-{RUN}"
    dist = fake.add_generated_file(project, f"{underscored(project)}-1.0.tar.gz", SIZE)
    node = start_node(pyproxy_factory, fake, tmp_path, pg_dsn=pg_dsn, s3=s3, bucket=bucket,
                      extra_args=("--workers", "2"))
    _cached(fake, node, project, dist)
    wait_until(lambda: _shared(pg_dsn, dist.sha256), 10, "the node to share the file")

    for body in _bodies(node):
        body.unlink()
    _served(node, project, dist, 6)
    shutil.rmtree(_files(node))
    _served(node, project, dist, 6)
    assert fake.count(fake.file_path(project, dist.filename)) == 1  # from the bucket each time
    assert "unhandled error" not in node.stderr_text()


def _shared(dsn: str, sha256: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM cache_blobs WHERE key = %s", (sha256,)).fetchone() \
            is not None
