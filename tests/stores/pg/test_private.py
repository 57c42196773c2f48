"""pyproxy.stores.pg.private: what only the cluster's private store does (its parity with the
embedded store is tests/stores/test_private.py): the warm path asks PostgreSQL nothing, a
killed listening connection makes the node reload everything, and with the server down reads
are answered from memory while writes fail with one line, until it is back.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pyproxy.model import normalize
from pyproxy.stores.bucket_files import BucketFiles
from pyproxy.stores.local_copies import LocalCopies
from pyproxy.stores.objects import Bucket
from pyproxy.stores.pg.cluster import ClusterPrivateStore, open_cluster_stores
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.notify import wait_connected
from pyproxy.stores.private_files import PrivateFiles
from pyproxy.stores.private_schema import NewFile
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server
from tests.stores.backends import settle

FOO = normalize("foo")


def new_file(filename: str, body: bytes) -> NewFile:
    name, version = filename.split("-")[:2]
    return NewFile(
        filename=filename, project=normalize(name), display_name=name, version=version,
        filetype="bdist_wheel", size=len(body), sha256=hashlib.sha256(body).hexdigest(),
        blake2_256=hashlib.blake2b(body, digest_size=32).hexdigest(),
        md5=hashlib.md5(body).hexdigest(), core_metadata=None, requires_python=None,
        summary=None, fields={"name": (name,)}, uploader="alice",
    )


def upload(store: ClusterPrivateStore, filename: str) -> bool:
    body = filename.encode()
    with store.files.temporary_file() as tmp:
        tmp.write_bytes(body)
        return store.add_file(new_file(filename, body), tmp)


@pytest.fixture
def nodes(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[ClusterPrivateStore, ClusterPrivateStore]]:
    opened = [open_cluster_stores(pg_dsn, PrivateFiles(tmp_path / "private"), listen=True)
              for _ in range(2)]
    for _, users in opened:
        users.close()
    yield opened[0][0], opened[1][0]
    for private, _ in opened:
        private.close()


def test_warm_reads_ask_the_database_nothing(
    nodes: tuple[ClusterPrivateStore, ClusterPrivateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    upload(a, "foo-1.0-py3-none-any.whl")
    settle(a, b)
    for store in (a, b):  # warm
        store.has_project(FOO), store.project_page(FOO), store.list_projects()
        store.restricted_readers(), store.file_fields("foo-1.0-py3-none-any.whl")
    taken: list[int] = []
    for store in (a, b):  # every query takes a connection from the pool: count them
        real = store.db.pool.getconn

        def counted(*args: object, real: object = real, **kwargs: object) -> object:
            taken.append(1)
            return real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(store.db.pool, "getconn", counted)
    for _ in range(50):
        for store in (a, b):
            assert store.has_project(FOO) and not store.has_project(normalize("requests"))
            assert [f.filename for f in store.project_page(FOO).files] == ["foo-1.0-py3-none-any.whl"]
            assert store.list_projects().names == ("foo",)
            assert store.project_serial(FOO) == 1 and store.project_serial(normalize("requests")) is None
            assert store.file_fields("foo-1.0-py3-none-any.whl") == {"name": ["foo"]}
            assert store.open_file(FOO, "foo-1.0-py3-none-any.whl").size == len(b"foo-1.0-py3-none-any.whl")
    assert taken == []
    upload(a, "foo-2.0-py3-none-any.whl")  # a change: B reloads once it has heard of it
    settle(b)
    assert len(b.project_page(FOO).files) == 2
    assert taken


def test_a_killed_listener_connection_reloads_everything(
    nodes: tuple[ClusterPrivateStore, ClusterPrivateStore], pg_dsn: str
) -> None:
    a, b = nodes
    upload(a, "foo-1.0-py3-none-any.whl")
    settle(b)
    assert len(b.project_page(FOO).files) == 1
    listener = b._listener
    assert listener is not None
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        # the change B misses: written without a notification, as if sent during the gap
        conn.execute("UPDATE private_files SET yanked = true, yanked_reason = 'gap'")
        conn.execute("UPDATE private_projects SET serial = serial + 1")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query ILIKE 'LISTEN%%' AND pid != pg_backend_pid()"
        )
    deadline = time.monotonic() + 5
    while listener.reconnects == 0 or not listener.connected:
        assert time.monotonic() < deadline, "the listener did not come back"
        time.sleep(0.01)
    (dist,) = b.project_page(FOO).files
    assert dist.yanked and dist.yanked_reason == "gap"  # dropped and reloaded


def test_a_node_that_read_nothing_yet_knows_the_private_names_while_the_database_is_down(
    pg_dsn: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    writer, writer_users = open_cluster_stores(pg_dsn, PrivateFiles(tmp_path / "a"), listen=False)
    writer_users.close()
    upload(writer, "foo-1.0-py3-none-any.whl")
    writer.restrict(FOO)
    writer.close()
    node, users = open_cluster_stores(pg_dsn, PrivateFiles(tmp_path / "b"), listen=True)
    users.close()
    try:
        postgres.stop()
        try:
            # whether a name is private: asked of every request, upstream names included
            assert node.has_project(FOO) and not node.has_project(normalize("bar"))
            assert node.list_projects().names == ("foo",)
            assert set(node.restricted_readers()) == {FOO}
        finally:
            postgres.start()
    finally:
        node.close()


def test_database_down_reads_from_memory_writes_fail_then_recover(
    nodes: tuple[ClusterPrivateStore, ClusterPrivateStore], postgres: PostgresServer
) -> None:
    a, b = nodes
    upload(a, "foo-1.0-py3-none-any.whl")
    settle(a, b)
    for store in (a, b):
        assert store.has_project(FOO) and len(store.project_page(FOO).files) == 1
    postgres.stop()
    try:
        for store in (a, b):
            listener = store._listener
            assert listener is not None
            deadline = time.monotonic() + 5
            while listener.connected:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            started = time.monotonic()
            assert store.has_project(FOO)
            assert [f.filename for f in store.project_page(FOO).files] == ["foo-1.0-py3-none-any.whl"]
            assert store.list_projects().names == ("foo",)
            # from memory: no wait for a server, nor a retry (a loaded machine may be slow)
            assert time.monotonic() - started < 1.0
            with pytest.raises(DatabaseUnavailable) as failure:
                upload(store, "foo-2.0-py3-none-any.whl")
            message = str(failure.value)
            assert message.startswith("the database is unavailable: ") and "\n" not in message
            with pytest.raises(DatabaseUnavailable):
                store.yank(FOO, "1.0", "x")
    finally:
        postgres.start()
    for store in (a, b):
        assert store._listener is not None and wait_connected(store._listener, 10)
    assert upload(b, "foo-2.0-py3-none-any.whl")
    settle(a)
    assert [f.filename for f in a.project_page(FOO).files] == [
        "foo-1.0-py3-none-any.whl", "foo-2.0-py3-none-any.whl"]


def test_a_remove_with_the_bucket_down_is_done_and_its_bodies_wait(
    pg_dsn: str, tmp_path: Path, s3: S3Server, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    files = BucketFiles(Bucket(f"s3://{bucket}/pyproxy", endpoint=s3.endpoint),
                        tmp_path / "tmp", LocalCopies(tmp_path / "copies", 2**20))
    store, users = open_cluster_stores(pg_dsn, files, listen=False)
    users.close()
    try:
        upload(store, "foo-1.0-py3-none-any.whl")
        s3.stop()
        try:
            with caplog.at_level(logging.WARNING, "pyproxy.private"):
                assert store.remove(FOO, "1.0", forget_name=False) == 1  # not an error
        finally:
            s3.start()
        assert "bodies stay until the next collection" in caplog.text
        assert store.project_page(FOO).files == ()  # (moto forgets its objects as it stops)
    finally:
        store.close()
