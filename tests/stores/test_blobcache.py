from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.model import DistFile, FileSource, LocalFile, Origin, StreamedFile, Unavailable
from pyproxy.stores.blobcache import BlobCache, HashMismatch
from pyproxy.stores.blobkeys import (
    blob_key,
    is_metadata_key,
    is_provenance_key,
    made_metadata_key,
    metadata_key,
    names_its_body,
    provenance_key,
)
from pyproxy.stores.flight import Tail
from pyproxy.stores.part_files import PartFiles
from pyproxy.web.context import Services
from tests.blob_server import Blob, BlobServer, opener
from tests.conftest import MakeClient, StartFake
from tests.dists import core_metadata, make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.small_disk import fill, mounted

REPO = Path(__file__).resolve().parents[2]
KiB = 1024
MiB = 1024 * KiB


def block(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ per seed, without needing a random generator."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Upstream:
    def __init__(self, blobs: BlobServer, base: str, session: aiohttp.ClientSession) -> None:
        self.blobs = blobs
        self.base = base
        self.session = session

    def add(self, name: str, blob: Blob) -> Blob:
        return self.blobs.add(name, blob)

    def url(self, name: str) -> str:
        return f"{self.base}/blob/{name}"

    def requests(self, name: str) -> int:
        return self.blobs.requests[name]

    async def fetch(
        self, cache: BlobCache, name: str, *, key: str | None = None, **announced: object
    ) -> FileSource:
        blob = self.blobs.blobs[name]
        kwargs = {"sha256": blob.sha256, "size": blob.size} | announced
        return await cache.fetch(
            key or name, open_upstream=opener(self.session, self.url(name)), **kwargs
        )  # type: ignore[arg-type]


@pytest.fixture
async def upstream(aiohttp_server) -> AsyncIterator[Upstream]:
    blobs = BlobServer()
    server = await aiohttp_server(blobs.app, host="127.0.0.1")
    async with aiohttp.ClientSession() as session:
        yield Upstream(blobs, str(server.make_url("")).rstrip("/"), session)


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[BlobCache]:
    blob_cache = BlobCache(tmp_path / "cache", max_size=64 * MiB)
    yield blob_cache
    await blob_cache.aclose()


async def body_of(source: FileSource) -> bytes:
    if isinstance(source, LocalFile):
        return source.path.read_bytes()
    return b"".join([chunk async for chunk in source.chunks])


async def digest_of(source: FileSource) -> tuple[str, int]:
    if isinstance(source, LocalFile):
        data = source.path.read_bytes()
        return hashlib.sha256(data).hexdigest(), len(data)
    digest = hashlib.sha256()
    count = 0
    async for chunk in source.chunks:
        digest.update(chunk)
        count += len(chunk)
    return digest.hexdigest(), count


def leftovers(cache: BlobCache) -> list[str]:
    return sorted(p.name for p in (cache.directory / "partial").iterdir())


def blob_files(cache: BlobCache) -> list[Path]:
    return [p for p in (cache.directory / "blobs").rglob("*.val")]


async def test_miss_streams_then_hits_from_disk(upstream: Upstream, cache: BlobCache) -> None:
    blob = upstream.add("a", Blob(block(300 * KiB)))
    first = await upstream.fetch(cache, "a")
    assert isinstance(first, StreamedFile)
    assert (first.size, first.sha256) == (blob.size, blob.sha256)
    assert await body_of(first) == blob.block

    hit = cache.lookup("a")
    assert hit == LocalFile(path=hit.path, size=blob.size, sha256=blob.sha256)
    assert hit.path.read_bytes() == blob.block
    assert hit.path.is_relative_to(cache.directory)
    assert await upstream.fetch(cache, "a") == hit
    assert upstream.requests("a") == 1
    assert leftovers(cache) == []
    [entry] = cache.entries()
    assert (entry.key, entry.size, entry.sha256, entry.path) == (
        "a",
        blob.size,
        blob.sha256,
        hit.path,
    )


async def test_fifty_concurrent_fetches_make_one_upstream_request(
    upstream: Upstream, cache: BlobCache
) -> None:
    blob = upstream.add("b", Blob(block(MiB), repeat=2, pause_at=MiB // 2, pause=0.2))

    async def one() -> tuple[str, int]:
        return await digest_of(await upstream.fetch(cache, "b"))

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert results == [(blob.sha256, blob.size)] * 50
    assert upstream.requests("b") == 1
    assert isinstance(await upstream.fetch(cache, "b"), LocalFile)
    assert upstream.requests("b") == 1


async def test_a_network_client_ends_at_the_hash_check_the_cache_after_its_commit(
    upstream: Upstream, cache: BlobCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = upstream.add("v", Blob(block(600 * KiB)))
    release = threading.Event()  # the commit (fsync, index row) held until the test lets it
    commit = cache._commit

    def held_commit(flight: Any, sha256: str) -> None:
        release.wait(30)
        commit(flight, sha256)

    monkeypatch.setattr(cache, "_commit", held_commit)
    source = await upstream.fetch(cache, "v")
    assert isinstance(source, StreamedFile) and isinstance(source.chunks, Tail)
    sent = bytearray()

    async def send(fd: int, offset: int, count: int) -> int:
        data = os.pread(fd, count, offset)
        sent.extend(data)
        return len(data)

    try:
        # the web layer's sendfile loop has all of it once verified, the commit still held
        await asyncio.wait_for(source.chunks.send_to(send), 30)
        assert bytes(sent) == blob.block
        # a request meanwhile, and the cache's own readers, wait for the commit
        assert source.download is not None
        own_reader = asyncio.ensure_future(body_of(
            StreamedFile(chunks=Tail(source.download), size=blob.size, sha256=blob.sha256)))
        request = asyncio.ensure_future(cache.hit("v", sha256=blob.sha256, size=blob.size))
        await asyncio.sleep(0.2)
        assert not own_reader.done() and not request.done()
    finally:
        release.set()
    hit = await asyncio.wait_for(request, 30)
    assert isinstance(hit, LocalFile) and hit.path.read_bytes() == blob.block
    assert await asyncio.wait_for(own_reader, 30) == blob.block
    assert upstream.requests("v") == 1


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.blob_server",
        *args,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert (await asyncio.wait_for(process.stdout.readline(), 20)).strip() == b"ready"
    return process


async def test_two_processes_make_one_upstream_request(upstream: Upstream, tmp_path: Path) -> None:
    blob = upstream.add("c", Blob(block(MiB), repeat=3, pause_at=MiB, pause=0.5))
    args = (str(tmp_path / "cache"), upstream.url("c"), "c", blob.sha256, str(blob.size), "3")
    workers = await asyncio.gather(_spawn(*args), _spawn(*args))
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
    outputs = await asyncio.gather(*(asyncio.wait_for(w.communicate(), 20) for w in workers))
    results = [item for stdout, _ in outputs for item in json.loads(stdout)]
    assert [(r.get("sha256"), r.get("size")) for r in results] == [(blob.sha256, blob.size)] * 6
    # both processes were served while the one download was under way (neither waited for a hit)
    assert {r["kind"] for r in results} == {"streamed"}
    assert upstream.requests("c") == 1

    mine = BlobCache(tmp_path / "cache", max_size=64 * MiB)
    try:
        assert mine.lookup("c") is not None
        assert leftovers(mine) == []
    finally:
        mine.close()


async def test_truncated_body_is_not_cached_and_retried(
    upstream: Upstream, cache: BlobCache, caplog: pytest.LogCaptureFixture
) -> None:
    blob = upstream.add("d", Blob(block(MiB), pause_at=256 * KiB, pause=0.1, cut_at=700 * KiB))
    source = await upstream.fetch(cache, "d")
    assert isinstance(source, StreamedFile)
    with caplog.at_level(logging.WARNING, logger="pyproxy.blobcache"), pytest.raises(Unavailable) as raised:
        await body_of(source)
    assert not isinstance(raised.value, HashMismatch)
    assert any("failed" in r.message and r.name == "pyproxy.blobcache" for r in caplog.records)
    assert cache.lookup("d") is None
    assert leftovers(cache) == [] and blob_files(cache) == []

    blob.cut_at = None
    assert await body_of(await upstream.fetch(cache, "d")) == blob.block
    assert upstream.requests("d") == 2
    assert cache.lookup("d") is not None


async def test_wrong_bytes_are_not_cached_and_retried(upstream: Upstream, cache: BlobCache) -> None:
    blob = upstream.add("e", Blob(block(MiB), pause_at=256 * KiB, pause=0.1, corrupt=True))
    source = await upstream.fetch(cache, "e")
    assert isinstance(source, StreamedFile)
    with pytest.raises(HashMismatch):
        await body_of(source)
    assert cache.lookup("e") is None
    assert leftovers(cache) == [] and blob_files(cache) == []

    blob.corrupt = False
    assert await body_of(await upstream.fetch(cache, "e")) == blob.block
    assert upstream.requests("e") == 2


async def test_wrong_size_is_a_mismatch(upstream: Upstream, cache: BlobCache) -> None:
    blob = upstream.add("f", Blob(block(MiB), pause_at=256 * KiB, pause=0.1))
    for announced in (blob.size - 1, blob.size + 1):
        source = await upstream.fetch(cache, "f", size=announced)
        with pytest.raises(HashMismatch):
            await body_of(source)
    assert cache.lookup("f") is None
    assert upstream.requests("f") == 2


async def test_failure_before_the_first_byte_raises_from_fetch(
    upstream: Upstream, cache: BlobCache
) -> None:
    blob = upstream.add("g", Blob(block(10 * KiB), status=503))
    with pytest.raises(Unavailable):
        await upstream.fetch(cache, "g")
    blob.status = 200
    blob.corrupt = True  # small enough to be wrong before fetch returns
    with pytest.raises(HashMismatch):
        await upstream.fetch(cache, "g")
    blob.corrupt = False
    assert await body_of(await upstream.fetch(cache, "g")) == blob.block
    assert upstream.requests("g") == 3

    async def unreachable():  # any exception from the opener is Unavailable to the caller
        raise ConnectionRefusedError("nobody home")
        yield

    with pytest.raises(Unavailable):
        await cache.fetch(
            "h", sha256=None, size=None, open_upstream=asynccontextmanager(unreachable)
        )


async def test_first_chunk_arrives_before_upstream_finishes(
    upstream: Upstream, cache: BlobCache
) -> None:
    gate = asyncio.Event()
    blob = upstream.add("i", Blob(block(MiB), repeat=2, pause_at=MiB, gate=gate))
    source = await asyncio.wait_for(upstream.fetch(cache, "i"), 5)
    assert isinstance(source, StreamedFile)
    chunks = source.chunks
    first = await asyncio.wait_for(chunks.__anext__(), 5)
    assert first and blob.block.startswith(first)
    assert not gate.is_set()
    gate.set()
    rest = b"".join([chunk async for chunk in chunks])
    assert first + rest == blob.block * 2


async def test_download_continues_when_its_clients_go_away(
    upstream: Upstream, cache: BlobCache
) -> None:
    blob = upstream.add("j", Blob(block(MiB), repeat=2, pause_at=MiB // 2, pause=0.2))
    quitter = await upstream.fetch(cache, "j")
    stayer = await upstream.fetch(cache, "j")
    assert isinstance(quitter, StreamedFile) and isinstance(stayer, StreamedFile)
    await quitter.chunks.__anext__()
    await quitter.chunks.aclose()  # type: ignore[attr-defined]
    assert await digest_of(stayer) == (blob.sha256, blob.size)

    # the only client leaves at once; the file is cached all the same
    other = upstream.add("k", Blob(block(MiB, seed=1), pause_at=MiB // 2, pause=0.2))
    alone = await upstream.fetch(cache, "k")
    assert isinstance(alone, StreamedFile)
    del alone
    for _ in range(100):
        if (hit := cache.lookup("k")) is not None:
            break
        await asyncio.sleep(0.05)
    assert hit is not None and hit.sha256 == other.sha256
    assert (upstream.requests("j"), upstream.requests("k")) == (1, 1)


async def test_eviction_keeps_within_bound_and_inside_directory(
    upstream: Upstream, tmp_path: Path
) -> None:
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "keep.bin").write_bytes(b"x" * MiB)
    (tmp_path / "beside.bin").write_bytes(b"y" * MiB)
    max_size = 3 * MiB
    cache = BlobCache(tmp_path / "cache", max_size=max_size)
    try:
        for n in range(12):
            upstream.add(f"n{n}", Blob(block(512 * KiB, seed=n)))
            assert len(await body_of(await upstream.fetch(cache, f"n{n}"))) == 512 * KiB
            if n >= 1:
                assert cache.lookup("n0") is not None  # used each round: never the LRU victim
            assert cache.volume() <= max_size
            assert sum(p.stat().st_size for p in blob_files(cache)) <= max_size
            assert cache.lookup(f"n{n}") is not None  # the newest is never evicted for itself
        kept = {entry.key for entry in cache.entries()}
        assert "n0" in kept and "n1" not in kept and len(kept) >= 4
        assert len(blob_files(cache)) == len(kept)

        # too big for the cache: served, not cached, nothing evicted for it
        big = upstream.add("big", Blob(block(MiB, seed=99), repeat=4))
        assert await digest_of(await upstream.fetch(cache, "big")) == (big.sha256, big.size)
        assert cache.lookup("big") is None
        assert {entry.key for entry in cache.entries()} == kept
        assert leftovers(cache) == []
    finally:
        cache.close()
    assert (sibling / "keep.bin").read_bytes() == b"x" * MiB
    assert (tmp_path / "beside.bin").read_bytes() == b"y" * MiB


BIG_MB = int(os.environ.get("PYPROXY_TEST_BIG_MB", "200"))


async def test_large_file_streams_in_bounded_memory(upstream: Upstream, tmp_path: Path) -> None:
    blob = upstream.add("large", Blob(block(MiB, seed=7), repeat=BIG_MB))
    expected = blob.sha256
    cache = BlobCache(tmp_path / "cache", max_size=2 * BIG_MB * MiB)
    try:
        before = peak = rss()
        started = time.monotonic()
        source = await upstream.fetch(cache, "large")
        assert isinstance(source, StreamedFile)
        digest = hashlib.sha256()
        count = 0
        async for chunk in source.chunks:
            digest.update(chunk)
            count += len(chunk)
            peak = max(peak, rss())
        elapsed = time.monotonic() - started
        assert (digest.hexdigest(), count) == (expected, blob.size)
        growth = peak - before
        print(
            f"\n{BIG_MB} MB streamed in {elapsed:.2f} s, RSS {before >> 20} MB"
            f" -> peak {peak >> 20} MB (growth {growth / MiB:.1f} MB)"
        )
        assert growth < 50 * MiB
        hit = cache.lookup("large")
        assert hit is not None and hit.size == blob.size
    finally:
        cache.close()


async def test_stale_part_does_not_block_or_poison(upstream: Upstream, tmp_path: Path) -> None:
    blob = upstream.add("s", Blob(block(300 * KiB)))
    cache = BlobCache(tmp_path / "cache", max_size=64 * MiB)
    try:
        part = PartFiles(tmp_path / "cache" / "partial").path("s")
        part.write_bytes(b"garbage from a crashed writer" * 1000)  # nobody holds its lock
        assert await asyncio.wait_for(body_of(await upstream.fetch(cache, "s")), 5) == blob.block
        assert cache.lookup("s") is not None and cache.lookup("s").path.read_bytes() == blob.block
        assert upstream.requests("s") == 1
        assert leftovers(cache) == []

        # left-overs are also swept when a cache opens on the directory
        (part.parent / "0123.part").write_bytes(b"old")
        (part.parent / "0123.999.abcd.new").write_bytes(b"older")
    finally:
        cache.close()
    reopened = BlobCache(tmp_path / "cache", max_size=64 * MiB)
    try:
        assert leftovers(reopened) == []
        assert reopened.lookup("s") is not None
    finally:
        reopened.close()


async def test_killed_writer_leaves_nothing_behind(upstream: Upstream, tmp_path: Path) -> None:
    gate = asyncio.Event()
    blob = upstream.add("w", Blob(block(MiB), repeat=2, pause_at=MiB, gate=gate))
    args = (
        str(tmp_path / "cache"),
        upstream.url("w"),
        "w",
        blob.sha256,
        str(blob.size),
        "1",
        "--hold",
    )
    writer = await _spawn(*args)
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write(b"go\n")
    assert (await asyncio.wait_for(writer.stdout.readline(), 20)).strip() == b"streaming"

    cache = BlobCache(tmp_path / "cache", max_size=64 * MiB)
    try:
        follower = await upstream.fetch(cache, "w")  # follows the other process's download
        assert isinstance(follower, StreamedFile)
        assert await follower.chunks.__anext__()
        writer.send_signal(signal.SIGKILL)
        await writer.wait()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(body_of(follower), 5)
        gate.set()
        assert cache.lookup("w") is None and blob_files(cache) == []

        again = await asyncio.wait_for(upstream.fetch(cache, "w"), 5)
        assert await digest_of(again) == (blob.sha256, blob.size)
        assert upstream.requests("w") == 2
        assert cache.lookup("w") is not None
        assert leftovers(cache) == []
    finally:
        await cache.aclose()


def deleted_parts(cache: BlobCache) -> list[str]:
    """This process's open files that are unlinked download files of `cache`."""
    partial = str(cache.directory / "partial") + "/"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, or one closed meanwhile
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(partial) and target.endswith(" (deleted)"):
                found.append(target)
    return found


async def until_released(cache: BlobCache) -> list[str]:
    """The pinned part files once the cache's download task has had its turn (bounded)."""
    for _ in range(100):
        if not (pinned := deleted_parts(cache)):
            break
        await asyncio.sleep(0.01)
    return pinned


@pytest.mark.parametrize("breakage", ["cut", "corrupt", "refused"])
async def test_failed_download_closes_its_part_file_without_the_gc(
    upstream: Upstream, cache: BlobCache, breakage: str
) -> None:
    blob = Blob(block(MiB), pause_at=256 * KiB, pause=0.05)
    if breakage == "cut":  # upstream drops the connection part-way
        blob.cut_at = 700 * KiB
    elif breakage == "corrupt":  # the whole body arrives, with the wrong hash
        blob.corrupt = True
    else:  # an error status: fetch itself raises
        blob.status = 503
    upstream.add("fd", blob)
    gc.collect()
    gc.disable()  # a reference cycle would keep the unlinked file open until a collection
    try:
        with pytest.raises(Unavailable) as raised:
            source = await upstream.fetch(cache, "fd")
            assert isinstance(source, StreamedFile)
            await body_of(source)
        assert isinstance(raised.value, HashMismatch) == (breakage == "corrupt")
        # the client still holds its stream and the exception, as a web handler may
        assert await until_released(cache) == []
        assert leftovers(cache) == [] and cache.lookup("fd") is None
    finally:
        gc.enable()


# -- files upstream lists without a sha256, through a running pyproxy -----------------------------


@pytest.fixture
async def unhashed(
    tmp_path: Path, request: pytest.FixtureRequest, fake_upstream: StartFake,
    make_client: MakeClient,
) -> tuple[TestClient, Services, FakeUpstream, dict[str, bytes]]:
    """A pyproxy whose upstream lists a wheel (with .metadata) and an sdist, with no hash or size."""
    formats = getattr(request, "param", "json")
    dists = tmp_path / "dists"
    bodies = {
        path.name: path.read_bytes()
        for path in (make_wheel(dists, "foo", "1.0"), make_sdist(dists, "foo", "1.0"))
    }
    fake = await fake_upstream(formats=formats)
    for filename, body in bodies.items():
        fake.add_file(
            "foo", filename, body, metadata=core_metadata("foo", "1.0"),
            listed_hash=False, listed_size=False,
        )
    client, services = await make_client(data_dir=tmp_path / "data", upstream_url=fake.index_url)
    return client, services, fake, bodies


async def _get(client: TestClient, filename: str) -> tuple[int, bytes | None, str | None]:
    """(status, body or None if the download was aborted, X-Pyproxy-Cache)."""
    async with client.get(f"/files/foo/{filename}") as response:
        try:
            body: bytes | None = await response.read()
        except aiohttp.ClientPayloadError:
            body = None
        return response.status, body, response.headers.get("X-Pyproxy-Cache")


@pytest.mark.parametrize("unhashed", ["json", "html"], indirect=True)
async def test_an_error_page_for_a_file_without_a_hash_is_never_served_or_cached(
    unhashed: tuple[TestClient, Services, FakeUpstream, dict[str, bytes]],
) -> None:
    client, services, fake, bodies = unhashed
    assert services.health.blobs is not None
    names = [*bodies, *(f"{filename}.metadata" for filename in bodies)]
    fake.error_page_files = True  # 200, text/html, for every file and .metadata
    for name in names:
        status, body, _ = await _get(client, name)
        assert status != 200 or body is None, f"{name}: the error page was served as the file"
    assert services.health.blobs.entries() == []
    assert leftovers(services.health.blobs) == []

    fake.error_page_files = False
    for name in names:  # upstream again, and now the real files are served and cached
        status, body, cache = await _get(client, name)
        assert (status, cache) == (200, "miss")
        wanted = core_metadata("foo", "1.0") if name.endswith(".metadata") else bodies[name]
        assert body == wanted
        assert fake.count(fake.file_path("foo", name)) == 2
    assert len(services.health.blobs.entries()) == 4
    for name in names:
        assert (await _get(client, name))[2] == "hit"
        assert fake.count(fake.file_path("foo", name)) == 2


async def test_without_a_hash_the_filename_decides_and_none_is_no_proof(
    upstream: Upstream, cache: BlobCache, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "foo", "1.0")
    upstream.add("w", Blob(wheel.read_bytes()))
    source = await upstream.fetch(cache, "w", sha256=None, size=None, filename=wheel.name)
    assert await body_of(source) == wheel.read_bytes()
    assert cache.lookup("w") is not None

    upstream.add("t", Blob(wheel.read_bytes()))  # a zip is no sdist
    with pytest.raises(HashMismatch, match="not a well-formed file of its kind"):
        await body_of(await upstream.fetch(cache, "t", sha256=None, filename="foo-1.0.tar.gz"))
    with pytest.raises(HashMismatch, match="no filename"):
        await body_of(await upstream.fetch(cache, "t", sha256=None))
    assert cache.lookup("t") is None and leftovers(cache) == []


# ---------------------------------------------------------------------------- the key scheme

_SHA = "ab" * 32
_URL = "http://127.0.0.1:9/f/x-1.0.tar.gz"


def _url_key(url: str) -> str:
    return "url:" + hashlib.sha256(url.encode()).hexdigest()


@pytest.mark.parametrize(
    ("hashes", "core_metadata", "blob", "metadata"),
    [
        ({"sha256": _SHA}, {"sha256": "cd" * 32}, _SHA, "meta:" + "cd" * 32),
        # metadata hash unknown: keyed by where it comes from, not by its file's sha256 (which
        # another upstream could list beside a `.metadata` of its own)
        ({"sha256": _SHA}, True, _SHA, "meta:" + _url_key(_URL + ".metadata")),
        ({}, True, _url_key(_URL), "meta:" + _url_key(_URL + ".metadata")),
    ],
    ids=["both-hashes", "file-hash-only", "no-hash"],
)
def test_cache_keys_of_an_upstream_file(
    hashes: dict[str, str], core_metadata: dict[str, str] | bool, blob: str, metadata: str
) -> None:
    dist = DistFile("x-1.0.tar.gz", hashes, core_metadata=core_metadata,
                    origin=Origin.UPSTREAM, upstream_url=_URL, provenance=True,
                    provenance_url=_URL + ".provenance")
    assert blob_key(dist) == blob and not is_metadata_key(blob_key(dist))
    assert metadata_key(dist) == metadata and is_metadata_key(metadata_key(dist))
    assert provenance_key(dist) == "prov:" + _url_key(_URL + ".provenance")
    assert is_provenance_key(provenance_key(dist)) and not is_metadata_key(provenance_key(dist))


def test_the_metadata_pyproxy_makes_has_keys_no_upstream_answer_can_take() -> None:
    """Made from the wheel's own bytes: keyed after the wheel, apart from every key a body
    upstream lists (with or without a hash) is cached under, however a page names it."""
    wheel = DistFile("x-1.0-py3-none-any.whl", {"sha256": _SHA}, origin=Origin.UPSTREAM,
                     upstream_url=_URL)
    made = made_metadata_key(wheel)
    assert made == "made:" + _SHA and is_metadata_key(made)
    assert metadata_key(wheel.offering(True, from_wheel=True)) == made
    # a page (another upstream's) listing a file of that sha256 with a `.metadata` or
    # provenance of its own, hashed (even with the wheel's hash) or not
    for offer in (True, {"sha256": _SHA}, {"sha256": "cd" * 32}):
        other = DistFile("evil-1.0-py3-none-any.whl", {"sha256": _SHA}, core_metadata=offer,
                         origin=Origin.UPSTREAM, upstream_url="http://127.0.0.1:7/evil.whl",
                         provenance=True, provenance_url="http://127.0.0.1:7/evil.prov")
        assert made not in (metadata_key(other), provenance_key(other), blob_key(other))
    assert not names_its_body(made, _SHA)


@pytest.mark.parametrize(
    ("key", "sha256", "names"),
    [
        (_SHA, _SHA, True),
        (_SHA.upper(), _SHA, True),
        ("meta:" + "cd" * 32, "cd" * 32, True),  # the .metadata's own listed hash
        ("made:" + _SHA, "cd" * 32, False),  # made by pyproxy: keyed by its wheel's hash
        ("meta:url:" + _SHA, _SHA, False),
        ("url:" + _SHA, _SHA, False),
    ],
)
def test_whether_a_key_names_its_body(key: str, sha256: str, names: bool) -> None:
    assert names_its_body(key, sha256) is names


# -- a warm path that never writes ----------------------------------------------------------------


class Writes:
    """Commits to the cache's index by any other connection, seen through PRAGMA data_version
    (which changes for one connection whenever another one commits)."""

    def __init__(self, cache: BlobCache) -> None:
        self._db = sqlite3.connect(cache.directory / "blobs" / "cache.db", isolation_level=None)
        self._last = self._version()

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def since_last(self) -> bool:
        """Whether anything was committed since the previous call (or since made)."""
        now = self._version()
        changed, self._last = now != self._last, now
        return changed

    def close(self) -> None:
        self._db.close()


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting what is sent to its threads (asyncio.to_thread)."""

    submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(*args, **kwargs)


def access_times(cache: BlobCache) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(cache.directory / "blobs" / "cache.db")) as db:
        return dict(db.execute("SELECT key, access_time FROM Cache"))


async def _other_process(directory: Path, code: str) -> str:
    """Run `code` in a new interpreter with `cache` open on `directory`; its stdout."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pyproxy.stores.blobcache import BlobCache\n"
        f"cache = BlobCache(Path(sys.argv[1]), max_size={64 * MiB})\n"
        f"{code}\n"
        "cache.close()\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(directory), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    return out.decode()


async def test_warm_hits_write_nothing_until_the_uses_are_flushed(
    upstream: Upstream, cache: BlobCache, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        upstream.add(name, Blob(block(3 * KiB, seed=len(name) + ord(name))))
        await body_of(await upstream.fetch(cache, name))
    stored = access_times(cache)
    # another worker on the same directory (opening it writes its settings, as diskcache does)
    other = BlobCache(cache.directory, max_size=64 * MiB)
    writes = Writes(cache)
    try:
        for _ in range(50):
            assert isinstance(await upstream.fetch(cache, "a"), LocalFile)
            assert cache.lookup("b") is not None
        for _ in range(20):  # its first hit asks the index, and only reads it
            assert isinstance(await upstream.fetch(other, "b"), LocalFile)
        assert not writes.since_last(), "a warm hit wrote to the index"
        assert access_times(cache) == stored
        assert other.flush_uses() == 1  # one transaction for its 20 uses of one blob
        assert writes.since_last()
        assert cache.flush_uses() == 2
        assert writes.since_last()
        assert cache.flush_uses() == 0  # nothing pending: no transaction at all
        assert not writes.since_last()
    finally:
        writes.close()
        await other.aclose()
    used = access_times(cache)
    assert used["a"] > stored["a"] and used["b"] > stored["b"]
    assert upstream.requests("a") == upstream.requests("b") == 1


async def test_a_hit_seen_before_takes_no_thread(upstream: Upstream, cache: BlobCache) -> None:
    upstream.add("t", Blob(block(3 * KiB, seed=5)))
    await body_of(await upstream.fetch(cache, "t"))
    assert isinstance(await upstream.fetch(cache, "t"), LocalFile)  # asks the index once
    executor = CountingExecutor(max_workers=2)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    for _ in range(20):
        assert isinstance(await upstream.fetch(cache, "t"), LocalFile)
    assert executor.submitted == 0


async def test_recorded_uses_order_eviction(upstream: Upstream, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_size=2 * MiB)
    try:
        for name in ("old", "mid", "new"):
            upstream.add(name, Blob(block(512 * KiB, seed=len(name) * 7 + ord(name[0]))))
            await body_of(await upstream.fetch(cache, name))
        assert isinstance(await upstream.fetch(cache, "old"), LocalFile)  # in memory only
        upstream.add("more", Blob(block(512 * KiB, seed=77)))
        await body_of(await upstream.fetch(cache, "more"))  # over the bound: evicts one
        kept = {entry.key for entry in cache.entries()}
        assert kept == {"old", "new", "more"}, "eviction ignored the use recorded in memory"
    finally:
        await cache.aclose()


async def test_uses_and_removals_cross_processes(upstream: Upstream, tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    cache = BlobCache(directory, max_size=2 * MiB)
    try:
        for name in ("p", "q", "r"):
            upstream.add(name, Blob(block(512 * KiB, seed=ord(name))))
            await body_of(await upstream.fetch(cache, name))
        # another worker uses p, and writes that down when it closes
        assert await _other_process(directory, "print(cache.lookup('p') is not None)") == "True\n"
        upstream.add("s", Blob(block(512 * KiB, seed=99)))
        await body_of(await upstream.fetch(cache, "s"))
        assert {entry.key for entry in cache.entries()} == {"p", "r", "s"}

        # a path this process remembers, removed by another (cache prune, verify, eviction):
        # the open fails, and the next lookup asks the index instead of giving the path again
        hit = await upstream.fetch(cache, "r")
        assert isinstance(hit, LocalFile)
        assert await _other_process(directory, "print(cache.delete('r'))") == "True\n"
        with pytest.raises(FileNotFoundError):
            hit.path.read_bytes()
        assert cache.lookup("r") is None
        again = await upstream.fetch(cache, "r")
        assert isinstance(again, StreamedFile)
        assert await body_of(again) == upstream.blobs.blobs["r"].block
        assert upstream.requests("r") == 2
    finally:
        await cache.aclose()


async def test_uses_are_written_on_their_own_and_when_the_cache_closes(
    upstream: Upstream, tmp_path: Path
) -> None:
    cache = BlobCache(tmp_path / "cache", max_size=64 * MiB, flush_interval=0.05)
    upstream.add("u", Blob(block(3 * KiB, seed=3)))
    await body_of(await upstream.fetch(cache, "u"))
    stored = access_times(cache)["u"]
    assert isinstance(await upstream.fetch(cache, "u"), LocalFile)
    for _ in range(200):  # the timer writes it, no flush asked for
        if access_times(cache)["u"] > stored:
            break
        await asyncio.sleep(0.025)
    assert access_times(cache)["u"] > stored
    await cache.aclose()

    slow = BlobCache(tmp_path / "cache", max_size=64 * MiB)  # the default: 30 s
    used = access_times(slow)["u"]
    assert slow.lookup("u") is not None
    await slow.aclose()
    assert access_times(slow)["u"] > used


async def test_a_full_disk_still_hits_and_says_why_it_cannot_fetch(
    upstream: Upstream, tmp_path: Path
) -> None:
    """On a full disk a hit is served (its use is recorded later, in a batch that may wait for
    room); a miss cannot be cached, and says so."""
    with mounted(tmp_path / "disk", "4m") as disk:
        cache = BlobCache(disk / "cache", max_size=64 * MiB)
        try:
            blob = upstream.add("a", Blob(block(100 * KiB)))
            upstream.add("b", Blob(block(100 * KiB, seed=1)))
            assert await body_of(await upstream.fetch(cache, "a")) == blob.block
            with contextlib.closing(sqlite3.connect(cache.directory / "blobs" / "cache.db")) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write needs new room
            filler = fill(disk)
            hit = await upstream.fetch(cache, "a")
            assert isinstance(hit, LocalFile) and hit.path.read_bytes() == blob.block
            assert cache.lookup("a") == hit
            with pytest.raises(Unavailable, match=r"^the index's disk is full: it cannot fetch"):
                await upstream.fetch(cache, "b")
            assert upstream.requests("a") == 1 and leftovers(cache) == []
            filler.unlink()
        finally:
            await cache.aclose()


async def test_after_a_mismatch_a_download_is_streamed_only_once_verified(
    upstream: Upstream, cache: BlobCache
) -> None:
    """Once a body failed its check here, the next download's readers get nothing before all of
    it is verified: a wrong body again sends no byte."""
    blob = upstream.add("m", Blob(block(MiB), pause_at=256 * KiB, pause=0.1, corrupt=True))
    with pytest.raises(HashMismatch):
        await body_of(await upstream.fetch(cache, "m"))  # streamed as it came, then aborted
    assert cache.mismatched("m")
    source = await upstream.fetch(cache, "m")
    assert isinstance(source, StreamedFile)
    received: list[bytes] = []
    with pytest.raises(HashMismatch):
        async for chunk in source.chunks:
            received.append(chunk)
    assert received == []
    blob.corrupt = False
    source = await upstream.fetch(cache, "m")
    assert await body_of(source) == blob.block


async def test_fetch_first_asks_only_the_one_who_would_download(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Two caches on one directory (their part files' locks are per open file, as between
    processes): the one that would download asks; the other follows its download, unasked. An
    ask that declines downloads nothing, and whoever waited looks again."""
    blob = upstream.add("q", Blob(block(MiB), pause_at=256 * KiB, pause=0.3))
    first, second = (BlobCache(tmp_path / "shared", max_size=64 * MiB) for _ in range(2))
    asked: list[str] = []

    def ask_of(who: str, *, declines: bool = False) -> Any:
        async def ask() -> Any:
            asked.append(who)
            await asyncio.sleep(0.05)  # the other comes meanwhile
            return None if declines else opener(upstream.session, upstream.url("q"))

        return ask

    try:
        announced = {"sha256": blob.sha256, "size": blob.size}
        declined = await first.fetch_first("q", ask=ask_of("first", declines=True), **announced)
        assert declined is None and asked == ["first"] and upstream.requests("q") == 0
        assert leftovers(first) == []
        sources = await asyncio.gather(
            first.fetch_first("q", ask=ask_of("first"), **announced),
            second.fetch_first("q", ask=ask_of("second"), **announced),
        )
        assert len(asked) == 2  # one of the two asked, the other followed
        assert [await body_of(s) for s in sources if s is not None] == [blob.block] * 2
        assert upstream.requests("q") == 1
        hit = await second.fetch_first("q", ask=ask_of("second"), **announced)
        assert isinstance(hit, LocalFile) and len(asked) == 2
    finally:
        await first.aclose()
        await second.aclose()


async def test_sizes_are_of_verified_commits_only(upstream: Upstream, cache: BlobCache) -> None:
    """What a page without sizes gets filled in from (repository/wheel_metadata.py): never the
    size of a download in progress, nor of one that failed its check."""
    gate = asyncio.Event()
    blob = upstream.add("s", Blob(block(300 * KiB), pause_at=100 * KiB, gate=gate))
    upstream.add("w", Blob(block(10 * KiB), corrupt=True))
    source = await upstream.fetch(cache, "s")
    assert isinstance(source, StreamedFile)
    assert await asyncio.to_thread(cache.sizes, ["s"]) == {}  # in progress
    gate.set()
    assert await body_of(source) == blob.block
    with pytest.raises(HashMismatch):
        await body_of(await upstream.fetch(cache, "w"))
    await cache.idle()
    assert await asyncio.to_thread(cache.sizes, ["s", "w", "x"]) == {"s": blob.size}
    assert cache.flush_uses() == 0  # asking is not a use


# -- a failed download, and its followers in other processes -----------------------------------


async def _until_requested(upstream: Upstream, name: str, count: int = 1) -> None:
    for _ in range(2000):
        if upstream.requests(name) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{name} was not requested {count} times")


@pytest.mark.parametrize("breakage", ["500", "corrupt"])
async def test_a_failed_download_hands_its_failure_to_its_followers(
    upstream: Upstream, tmp_path: Path, breakage: str
) -> None:
    """Two caches on one directory (their part files' locks are per open file, as between
    processes): when the download the second follows fails cleanly, the second fails with the
    same error and words, and asks upstream nothing (it used to retry: a GET per attempt)."""
    blob = Blob(block(64 * KiB), delay=0.3)  # slow: the second comes while the first waits
    if breakage == "500":
        blob.status = 500
    else:
        blob.corrupt = True
    upstream.add("x", blob)
    first, second = (BlobCache(tmp_path / "shared", max_size=64 * MiB) for _ in range(2))

    async def whole(cache: BlobCache) -> bytes:
        return await body_of(await upstream.fetch(cache, "x"))

    try:
        held = asyncio.create_task(whole(first))
        await _until_requested(upstream, "x")  # so the first holds the part file
        followed = asyncio.create_task(whole(second))
        errors = await asyncio.wait_for(asyncio.gather(held, followed, return_exceptions=True), 10)
        kind = HashMismatch if breakage == "corrupt" else Unavailable
        assert [type(e) for e in errors] == [kind, kind]
        assert str(errors[1]) == str(errors[0])
        assert upstream.requests("x") == 1
        assert leftovers(first) == [] and first.lookup("x") is None
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_follower_takes_over_from_a_killed_writer_only(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Across real processes: a download that failed is not asked of upstream again by the
    process that followed it; one whose process was killed (no verdict) is taken over at once
    by the follower, before it served a byte, and its client gets the file."""
    directory = str(tmp_path / "cache")
    failing = upstream.add("r", Blob(block(64 * KiB), delay=0.5, status=500))
    writer = await _spawn(directory, upstream.url("r"), "r", failing.sha256, str(failing.size), "1")
    assert writer.stdin is not None
    writer.stdin.write(b"go\n")
    await _until_requested(upstream, "r")
    cache = BlobCache(tmp_path / "cache", max_size=64 * MiB)
    try:
        with pytest.raises(Unavailable) as followed:
            await asyncio.wait_for(upstream.fetch(cache, "r"), 10)
        out, _ = await asyncio.wait_for(writer.communicate(), 10)
        assert json.loads(out) == [{"error": repr(Unavailable(str(followed.value)))}]
        assert str(followed.value) == "upstream answered 500"
        assert upstream.requests("r") == 1

        gate = asyncio.Event()  # headers, then no byte until set
        blob = upstream.add("k", Blob(block(MiB), pause_at=0, gate=gate))
        killed = await _spawn(directory, upstream.url("k"), "k", blob.sha256, str(blob.size), "1")
        assert killed.stdin is not None
        killed.stdin.write(b"go\n")
        await _until_requested(upstream, "k")
        follower = asyncio.create_task(upstream.fetch(cache, "k"))
        await asyncio.sleep(0.2)
        assert not follower.done()  # following the other's download: nothing written yet
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
        gate.set()
        source = await asyncio.wait_for(follower, 5)
        assert await asyncio.wait_for(digest_of(source), 10) == (blob.sha256, blob.size)
        assert upstream.requests("k") == 2
        await cache.idle()
        assert cache.lookup("k") is not None and leftovers(cache) == []
    finally:
        await cache.aclose()


@pytest.mark.parametrize(
    ("suffix", "limit"),
    [(".metadata", 10 * MiB), (".provenance", MiB)],  # stores.proof's bounds of each kind
)
async def test_a_small_kinds_body_is_cut_off_past_its_limit(
    upstream: Upstream, cache: BlobCache, caplog: pytest.LogCaptureFixture, suffix: str,
    limit: int,
) -> None:
    """A `.metadata` (or `.provenance`) answered with 100 MB is abandoned once past its kind's
    limit, not streamed whole to a client before its hash check fails; it fails before anything
    is served (a 503, not an aborted 200), and nothing is cached."""
    upstream.add("big", Blob(block(MiB), repeat=100))
    with caplog.at_level(logging.WARNING, logger="pyproxy.blobcache"), pytest.raises(
        HashMismatch, match=f"more than {limit} bytes"
    ):
        await upstream.fetch(
            cache, "big", sha256="ab" * 32, size=None, filename="foo-1.0-py3-none-any.whl" + suffix
        )
    failed = [r for r in caplog.records if "failed after" in r.getMessage()]
    assert len(failed) == 1  # logged once
    assert failed[0].args is not None and failed[0].args[1] <= limit  # type: ignore[index]
    await cache.idle()
    assert cache.lookup("big") is None and leftovers(cache) == [] and blob_files(cache) == []


async def test_a_cluster_nodes_refusal_is_no_verdict_its_followers_take(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A look at the local cache that must never download (stores.clusterflight.refuse) asked
    upstream nothing: a process that followed it downloads the file itself (as before)."""
    from pyproxy.stores.clusterflight import NotInFlight

    blob = upstream.add("n", Blob(block(64 * KiB)))

    @asynccontextmanager
    async def refusing() -> AsyncIterator[AsyncIterator[bytes]]:
        await asyncio.sleep(0.3)  # the other comes meanwhile
        raise NotInFlight("not downloading that file here")
        yield

    first, second = (BlobCache(tmp_path / "shared", max_size=64 * MiB) for _ in range(2))
    try:
        announced = {"sha256": blob.sha256, "size": blob.size}
        refused = asyncio.create_task(first.fetch("n", open_upstream=refusing, **announced))
        await asyncio.sleep(0.1)
        source = await asyncio.wait_for(upstream.fetch(second, "n"), 10)
        with pytest.raises(Unavailable, match="not downloading that file here"):
            await refused
        assert await body_of(source) == blob.block
        assert upstream.requests("n") == 1
    finally:
        await first.aclose()
        await second.aclose()
