"""A bucket object read like a file (pyproxy/stores/object_file.py), against moto's S3 server:
the same bytes as the object at every offset, one GET for a read from start to end, and the
checks of stores.proof working on it as on a local file."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.stores import proof
from pyproxy.stores.object_file import open_object
from pyproxy.stores.objects import Bucket
from tests.dists import make_wheel
from tests.servers.s3 import S3Server


class CountingBucket(Bucket):
    """The real bucket, counting the GETs the reader starts."""

    gets = 0

    def chunks(self, key: str, *, start: int = 0) -> Iterator[bytes]:
        self.gets += 1
        return super().chunks(key, start=start)


@pytest.fixture
def store(s3: S3Server, bucket: str) -> CountingBucket:
    return CountingBucket(f"s3://{bucket}/pfx", endpoint=s3.endpoint)


def _put(store: Bucket, tmp_path: Path, key: str, body: bytes) -> None:
    (tmp_path / "body").write_bytes(body)
    assert store.put_file(key, tmp_path / "body")


def test_a_whole_read_is_one_get_and_seeks_read_the_right_bytes(
    store: CountingBucket, tmp_path: Path
) -> None:
    body = os.urandom(3 * 1024 * 1024 + 5)
    _put(store, tmp_path, "cache/k", body)
    with open_object(store, "cache/k", len(body)) as file:
        read = b"".join(iter(lambda: file.read(256 * 1024), b""))
    assert read == body and store.gets == 1

    store.gets = 0
    with open_object(store, "cache/k", len(body)) as file:
        file.seek(-10, io.SEEK_END)
        assert file.read() == body[-10:]
        file.seek(1000)
        assert file.read(7) == body[1000:1007]
        assert file.tell() == 1007
        assert file.read(3) == body[1007:1010]  # read on: the same GET
        file.seek(len(body))
        assert file.read(5) == b""  # at the end: no request past it
    assert store.gets == 2


def test_proof_checks_work_on_an_object(store: Bucket, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dists", "pkg", "1.0")
    _put(store, tmp_path, "cache/wheel", wheel.read_bytes())
    with open_object(store, "cache/wheel", wheel.stat().st_size) as file:
        proof.check_file(wheel.name, file, wheel.stat().st_size)
    _put(store, tmp_path, "cache/page", b"<html>an error page</html>")
    with open_object(store, "cache/page", 26) as file, pytest.raises(proof.Unproven):
        proof.check_file(wheel.name, file, 26)


def test_a_missing_object_is_file_not_found(store: Bucket) -> None:
    with open_object(store, "cache/none", 10) as file, pytest.raises(FileNotFoundError):
        file.read(1)
