"""Small files held in memory: bounded, only whole verified files, never one evicted or replaced."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyproxy.model import LocalFile
from pyproxy.web.local_files import SMALL_FILES
from pyproxy.web.small_files import Held, SmallFiles, verify
from tests.fake_upstream import FakeUpstream


def _file(path: Path, body: bytes) -> LocalFile:
    return LocalFile(path=path, size=len(body), sha256=hashlib.sha256(body).hexdigest(), cache="hit")


def _held(body: bytes) -> Held:
    return Held(body, 0.0, {})


def test_keeps_a_whole_verified_file(tmp_path: Path) -> None:
    body = b"Metadata-Version: 2.1\n" * 10
    file = _file(tmp_path / "a", body)
    small = SmallFiles()
    small.keep(file, _held(body), verified=verify(file, body))
    held = small.get(file)
    assert held is not None and held.body == body


def test_never_keeps_a_partial_or_different_file(tmp_path: Path) -> None:
    body = b"x" * 1000
    file = _file(tmp_path / "a", body)
    small = SmallFiles()
    partial = body[:500]
    assert not verify(file, partial)
    small.keep(file, _held(partial), verified=verify(file, partial))
    other = b"y" * 1000  # the same size, other bytes
    assert not verify(file, other)
    small.keep(file, _held(other), verified=verify(file, other))
    small.keep(file, _held(partial), verified=True)  # a short body, whoever says it is good
    assert small.get(file) is None and len(small) == 0


def test_a_replaced_file_is_not_served_from_memory(tmp_path: Path) -> None:
    old, new = b"old" * 100, b"new" * 100
    path = tmp_path / "a"
    small = SmallFiles()
    small.keep(_file(path, old), _held(old), verified=True)
    assert small.get(_file(path, new)) is None  # same path, other content: not the held one
    assert small.get(_file(tmp_path / "b", old)) is None  # same content elsewhere: not asked for


def test_bounded_in_bytes_least_recently_used_out_first(tmp_path: Path) -> None:
    small = SmallFiles(max_bytes=64 * 1024, max_file_bytes=8 * 1024)
    files = []
    for n in range(40):
        body = bytes([n]) * 4000
        file = _file(tmp_path / str(n), body)
        files.append(file)
        small.keep(file, _held(body), verified=True)
        assert small.weight <= 64 * 1024
    assert small.get(files[0]) is None
    assert small.get(files[-1]) is not None
    assert 0 < len(small) < 40


def test_a_file_over_the_limit_is_not_kept(tmp_path: Path) -> None:
    small = SmallFiles(max_file_bytes=1024)
    body = b"z" * 1025
    file = _file(tmp_path / "big", body)
    assert not small.wanted(file)
    small.keep(file, _held(body), verified=True)
    assert small.get(file) is None


async def test_served_from_memory_until_evicted_from_the_cache(make_client) -> None:
    body = hashlib.sha256(b"small").digest() * 100
    filename = "tiny-1.0-py3-none-any.whl"
    path = f"/files/tiny/{filename}"
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("tiny", filename, body)
        client, services = await make_client(upstream_url=fake.index_url)
        held = client.server.app[SMALL_FILES]
        assert await (await client.get(path)).read() == body  # a miss, streamed
        assert len(held) == 0
        first_hit = await client.get(path)  # read from disk, kept
        assert first_hit.headers["X-Pyproxy-Cache"] == "hit" and await first_hit.read() == body
        assert len(held) == 1
        again = await client.get(path)  # from memory: the same answer
        assert again.headers["X-Pyproxy-Cache"] == "hit" and await again.read() == body
        assert again.headers["Last-Modified"] == first_hit.headers["Last-Modified"]
        part = await client.get(path, headers={"Range": "bytes=10-19"})
        assert part.status == 206 and await part.read() == body[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(body)}"
        etag = again.headers["ETag"]
        assert (await client.get(path, headers={"If-None-Match": etag})).status == 304
        head = await client.head(path)
        assert int(head.headers["Content-Length"]) == len(body) and await head.read() == b""
        assert fake.count(fake.file_path("tiny", filename)) == 1

        blobs = services.health.blobs
        assert blobs is not None
        blobs.shrink_to(0)  # evicted: the next request must not come from memory
        after = await client.get(path)
        assert after.headers["X-Pyproxy-Cache"] == "miss"
        assert await after.read() == body
        assert fake.count(fake.file_path("tiny", filename)) == 2
