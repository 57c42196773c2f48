"""pyproxy.stores.bucket_files.BucketFiles against moto's real S3 server: uploads durable in the
bucket as conditional creates, reads through a bounded local copy, and the bucket going down.
Two BucketFiles on one bucket with local copies of their own are two nodes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pyproxy.model import LocalFile, StreamedFile, Unavailable
from pyproxy.stores import private_files
from pyproxy.stores.bucket_files import BucketFiles
from pyproxy.stores.local_copies import Copy, LocalCopies
from pyproxy.stores.objects import Bucket
from pyproxy.stores.private_files import NotLocal
from tests.servers.s3 import S3Server

Node = Callable[..., BucketFiles]


class CountedCopies(LocalCopies):
    """LocalCopies that count the copies they make (each is one download from the bucket)."""

    fills = 0

    def fill(self, name: str, **kwargs: object) -> Copy:
        self.fills += 1
        return super().fill(name, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def node(s3: S3Server, bucket: str, tmp_path: Path) -> Node:
    made = 0

    def make(max_size: int = 10 * 1024 * 1024) -> BucketFiles:
        nonlocal made
        made += 1
        here = tmp_path / f"node{made}"
        copies = CountedCopies(here / "cache" / "copies", max_size)
        return BucketFiles(Bucket(f"s3://{bucket}/pyproxy", endpoint=s3.endpoint),
                           here / "private" / "tmp", copies)

    return make


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def store(files: BucketFiles, body: bytes) -> str:
    with files.temporary_file() as tmp:
        tmp.write_bytes(body)
        files.move_into_place(tmp, sha(body))
    return sha(body)


def read(source: LocalFile | StreamedFile) -> bytes:
    assert isinstance(source, LocalFile)
    return source.path.read_bytes()


async def test_an_upload_is_in_the_bucket_and_copied_here(node: Node) -> None:
    files = node()
    body = os.urandom(100_000)
    digest = store(files, body)
    key = f"private/{digest[:2]}/{digest[2:4]}/{digest}"
    assert dict(files.bucket.keys("private/")) == {key: len(body)}
    here = files.local(digest, len(body))  # this node's copy: no bucket request
    assert here.path.read_bytes() == body and here.size == len(body) and here.cache == "private"
    assert list(files.staging.iterdir()) == []


async def test_another_node_reads_through_its_local_copy(node: Node) -> None:
    body = os.urandom(300_000)
    digest = store(node(), body)
    other = node()
    with pytest.raises(NotLocal) as missing:
        other.local(digest, len(body))
    assert (missing.value.sha256, missing.value.size) == (digest, len(body))
    results = await asyncio.gather(*(other.fetch(digest, len(body)) for _ in range(10)))
    assert {read(r) for r in results} == {body}
    assert isinstance(other.copies, CountedCopies) and other.copies.fills == 1  # one download
    assert other.local(digest, None).path.read_bytes() == body  # warm now: a stat


def test_the_first_body_under_a_key_stays(node: Node, tmp_path: Path) -> None:
    files = node()
    digest = store(files, b"the real bytes")
    impostor = tmp_path / "impostor"
    impostor.write_bytes(b"other bytes")
    files.move_into_place(impostor, digest)  # a conditional create: the key exists, fine
    target = tmp_path / "check"
    files.bucket.download(files.key(digest), target)
    assert target.read_bytes() == b"the real bytes"


def test_twenty_identical_uploads_at_once_make_one_object(node: Node) -> None:
    nodes = [node() for _ in range(4)]
    body = os.urandom(200_000)
    with ThreadPoolExecutor(20) as pool:
        digests = list(pool.map(lambda n: store(nodes[n % 4], body), range(20)))
    assert set(digests) == {sha(body)}
    assert list(nodes[0].bucket.keys("private/")) == [(nodes[0].key(sha(body)), len(body))]
    for files in nodes:  # every node that took an upload has it locally
        assert files.local(sha(body), len(body)).path.read_bytes() == body


async def test_a_local_copy_deleted_while_serving(node: Node) -> None:
    digest = store(node(), b"x" * 50_000)
    other = node()
    first = await other.fetch(digest, 50_000)
    assert isinstance(first, LocalFile)
    with first.path.open("rb") as serving:
        shutil.rmtree(other.copies.directory)  # an operator frees the disk
        assert serving.read() == b"x" * 50_000
    with pytest.raises(NotLocal):
        other.local(digest, 50_000)
    assert read(await other.fetch(digest, 50_000)) == b"x" * 50_000


async def test_the_local_bound_holds(node: Node) -> None:
    writer, reader = node(), node(max_size=1000)
    bodies = [bytes([n]) * 400 for n in range(4)]
    digests = [store(writer, body) for body in bodies]
    for digest, body in zip(digests, bodies, strict=True):
        assert read(await reader.fetch(digest, len(body))) == body
        assert reader.copies.volume() <= 1000
    assert reader.copies.find(digests[-1]) is not None


async def test_a_body_bigger_than_the_bound_is_streamed_verified(node: Node) -> None:
    body = os.urandom(3 * 1024 * 1024 + 5)
    digest = store(node(), body)
    small = node(max_size=1024 * 1024)
    streamed = await small.fetch(digest, len(body))
    assert isinstance(streamed, StreamedFile) and streamed.size == len(body)
    assert b"".join([chunk async for chunk in streamed.chunks]) == body
    assert small.copies.find(digest) is None


async def test_a_damaged_or_missing_object_is_a_clear_503(node: Node, tmp_path: Path) -> None:
    files = node()
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"not the body")
    digest = sha(b"the body")
    files.bucket.put_file(files.key(digest), wrong)
    with pytest.raises(Unavailable, match="damaged"):
        await files.fetch(digest, None)
    assert files.copies.find(digest) is None
    with pytest.raises(Unavailable, match="missing from the bucket"):
        await files.fetch(sha(b"never stored"), 12)


def test_remove_unreferenced(node: Node) -> None:
    files = node()
    kept, dropped = store(files, b"kept"), store(files, b"dropped")
    assert files.remove_unreferenced({kept}) == 1
    assert [key for key, _ in files.bucket.keys("private/")] == [files.key(kept)]
    assert files.copies.find(dropped) is None and files.copies.find(kept) is not None
    assert files.remove_unreferenced({kept}) == 0


async def test_bucket_down_and_back(node: Node, s3: S3Server, bucket: str) -> None:
    body = os.urandom(10_000)
    writer, reader = node(), node()
    digest = store(writer, body)
    s3.stop()
    try:
        # copied here: served as before; not copied: 503, never a 404
        assert writer.local(digest, len(body)).path.read_bytes() == body
        with pytest.raises(Unavailable, match=f"not copied to this node, and bucket s3://{bucket}"):
            await reader.fetch(digest, len(body))
        with pytest.raises(Unavailable, match="the upload was not stored: bucket"):
            store(reader, b"new upload")
        assert list(reader.staging.iterdir()) == []
        big = node(max_size=10)
        with pytest.raises(Unavailable, match="not copied to this node"):
            await big.fetch(digest, len(body))  # streamed: refused before any header
    finally:
        s3.start()
    # moto restarted empty: make the bucket again; the same objects recover, no new BucketFiles
    urllib.request.urlopen(urllib.request.Request(f"{s3.endpoint}/{bucket}", method="PUT")).close()
    digest = store(reader, body)
    assert read(await node().fetch(digest, len(body))) == body


async def test_a_local_copy_damaged_on_disk_is_fetched_again(node: Node) -> None:
    files = node()
    digest = store(files, b"y" * 1000)
    files.copies.path(digest).write_bytes(b"truncated")  # damaged after it was verified
    with pytest.raises(NotLocal):
        files.local(digest, 1000)
    assert read(await files.fetch(digest, 1000)) == b"y" * 1000


# -- repairs: a damaged or lost object put back, never from unverified bytes ----------------------


def damage(files: BucketFiles, body: bytes) -> None:
    """The object's bytes replaced by as many others, past the conditional create (a bad
    restore)."""
    files.bucket.delete(files.key(sha(body)))
    temp = files.staging / "damaged"
    temp.write_bytes(bytes(255 - byte for byte in body))
    files.bucket.put_file(files.key(sha(body)), temp)
    temp.unlink()


def md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("length", [100_000, 11 * 1024 * 1024])  # one PUT; a one-part copy
def test_a_fine_object_is_vouched_for_by_a_head(
    node: Node, monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    files = node(max_size=1)
    body = os.urandom(length)
    digest = store(files, body)

    def no_read(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the object was read: a HEAD should have done")

    monkeypatch.setattr(files.bucket, "chunks", no_read)
    assert files.problem(digest, length, md5=md5(body)) is None


def test_problem_names_a_damaged_or_missing_object(node: Node) -> None:
    files = node()
    body = os.urandom(5000)
    digest = store(files, body)
    assert files.problem(digest, len(body)) is None  # read and hashed: no md5 given
    damage(files, body)
    for given in (md5(body), None):  # its ETag says otherwise, then the read confirms it
        assert "the bucket's object has sha256" in str(files.problem(digest, 5000, md5=given))
    assert "is 5000 bytes, 4999 recorded" in str(files.problem(digest, 4999))
    files.bucket.delete(files.key(digest))
    assert files.problem(digest, 5000) == "its body is missing from the bucket"


def test_restore_writes_only_the_verified_body_back(node: Node, tmp_path: Path) -> None:
    files = node()
    body = os.urandom(5000)
    digest = store(files, body)
    damage(files, body)
    other = tmp_path / "other"
    other.write_bytes(os.urandom(5000))
    with pytest.raises(private_files.Unrestorable):
        files.restore(digest, other)
    assert files.problem(digest, 5000) is not None  # untouched by the wrong bytes
    good = tmp_path / "good"
    good.write_bytes(body)
    assert files.restore(digest, good) is True
    assert files.problem(digest, 5000) is None
    assert files.restore(digest, good) is False  # fine already: nothing written
    files.bucket.delete(files.key(digest))
    assert files.restore(digest, good) is True  # lost: a conditional create
    assert files.problem(digest, 5000) is None


def test_the_same_bytes_uploaded_again_replace_a_damaged_object(node: Node) -> None:
    files = node()
    body = b"Metadata-Version: 2.1\nName: shared\n"  # two wheels of a release may share it
    digest = store(files, body)
    damage(files, body)
    assert store(node(), body) == digest  # another file's upload, on another node
    assert files.problem(digest, len(body)) is None


def test_heal_puts_back_only_a_good_local_copy(node: Node) -> None:
    holder, damaged_holder = node(), node()
    body = os.urandom(5000)
    digest = store(holder, body)
    store(damaged_holder, body)
    damage(holder, body)
    damaged_holder.copies.path(digest).write_bytes(b"x" * 5000)  # damaged on that disk
    assert damaged_holder.heal(digest, 5000) is False
    assert damaged_holder.copies.find(digest) is None  # dropped, not put back
    assert holder.problem(digest, 5000) is not None
    assert holder.heal(digest, 5000) is True
    assert holder.problem(digest, 5000) is None
    assert node().heal(digest, 5000) is False  # no copy here


async def test_serving_a_local_copy_puts_the_bucket_object_back(node: Node) -> None:
    holder = node()
    body = os.urandom(5000)
    digest = store(holder, body)
    damage(holder, body)
    assert holder.local(digest, 5000).path.read_bytes() == body  # and checked in the background
    for _ in range(200):
        if await asyncio.to_thread(holder.problem, digest, 5000) is None:
            break
        await asyncio.sleep(0.05)
    assert read(await node().fetch(digest, 5000)) == body  # another node reads it again
    damage(holder, body)
    holder.local(digest, 5000)  # checked once per audit_interval only
    await asyncio.sleep(0.5)
    assert holder.problem(digest, 5000) is not None
