"""The cluster's bucket (pyproxy/stores/objects.py) against moto's real S3 server: conditional
creates, streams and ranges, listings, and one clear error when the bucket is not there."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from pyproxy.stores.objects import STAGING, Bucket, BucketUnavailable, ObjectMissing, parse_bucket_url
from tests.servers.s3 import S3Server


@pytest.fixture
def store(s3: S3Server, bucket: str) -> Bucket:
    return Bucket(f"s3://{bucket}/pfx", endpoint=s3.endpoint)


def test_parse_bucket_url() -> None:
    assert parse_bucket_url("s3://b-1") == ("b-1", "")
    assert parse_bucket_url("s3://b-1/a/b/") == ("b-1", "a/b")
    with pytest.raises(ValueError, match="s3://bucket"):
        parse_bucket_url("http://b-1/")


async def test_a_key_is_created_once_and_read_back(store: Bucket, tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(body)
    second.write_bytes(b"other bytes")
    results = await asyncio.gather(
        *(asyncio.to_thread(store.put_file, "blobs/k", p) for p in [first] + [second] * 4)
    )
    assert results.count(True) == 1  # one writer; the rest learn it exists
    winner = body if results[0] else b"other bytes"
    assert store.size("blobs/k") == len(winner)
    assert b"".join([chunk async for chunk in store.stream("blobs/k")]) == winner
    assert b"".join([chunk async for chunk in store.stream("blobs/k", start=5)]) == winner[5:]
    assert await store.read_range("blobs/k", 2, 3) == winner[2:5]
    assert b"".join(store.chunks("blobs/k")) == winner  # blocking, as it comes
    assert b"".join(store.chunks("blobs/k", start=5)) == winner[5:]
    target = tmp_path / "copy"
    assert store.download("blobs/k", target) == len(winner)
    assert target.read_bytes() == winner
    assert store.put_file("blobs/k", first) is False
    assert dict(store.keys("blobs/")) == {"blobs/k": len(winner)}


def test_a_large_file_is_created_once_through_a_staging_key(store: Bucket, tmp_path: Path) -> None:
    # bigger than one conditional PUT, which obstore would hold whole in memory
    body = os.urandom(12 * 1024 * 1024 + 3)
    first, other = tmp_path / "first", tmp_path / "other"
    first.write_bytes(body)
    other.write_bytes(os.urandom(len(body)))
    assert store.put_file("private/k", first) is True
    assert store.put_file("private/k", other) is False  # never replaced
    assert b"".join(store.chunks("private/k")) == body
    assert dict(store.keys("")) == {"private/k": len(body)}  # no staging key left


async def _stream(body: bytes, *, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1024 * 1024):
        if fail_after is not None and start >= fail_after:
            raise ValueError("the body turned out wrong")
        yield body[start:start + 1024 * 1024]


async def test_a_large_stream_is_created_once_through_a_staging_key(store: Bucket) -> None:
    body, other = os.urandom(12 * 1024 * 1024 + 5), os.urandom(12 * 1024 * 1024)
    assert await store.put_stream_async("cache/k", _stream(body)) is True
    assert await store.put_stream_async("cache/k", _stream(other)) is False  # never replaced
    assert b"".join([chunk async for chunk in store.stream("cache/k")]) == body
    # writers at once, with the same bytes as a content-addressed key's: one object (moto does
    # not arbitrate two multipart completions at once as S3 does, so the bytes are the same)
    shared = os.urandom(11 * 1024 * 1024)
    await asyncio.gather(*(store.put_stream_async("cache/s", _stream(shared)) for _ in range(3)))
    assert b"".join([chunk async for chunk in store.stream("cache/s")]) == shared
    assert await store.put_stream_async("cache/small", _stream(b"tiny")) is True  # one PUT
    assert await store.put_stream_async("cache/small", _stream(b"other")) is False
    assert {key.rsplit("/", 1)[-1] for key, _ in store.keys("")} == {"k", "s", "small"}  # no staging key left


async def test_a_stream_that_fails_writes_nothing(store: Bucket) -> None:
    body = os.urandom(12 * 1024 * 1024)
    for fail_after in (2 * 1024 * 1024, 11 * 1024 * 1024):  # before and during the multipart upload
        with pytest.raises(ValueError, match="turned out wrong"):
            await store.put_stream_async("cache/bad", _stream(body, fail_after=fail_after))
    assert store.size("cache/bad") is None
    assert list(store.keys("")) == []  # nor a staging object


async def test_missing_keys(store: Bucket, tmp_path: Path) -> None:
    assert store.size("blobs/none") is None
    with pytest.raises(ObjectMissing):
        store.download("blobs/none", tmp_path / "x")
    with pytest.raises(ObjectMissing):
        next(store.chunks("blobs/none"))
    with pytest.raises(ObjectMissing):
        [chunk async for chunk in store.stream("blobs/none")]
    store.delete("blobs/none")  # deleting nothing is fine


def test_the_prefix_keeps_stores_apart(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    Bucket(f"s3://{bucket}/one", endpoint=s3.endpoint).put_file("blobs/k", tmp_path / "f")
    assert Bucket(f"s3://{bucket}/two", endpoint=s3.endpoint).size("blobs/k") is None
    assert Bucket(f"s3://{bucket}/one", endpoint=s3.endpoint).size("blobs/k") == 1


def test_an_unreachable_bucket_is_one_line(s3: S3Server, bucket: str) -> None:
    Bucket(f"s3://{bucket}", endpoint=s3.endpoint).check()
    with pytest.raises(BucketUnavailable) as caught:
        Bucket("s3://no-such-bucket-here", endpoint=s3.endpoint).check()
    assert "\n" not in str(caught.value) and "no-such-bucket-here" in str(caught.value)
    with pytest.raises(BucketUnavailable) as refused:
        Bucket(f"s3://{bucket}", endpoint="http://127.0.0.1:1").check()
    assert "testing" not in str(refused.value)  # no credential in the message


def test_a_missing_bucket_says_so_with_s3s_code(s3: S3Server, bucket: str) -> None:
    endpoint = s3.endpoint.replace("http://", "http://joe:s3cret@")
    with pytest.raises(BucketUnavailable) as caught:
        Bucket("s3://no-such-bucket-here", endpoint=endpoint).check()
    message = str(caught.value)
    assert message.endswith("404 Not Found: NoSuchBucket") and "<?xml" not in message
    assert "s3cret" not in message and "joe" not in message


def test_no_credentials_is_said_as_such(s3: S3Server, bucket: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(BucketUnavailable, match="no credentials: AWS_ACCESS_KEY_ID and "
                                                "AWS_SECRET_ACCESS_KEY are not set"):
        Bucket(f"s3://{bucket}", endpoint=s3.endpoint).check()


def test_no_region_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BucketUnavailable, match="no AWS region is set: set AWS_REGION"):
        Bucket("s3://some-bucket")


async def test_staging_objects_a_dead_node_left_are_swept_once_old(store: Bucket) -> None:
    assert await store.put_stream_async(STAGING + "left-behind", _stream(b"x" * 10)) is True
    assert await store.put_stream_async("cache/kept", _stream(b"y" * 10)) is True
    assert store.sweep_staging(timedelta(hours=1)) == 0  # young: may be on its way
    assert store.sweep_staging(timedelta(0)) == 1
    assert {key.rsplit("/", 1)[-1] for key, _ in store.keys("")} == {"kept"}
