"""`pyproxy cache stats|prune|verify`, run through cli.main() while an in-process pyproxy holds
the same data directory (the operations must be safe beside a running server)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.cli import main as cli
from pyproxy.model import StreamedFile
from pyproxy.ops import cacheops, cacheverify
from pyproxy.stores.blobcache import BlobCache
from pyproxy.web.context import Services
from tests.conftest import MakeClient
from tests.dists import core_metadata, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.small_disk import fill, free, mounted

SIZES = {"a": 300_000, "b": 200_000, "c": 100_000}


@pytest.fixture(autouse=True)
def _isolated(isolated_cwd: Path) -> None:
    """No ./pyproxy.toml and no PYPROXY_* variables reach the commands."""


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    for name, size in SIZES.items():
        fake.add_generated_file(name, f"{name}-1.0-py3-none-any.whl", size,
                                metadata=f"Name: {name}\n".encode())
    return fake


@pytest.fixture
async def proxy(
    tmp_path: Path, fake: FakeUpstream, make_client: MakeClient
) -> tuple[TestClient, Services]:
    # no warm-up: its look at each file it served is a use too, and these tests count uses
    return await make_client(data_dir=tmp_path / "data", upstream_url=fake.index_url,
                             upstream_warm_up=False)


def _local(services: Services) -> cacheops.LocalCache:
    """The server's cache, as the operations see a data directory's (no pages to name files)."""
    assert isinstance(services.health.blobs, BlobCache)
    return cacheops.LocalCache(services.health.blobs)


def run(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


async def _download(client: TestClient, name: str, suffix: str = "") -> bytes:
    response = await client.get(f"/files/{name}/{name}-1.0-py3-none-any.whl{suffix}")
    assert response.status == 200, await response.text()
    return await response.read()


async def _warm_all(client: TestClient) -> None:
    for name in SIZES:  # a is used first, so it is the least recently used
        await _download(client, name)
        time.sleep(0.01)  # distinct access times


async def test_stats_counts_projects_files_bytes_and_oldest(
    proxy: tuple[TestClient, Services], capsys: pytest.CaptureFixture[str]
) -> None:
    client, services = proxy
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "stats", "--json")
    assert orjson.loads(out)["list_bytes"] == 0
    await _warm_all(client)
    await _download(client, "a", ".metadata")
    async with client.get("/simple/") as response:  # the project list, kept and rendered
        assert response.status == 200
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "stats", "--json")
    assert code == 0
    figures = orjson.loads(out)
    assert figures["list_bytes"] > 0
    assert figures["projects"] == 3
    assert figures["files"] == 3 and figures["metadata_files"] == 1
    assert sum(SIZES.values()) < figures["bytes"] < sum(SIZES.values()) + 1_000_000
    assert figures["oldest_stored"] <= time.time()

    code, out, _ = run(services.settings.data_dir, capsys, "cache", "stats")
    assert code == 0
    assert "3 upstream project pages" in out and "3 files, 1 .metadata" in out
    assert "of project lists (/simple/, not bounded by max_size)" in out
    # keys are hashes; the report names the file
    assert "a/a-1.0-py3-none-any.whl" in out


async def test_verify_removes_a_corrupted_file_and_the_server_fetches_it_again(
    proxy: tuple[TestClient, Services], fake: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    client, services = proxy
    await _warm_all(client)
    assert services.health.blobs is not None
    victim = next(e for e in services.health.blobs.entries()
                  if e.key == fake.file("b", "b-1.0-py3-none-any.whl").sha256)
    with open(victim.path, "r+b") as body:  # same size, one byte flipped
        first = body.read(1)
        body.seek(0)
        body.write(bytes([first[0] ^ 0xFF]))

    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 1, "damage found must show in the exit status"
    assert "removed b/b-1.0-py3-none-any.whl: sha256" in out
    assert "checked 3 files" in out and "1 damaged and removed" in out
    assert not victim.path.exists()
    assert {e.key for e in services.health.blobs.entries()} == {
        fake.file(n, f"{n}-1.0-py3-none-any.whl").sha256 for n in ("a", "c")
    }

    # the running server notices nothing but a miss: the good bytes come from upstream again
    fake.reset_counters()
    body = await _download(client, "b")
    assert len(body) == SIZES["b"]
    assert fake.count(fake.file_path("b", "b-1.0-py3-none-any.whl")) == 1
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 0 and "0 damaged" in out


async def test_verify_notices_a_truncated_file(
    proxy: tuple[TestClient, Services], capsys: pytest.CaptureFixture[str]
) -> None:
    client, services = proxy
    await _download(client, "c")
    assert services.health.blobs is not None
    await services.health.blobs.idle()  # the client has its bytes before the cache commits
    (entry,) = services.health.blobs.entries()
    os.truncate(entry.path, 10)
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 1 and "10 bytes on disk" in out


ERROR_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Access denied</h1></body></html>\n"


async def _plant(blobs: BlobCache, key: str, body: bytes) -> None:
    """Cache `body` under `key` as pyproxy did before it asked bodies without a hash for proof."""
    @asynccontextmanager
    async def open_body() -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield body

        yield chunks()

    assert blobs.delete(key)
    source = await blobs.fetch(
        key, sha256=hashlib.sha256(body).hexdigest(), size=None, open_upstream=open_body
    )
    if isinstance(source, StreamedFile):
        assert b"".join([chunk async for chunk in source.chunks]) == body
    assert blobs.lookup(key) is not None


async def test_verify_removes_an_error_page_cached_for_a_file_without_a_hash(
    proxy: tuple[TestClient, Services], fake: FakeUpstream, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, services = proxy
    assert services.health.blobs is not None
    wheel = make_wheel(tmp_path / "dists", "d", "1.0")
    fake.add_file("d", wheel.name, wheel.read_bytes(), metadata=core_metadata("d", "1.0"),
                  listed_hash=False, listed_size=False)
    await _warm_all(client)  # a, b, c: listed with a sha256
    assert await _download(client, "d") == wheel.read_bytes()
    assert await _download(client, "d", ".metadata") == core_metadata("d", "1.0")
    unhashed = {e.key for e in services.health.blobs.entries()} - {
        fake.file(n, f"{n}-1.0-py3-none-any.whl").sha256 for n in SIZES
    }
    assert len(unhashed) == 2
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 0 and "checked 5 files" in out, "good files without a hash stay"

    for key in unhashed:
        await _plant(services.health.blobs, key, ERROR_PAGE)
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 1
    assert "removed d/d-1.0-py3-none-any.whl: upstream lists no sha256" in out
    assert "removed d/d-1.0-py3-none-any.whl.metadata: upstream lists no sha256" in out
    assert "not a zip file" in out and "no Metadata-Version" in out
    assert "checked 5 files" in out and "2 damaged and removed" in out
    assert len(services.health.blobs.entries()) == 3

    # with no page to name it, a body is checked as any archive (or as metadata)
    fake.reset_counters()
    assert await _download(client, "d") == wheel.read_bytes()
    assert fake.count(fake.file_path("d", wheel.name)) == 1
    (key,) = {e.key for e in services.health.blobs.entries()} & unhashed
    assert cacheverify.verify(_local(services)).damaged == []
    await _plant(services.health.blobs, key, ERROR_PAGE)
    (damaged,) = cacheverify.verify(_local(services)).damaged
    assert damaged.entry.key == key and "not an archive of any kind" in damaged.reason


async def test_verify_keeps_a_cached_provenance_object_and_removes_a_bad_one(
    proxy: tuple[TestClient, Services], fake: FakeUpstream, capsys: pytest.CaptureFixture[str],
) -> None:
    client, services = proxy
    assert services.health.blobs is not None
    provenance = b'{"version": 1, "attestation_bundles": []}'
    fake.add_file("e", "e-1.0-py3-none-any.whl", b"e", provenance=provenance)
    response = await client.get("/integrity/e/1.0/e-1.0-py3-none-any.whl/provenance")
    assert response.status == 200 and await response.read() == provenance
    (entry,) = services.health.blobs.entries()
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 0 and "checked 1 files" in out and "0 damaged" in out
    await _plant(services.health.blobs, entry.key, ERROR_PAGE)
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "verify")
    assert code == 1
    assert "removed e/e-1.0-py3-none-any.whl.provenance: upstream lists no sha256" in out
    assert "not a provenance object" in out
    response = await client.get("/integrity/e/1.0/e-1.0-py3-none-any.whl/provenance")
    assert response.status == 200 and await response.read() == provenance  # fetched again
    await _plant(services.health.blobs, entry.key, ERROR_PAGE)
    (damaged,) = cacheverify.verify(_local(services)).damaged  # with no page to name it
    assert "not a provenance object" in damaged.reason


async def test_prune_to_a_size_removes_least_recently_used_first(
    proxy: tuple[TestClient, Services], capsys: pytest.CaptureFixture[str]
) -> None:
    client, services = proxy
    await _warm_all(client)
    await _download(client, "a")  # now b is the least recently used
    assert services.health.blobs is not None
    # the server writes its uses down in batches (every 30 s, and when it stops): as if that
    # time had come, since prune runs in another process and sees what is written
    assert services.health.blobs.flush_uses() == 1
    bound = services.health.blobs.volume() - 150_000  # b alone (200 kB) brings it under
    code, out, _ = run(services.settings.data_dir, capsys, "cache", "prune", "--max-size", str(bound))
    assert code == 0 and out.startswith("removed 1 files")
    assert services.health.blobs.volume() <= bound
    kept = {e.path.stat().st_size for e in services.health.blobs.entries()}
    assert kept == {SIZES["a"], SIZES["c"]}

    code, _, _ = run(services.settings.data_dir, capsys, "cache", "prune", "--max-size", "0")
    assert code == 0
    assert services.health.blobs.entries() == []
    assert await _download(client, "a"), "a pruned file is fetched again"


async def test_prune_older_than_uses_the_last_use(
    proxy: tuple[TestClient, Services], capsys: pytest.CaptureFixture[str]
) -> None:
    client, services = proxy
    await _warm_all(client)
    assert services.health.blobs is not None
    entries = services.health.blobs.entries()
    result = cacheops.prune(services.health.blobs, max_size=None, older_than_days=2)
    assert result.removed == []
    # "now" just after a's last use, with a bound of 0 days: only a is older than that
    result = cacheops.prune(services.health.blobs, max_size=None, older_than_days=0,
                            now=entries[0].accessed + 0.001)
    assert [key for key, _ in result.removed] == [entries[0].key]

    code, out, _ = run(services.settings.data_dir, capsys, "cache", "prune", "--older-than", "30")
    assert code == 0 and out.startswith("removed 0 files")


def test_cache_commands_give_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(tmp_path / "missing", capsys, "cache", "stats")
    assert code == 1 and err.strip() == f"pyproxy: no data directory: {tmp_path / 'missing'}"
    (tmp_path / "data").mkdir()
    code, _, err = run(tmp_path / "data", capsys, "cache", "prune")
    assert code == 2 and "--max-size SIZE and/or --older-than DAYS" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["cache", "prune", "--max-size", "lots", "--data-dir", str(tmp_path / "data")])
    assert exit_info.value.code == 2
    assert "is not a size" in capsys.readouterr().err


def _opener(body: bytes) -> Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]:
    """An upstream that sends `body` in one chunk."""

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    @asynccontextmanager
    async def open_upstream() -> AsyncIterator[AsyncIterator[bytes]]:
        yield chunks()

    return open_upstream


async def test_prune_on_a_full_disk_frees_the_bodies_first(tmp_path: Path) -> None:
    """The index has no room to record a delete: each file's own room goes first, so pruning
    needs no spare file."""
    with mounted(tmp_path / "disk", "8m") as disk:
        blobs = BlobCache(disk / "files", max_size=64 * 1024**2)
        try:
            for name in ("a", "b", "c"):
                body = os.urandom(500_000)
                source = await blobs.fetch(
                    name, sha256=hashlib.sha256(body).hexdigest(), size=len(body),
                    open_upstream=_opener(body),
                )
                async for _ in source.chunks:  # type: ignore[union-attr]
                    pass
                del source  # served: a server drops it, and with it the download's open file
            with contextlib.closing(sqlite3.connect(blobs.directory / "blobs" / "cache.db")) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a delete needs new room
            fill(disk)
            result = cacheops.prune(blobs, max_size=0, older_than_days=None)
            assert sorted(key for key, _ in result.removed) == ["a", "b", "c"]
            assert blobs.entries() == [] and free(disk) > 1_000_000
        finally:
            await blobs.aclose()
