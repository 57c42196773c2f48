"""HEAD and Range on an upstream file that is not cached yet (web/cold.py, repository/misses.py):
real HTTP against the in-process app and a fake upstream with and without ranges."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.fake_upstream import FakeFile, FakeUpstream

MiB = 1024 * 1024
WHEEL = "cold-1.0-py3-none-any.whl"


def path_of(filename: str = WHEEL) -> str:
    return f"/files/cold/{quote(filename)}"


def body_of(fake: FakeUpstream, dist: FakeFile) -> bytes:
    return b"".join(dist.chunks())


def full_downloads(fake: FakeUpstream, filename: str = WHEEL) -> int:
    """GETs of the file without a Range header."""
    upstream_path = fake.file_path("cold", filename)
    return fake.count(upstream_path, "GET") - sum(1 for p, _ in fake.ranged if p == upstream_path)


async def cache_status(client: TestClient, filename: str = WHEEL) -> str:
    """"hit" or "miss", without starting a download (a cold HEAD starts none)."""
    head = await client.head(path_of(filename))
    assert head.status == 200
    return head.headers["X-Pyproxy-Cache"]


@pytest.fixture
async def json_fake(fake_upstream) -> FakeUpstream:
    return await fake_upstream(formats="json")


async def app_for(make_client, fake: FakeUpstream) -> TestClient:
    client, _ = await make_client(upstream_url=fake.index_url)
    return client


# ------------------------------------------------------------------------------------- HEAD


async def test_cold_head_answers_from_the_page_and_starts_nothing(make_client, json_fake: FakeUpstream) -> None:
    dist = json_fake.add_generated_file("cold", WHEEL, 3 * MiB)
    client = await app_for(make_client, json_fake)
    head = await client.head(path_of())
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == dist.size
    assert head.headers["ETag"] == f'"{dist.sha256}"'
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["X-Pyproxy-Cache"] == "miss"
    await asyncio.sleep(0.1)  # a download started in the background would have asked by now
    assert json_fake.count(json_fake.file_path("cold", WHEEL)) == 0
    assert await cache_status(client) == "miss"


async def test_cold_head_without_a_size_asks_upstream_for_one_byte(make_client, fake_upstream) -> None:
    fake = await fake_upstream(formats="html")  # HTML pages give no size
    fake.serve_ranges = True
    dist = fake.add_generated_file("cold", WHEEL, 300_000)
    client = await app_for(make_client, fake)
    for _ in range(2):  # asked once, then remembered
        head = await client.head(path_of())
        assert head.status == 200
        assert int(head.headers["Content-Length"]) == dist.size
        assert head.headers["Accept-Ranges"] == "bytes"
        assert head.headers["ETag"] == f'"{dist.sha256}"'  # from the URL's #sha256=
    assert fake.ranged == [(fake.file_path("cold", WHEEL), "bytes=-1")]
    assert full_downloads(fake) == 0


async def test_cold_head_and_ranges_from_an_upstream_without_ranges(make_client, fake_upstream) -> None:
    """A host that answers the one-byte range with the whole file tells the size in that
    answer's Content-Length (its body is not read): HEAD has it, ranges are 206 (416 past the
    end), and that host is not asked for a range again."""
    fake = await fake_upstream(formats="html")  # HTML pages give no size
    dist = fake.add_generated_file("cold", WHEEL, 300_000)
    other = fake.add_generated_file("cold", "cold-2.0-py3-none-any.whl", 300_000)
    body = body_of(fake, dist)
    client = await app_for(make_client, fake)
    for _ in range(2):  # asked once, then remembered
        head = await client.head(path_of())
        assert head.status == 200
        assert int(head.headers["Content-Length"]) == dist.size
        assert head.headers["Accept-Ranges"] == "bytes"
    assert fake.ranged == [(fake.file_path("cold", WHEEL), "bytes=-1")]
    past = await client.get(path_of(), headers={"Range": f"bytes={dist.size + 1}-"})
    assert past.status == 416
    assert past.headers["Content-Range"] == f"bytes */{dist.size}"
    for spec, expected in (("bytes=0-99", body[:100]), ("bytes=-100", body[-100:])):
        part = await client.get(path_of(), headers={"Range": spec})
        assert part.status == 206, spec
        assert await part.read() == expected, spec
    assert full_downloads(fake) == 1 and len(fake.ranged) == 1
    head = await client.head(path_of(other.filename))  # no size asked: no Range for that host
    assert "Content-Length" not in head.headers and "Accept-Ranges" not in head.headers
    whole = await client.get(path_of(other.filename), headers={"Range": "bytes=0-9"})
    assert whole.status == 200  # no size known: the whole file
    assert len(fake.ranged) == 1


# ------------------------------------------------------------------------------------ Range


async def test_a_range_is_answered_as_soon_as_the_download_wrote_it(make_client, json_fake: FakeUpstream) -> None:
    """Followers wait only for their bytes; however many ask, one download goes upstream."""
    dist = json_fake.add_generated_file("cold", WHEEL, 2 * MiB)
    body = body_of(json_fake, dist)
    json_fake.chunk_delay = 0.05  # 32 chunks of 64 KiB: the whole takes 1.6 s
    client = await app_for(make_client, json_fake)
    whole = asyncio.create_task(client.get(path_of()))
    first = await client.get(path_of(), headers={"Range": "bytes=0-99"})
    assert first.status == 206
    assert first.headers["Content-Range"] == f"bytes 0-99/{dist.size}"
    assert await first.read() == body[:100]
    second = await client.get(path_of(), headers={"Range": "bytes=70000-70099"})
    assert second.status == 206 and await second.read() == body[70000:70100]
    assert await cache_status(client) == "miss"  # both answered while the download ran
    response = await whole
    assert await response.read() == body
    assert await cache_status(client) == "hit"
    assert full_downloads(json_fake) == 1 and json_fake.ranged == []


async def test_a_range_far_ahead_comes_from_an_upstream_range(make_client, json_fake: FakeUpstream) -> None:
    dist = json_fake.add_generated_file("cold", WHEEL, 4 * MiB)
    body = body_of(json_fake, dist)
    json_fake.serve_ranges = True
    json_fake.chunk_delay = 0.05  # the whole takes 3.2 s
    client = await app_for(make_client, json_fake)
    start, stop = 3 * MiB, 3 * MiB + 16384  # the member a zip's directory points to, say
    part = await client.get(path_of(), headers={"Range": f"bytes={start}-{stop - 1}"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{dist.size}"
    assert await part.read() == body[start:stop]
    assert await cache_status(client) == "miss"
    assert json_fake.ranged == [(json_fake.file_path("cold", WHEEL), f"bytes={start}-{stop - 1}")]
    # the one full download went on: a GET joins it, and then the file is cached
    response = await client.get(path_of())
    assert response.headers["X-Pyproxy-Cache"] == "miss"
    assert await response.read() == body
    assert await cache_status(client) == "hit"
    assert full_downloads(json_fake) == 1


async def test_a_range_with_the_last_byte_waits_for_the_verified_file(make_client, json_fake: FakeUpstream) -> None:
    """The tail (which uv reads first) includes the file's last byte: never from an unverified
    ranged read of upstream, whose bytes nobody checks; it waits for the verified download."""
    dist = json_fake.add_generated_file("cold", WHEEL, 4 * MiB)
    body = body_of(json_fake, dist)
    json_fake.serve_ranges = True
    client = await app_for(make_client, json_fake)
    tail = await client.get(path_of(), headers={"Range": "bytes=-16384"})
    assert tail.status == 206
    assert tail.headers["Content-Range"] == f"bytes {dist.size - 16384}-{dist.size - 1}/{dist.size}"
    assert await tail.read() == body[-16384:]
    assert json_fake.ranged == []  # nothing asked in ranges: from the download
    assert await cache_status(client) == "hit"
    assert full_downloads(json_fake) == 1
    # tampered bytes: the tail never goes out, not even in part
    await make_client.close(client)
    client = await app_for(make_client, json_fake)
    json_fake.wrong_bytes = True
    tail = await client.get(path_of(), headers={"Range": "bytes=-700000"})
    if tail.status == 206:
        with pytest.raises(aiohttp.ClientPayloadError):
            await tail.read()
        assert tail.content.total_bytes == 0  # no byte of it went out
    else:
        assert tail.status == 503
    assert json_fake.ranged == []


async def test_after_a_failed_check_a_whole_file_waits_for_verification(make_client, json_fake: FakeUpstream) -> None:
    """Once a download of the file failed its hash check in this worker, the next one's bytes
    go out only once it is verified: a wrong body again sends nothing."""
    json_fake.add_generated_file("cold", WHEEL, 3 * MiB)
    json_fake.wrong_bytes = True
    client = await app_for(make_client, json_fake)
    for _ in range(2):
        response = await client.get(path_of())
        if response.status == 200:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
            received = response.content.total_bytes
        else:
            assert response.status == 503
            received = 0
        if _ == 0:
            assert received > 0  # the first streams as it comes (its last byte held back)
        else:
            assert received == 0  # after the failure: nothing before verification
    json_fake.wrong_bytes = False
    good = await client.get(path_of())
    assert good.status == 200
    assert await good.read() == body_of(json_fake, json_fake.file("cold", WHEEL))
    assert await cache_status(client) == "hit"


async def test_without_upstream_ranges_a_far_range_waits_for_the_download(make_client, json_fake: FakeUpstream) -> None:
    dist = json_fake.add_generated_file("cold", WHEEL, 3 * MiB)
    other = json_fake.add_generated_file("cold", "cold-2.0-py3-none-any.whl", 3 * MiB)
    body = body_of(json_fake, dist)
    client = await app_for(make_client, json_fake)
    start, stop = 2 * MiB, 2 * MiB + 16384
    wanted = {"Range": f"bytes={start}-{stop - 1}"}
    part = await client.get(path_of(), headers=wanted)
    assert part.status == 206
    assert await part.read() == body[start:stop]
    # asked once for a range (answered with the whole file, not read), and the download
    assert json_fake.count(json_fake.file_path("cold", WHEEL)) == 2
    assert json_fake.ranged == [(json_fake.file_path("cold", WHEEL), f"bytes={start}-{stop - 1}")]
    assert await (await client.get(path_of())).read() == body  # joins the download
    assert await cache_status(client) == "hit"
    # that host is not asked for ranges again for a while
    part = await client.get(path_of(other.filename), headers=wanted)
    assert await part.read() == body_of(json_fake, other)[start:stop]
    assert json_fake.count(json_fake.file_path("cold", other.filename)) == 1
    assert len(json_fake.ranged) == 1


async def test_open_ended_and_suffix_ranges_on_a_cold_file(make_client, json_fake: FakeUpstream) -> None:
    dist = json_fake.add_file("cold", WHEEL, hashlib.sha256(b"x").digest() * 2000)
    body = body_of(json_fake, dist)
    client = await app_for(make_client, json_fake)
    for spec, expected in (("bytes=100-", body[100:]), ("bytes=-10", body[-10:]), ("bytes=5-5", body[5:6])):
        part = await client.get(path_of(), headers={"Range": spec})
        assert part.status == 206, spec
        assert await part.read() == expected, spec
    assert full_downloads(json_fake) == 1


async def test_if_range_on_a_cold_file(make_client, json_fake: FakeUpstream) -> None:
    dist = json_fake.add_generated_file("cold", WHEEL, 200_000)
    body = body_of(json_fake, dist)
    client = await app_for(make_client, json_fake)
    etag = f'"{dist.sha256}"'
    matching = await client.get(path_of(), headers={"Range": "bytes=10-19", "If-Range": etag})
    assert matching.status == 206 and await matching.read() == body[10:20]
    await make_client.close(client)  # cold again: a new app on a new data dir
    client = await app_for(make_client, json_fake)
    for stale in ('"0000"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
        response = await client.get(path_of(), headers={"Range": "bytes=10-19", "If-Range": stale})
        assert response.status == 200, stale
        assert "Content-Range" not in response.headers
        assert await response.read() == body


async def test_an_unsatisfiable_range_on_a_cold_file_is_416_with_the_size(make_client, json_fake: FakeUpstream) -> None:
    dist = json_fake.add_generated_file("cold", WHEEL, 5000)
    client = await app_for(make_client, json_fake)
    for spec in ("bytes=5000-", "bytes=9999-10000", "bytes=-0"):
        response = await client.get(path_of(), headers={"Range": spec})
        assert response.status == 416, spec
        assert response.headers["Content-Range"] == f"bytes */{dist.size}"
    assert json_fake.count(json_fake.file_path("cold", WHEEL)) == 0  # nothing was downloaded


async def test_a_cold_if_none_match_is_not_304(make_client, json_fake: FakeUpstream) -> None:
    """304 says pyproxy holds the file (`pyproxy prefetch` relies on it): not before it does."""
    dist = json_fake.add_generated_file("cold", WHEEL, 5000)
    client = await app_for(make_client, json_fake)
    for method in ("HEAD", "GET"):
        response = await client.request(method, path_of(), headers={"If-None-Match": f'"{dist.sha256}"'})
        assert response.status == 200, method
    assert await response.read() == body_of(json_fake, dist)
    again = await client.get(path_of(), headers={"If-None-Match": f'"{dist.sha256}"'})
    assert again.status == 304  # cached now


# ----------------------------------------------------------------------------- hash failure


async def test_a_body_that_fails_its_hash_never_completes_a_range(make_client, json_fake: FakeUpstream) -> None:
    """The last byte waits for the hash check; after a failure, ranges of the file wait for a
    verified download; nothing is cached."""
    json_fake.add_generated_file("cold", WHEEL, 300_000)
    json_fake.wrong_bytes = True
    client = await app_for(make_client, json_fake)
    for spec in ("bytes=-100", "bytes=0-99"):
        response = await client.get(path_of(), headers={"Range": spec})
        if response.status == 206:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        else:
            assert response.status == 503, (spec, await response.text())
    assert await cache_status(client) == "miss"
    json_fake.wrong_bytes = False
    good = await client.get(path_of(), headers={"Range": "bytes=0-99"})
    assert good.status == 206
    assert await good.read() == body_of(json_fake, json_fake.file("cold", WHEEL))[:100]


async def test_an_upstream_range_of_another_size_is_not_served(make_client, json_fake: FakeUpstream) -> None:
    """The page says one size, upstream's file has another: the range is not taken from
    upstream's ranged answer but from the download (which then fails its check)."""
    dist = json_fake.add_generated_file("cold", WHEEL, 3 * MiB)
    json_fake.serve_ranges = True
    client = await app_for(make_client, json_fake)
    await client.get("/simple/cold/")  # the page (and its size) is read now
    replaced = json_fake.add_generated_file("cold", WHEEL, 3 * MiB + 1)  # replaced, same name
    start = 2 * MiB
    response = await client.get(path_of(), headers={"Range": f"bytes={start}-{start + 99}"})
    if response.status == 206:  # from the download's file, if it got there before failing
        with contextlib.suppress(aiohttp.ClientPayloadError):
            assert await response.read() == body_of(json_fake, replaced)[start:start + 100]
    else:
        assert response.status == 503
    assert len(json_fake.ranged) == 1  # asked, and not served
    assert dist.size == 3 * MiB
    assert await cache_status(client) == "miss"  # nothing of another size is cached
