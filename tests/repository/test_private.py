"""pyproxy.repository.private.PrivateRepository: the private store as a Repository."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.model import LocalFile, NotFound, Unavailable, normalize
from pyproxy.repository.private import PrivateRepository
from pyproxy.stores.bucket_files import BucketFiles
from pyproxy.stores.local_copies import LocalCopies
from pyproxy.stores.objects import Bucket
from pyproxy.stores.private import PrivateStore
from tests.servers.s3 import S3Server
from tests.stores.test_private import METADATA, upload


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrivateStore]:
    opened = PrivateStore(tmp_path / "private")
    yield opened
    opened.close()


async def test_private_repository_wraps_the_store(store: PrivateStore) -> None:
    upload(store, body=b"b", core_metadata=METADATA)
    repository = PrivateRepository(store)
    assert (await repository.list_projects()).names == ("foo",)
    page = await repository.project_page(normalize("foo"))
    assert page.files[0].filename == "foo-1.0-py3-none-any.whl"
    opened = await repository.open_file(normalize("foo"), page.files[0].filename)
    assert opened.path.read_bytes() == b"b"
    meta = await repository.open_metadata(normalize("foo"), page.files[0].filename)
    assert meta.path.read_bytes() == METADATA
    with pytest.raises(NotFound):
        await repository.project_page(normalize("nope"))


# ---- a cluster node's bodies in the bucket (stores/bucket_files.BucketFiles) ----


def node_store(directory: Path, node: Path, bucket_url: str, endpoint: str) -> PrivateStore:
    """A private store whose bodies are in the bucket: the records in `directory` (shared, as
    PostgreSQL would be), the local copies and upload temp files in `node`'s own data dir."""
    files = BucketFiles(Bucket(bucket_url, endpoint=endpoint), node / "private" / "tmp",
                        LocalCopies(node / "cache" / "copies", 10 * 1024 * 1024))
    return PrivateStore(directory, files=files)


async def test_another_node_serves_a_private_file_from_the_bucket(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/pyproxy"
    a = node_store(tmp_path / "records", tmp_path / "a", url, s3.endpoint)
    b = node_store(tmp_path / "records", tmp_path / "b", url, s3.endpoint)
    try:
        upload(a, body=b"wheel bytes", core_metadata=METADATA, provenance=b'{"p": 1}')
        name, filename = normalize("foo"), "foo-1.0-py3-none-any.whl"
        assert not (tmp_path / "records" / "blobs").exists() or not any(
            (tmp_path / "records" / "blobs").rglob("*")
        )  # no body beside the records: they are in the bucket
        repository = PrivateRepository(b)
        cold = await repository.open_file(name, filename)
        assert isinstance(cold, LocalFile) and cold.path.read_bytes() == b"wheel bytes"
        assert cold.path.is_relative_to(tmp_path / "b") and cold.cache == "private"
        meta = await repository.open_metadata(name, filename)
        assert isinstance(meta, LocalFile) and meta.path.read_bytes() == METADATA
        assert meta.size == len(METADATA)
        prov = await repository.open_provenance(name, filename)
        assert isinstance(prov, LocalFile) and prov.path.read_bytes() == b'{"p": 1}'
        assert b.open_file(name, filename).path == cold.path  # warm: no NotLocal any more

        upload(a, "foo-2.0-py3-none-any.whl", b"second")
        s3.stop()
        try:
            # a copied file keeps being served; one not copied here is a 503, not a 404
            assert (await repository.open_file(name, filename)).path.read_bytes() == b"wheel bytes"
            with pytest.raises(Unavailable, match="not copied to this node"):
                await repository.open_file(name, "foo-2.0-py3-none-any.whl")
            with pytest.raises(Unavailable, match="the upload was not stored"):
                upload(b, "foo-3.0-py3-none-any.whl", b"third")
            assert [f.filename for f in b.project_page(name).files] == [
                filename, "foo-2.0-py3-none-any.whl"
            ]  # nothing recorded for the refused upload
        finally:
            s3.start()
    finally:
        a.close()
        b.close()


def test_removing_files_deletes_their_bodies_from_the_bucket(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = node_store(tmp_path / "records", tmp_path / "a", f"s3://{bucket}/p", s3.endpoint)
    try:
        upload(store, body=b"one")
        upload(store, "foo-2.0-py3-none-any.whl", b"two")
        bucket_files = store.files
        assert isinstance(bucket_files, BucketFiles)
        assert len(list(bucket_files.bucket.keys("private/"))) == 2
        store.remove(normalize("foo"), "1.0", forget_name=False)
        keys = [key for key, _size in bucket_files.bucket.keys("private/")]
        assert keys == [bucket_files.key(hashlib.sha256(b"two").hexdigest())]
    finally:
        store.close()
