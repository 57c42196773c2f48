"""web/streamed.py: a download in progress, sent from its file with the kernel's sendfile as it
is written, to every client that follows it; real HTTP against the in-process app and a fake
upstream that sends slowly."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from pyproxy.web import streamed
from tests.conftest import MakeClient
from tests.fake_upstream import FakeUpstream

MiB = 1024 * 1024
WHEEL = "follow-1.0-py3-none-any.whl"
PATH = f"/files/follow/{WHEEL}"


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts of every zero-copy send, so a test sees that path was the one taken."""
    counts: list[int] = []
    real = streamed.send_fd

    async def counting(transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
        sent = await real(transport, fd, offset, count)
        counts.append(sent)
        return sent

    monkeypatch.setattr(streamed, "send_fd", counting)
    return counts


async def _digest(client: TestClient, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with client.get(PATH, headers=headers or {}) as response:
        digest = hashlib.sha256()
        async for chunk in response.content.iter_chunked(64 * 1024):
            digest.update(chunk)
        return response.status, digest.hexdigest()


async def _cold(
    fake: FakeUpstream, make_client: MakeClient, size: int, *, chunk_delay: float = 0.002
) -> tuple[TestClient, bytes]:
    """A pyproxy that has read the page of one upstream file of `size` bytes, which upstream
    sends slowly (still arriving while clients read it); the client and the file's bytes."""
    dist = fake.add_generated_file("follow", WHEEL, size)
    fake.chunk_delay = chunk_delay
    client, _ = await make_client(upstream_url=fake.index_url)
    assert (await client.get("/simple/follow/")).status == 200
    return client, b"".join(dist.chunks())


async def test_every_follower_of_a_download_gets_the_whole_file_from_its_file(
    fake: FakeUpstream, make_client: MakeClient, sends: list[int]
) -> None:
    client, body = await _cold(fake, make_client, 3 * MiB)
    got = await asyncio.gather(*(_digest(client) for _ in range(20)))
    assert got == [(200, hashlib.sha256(body).hexdigest())] * 20
    assert fake.count(fake.file_path("follow", WHEEL), "GET") == 1
    assert sum(sends) == 20 * len(body)  # all of it went from the file, none through memory
    assert len(sends) > 20  # in several sends each, as it was written


async def test_a_range_of_a_download_in_progress_is_sent_from_its_file(
    fake: FakeUpstream, make_client: MakeClient, sends: list[int]
) -> None:
    client, body = await _cold(fake, make_client, 2 * MiB)
    whole = asyncio.ensure_future(_digest(client))
    while fake.count(fake.file_path("follow", WHEEL), "GET") == 0:  # the download has begun
        await asyncio.sleep(0.01)
    start, end = MiB - 7, MiB + 4096
    async with client.get(PATH, headers={"Range": f"bytes={start}-{end}"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(body)}"
        assert await response.read() == body[start : end + 1]
    assert await whole == (200, hashlib.sha256(body).hexdigest())
    assert sum(sends) == len(body) + (end + 1 - start)


@pytest.mark.parametrize("fault", ["wrong_bytes", "drop_connection", "truncate_files"])
async def test_a_failed_download_never_reaches_a_follower_whole(
    fake: FakeUpstream, make_client: MakeClient, sends: list[int], fault: str
) -> None:
    """The last byte waits for the hash check; a failure aborts every follower's connection,
    so no client takes a part, or wrong bytes, for the file."""
    setattr(fake, fault, True)
    client, body = await _cold(fake, make_client, 2 * MiB, chunk_delay=0.001)

    async def follow() -> int:
        async with client.get(PATH) as response:
            if response.status != 200:
                return response.status
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
            return 200

    outcomes = set(await asyncio.gather(*(follow() for _ in range(5))))
    assert 200 in outcomes and outcomes <= {200, 502, 503}  # 200: the failure came mid-body
    assert sum(sends) < 5 * len(body)
    setattr(fake, fault, False)
    fake.chunk_delay = 0
    assert await _digest(client) == (200, hashlib.sha256(body).hexdigest())


async def test_a_follower_that_goes_away_leaves_the_others_and_the_cache_whole(
    fake: FakeUpstream, make_client: MakeClient, sends: list[int]
) -> None:
    client, body = await _cold(fake, make_client, 4 * MiB)

    async def abandon() -> None:
        response = await client.get(PATH)
        await response.content.readexactly(256 * 1024)
        response.close()

    stays: Callable[[], Awaitable[tuple[int, str]]] = lambda: _digest(client)  # noqa: E731
    results = await asyncio.gather(abandon(), stays(), abandon(), stays())
    assert results[1] == results[3] == (200, hashlib.sha256(body).hexdigest())
    head = await client.head(PATH)
    while head.headers["X-Pyproxy-Cache"] != "hit":
        await asyncio.sleep(0.05)
        head = await client.head(PATH)
    fake.chunk_delay = 0
    assert await _digest(client) == (200, hashlib.sha256(body).hexdigest())
