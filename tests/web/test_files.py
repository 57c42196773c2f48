"""File and PEP 658 metadata downloads over real HTTP (SIMPLE-API.md sections E and F)."""

from __future__ import annotations

import email.utils
import hashlib
import json
import zipfile
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from pyproxy.settings import Settings
from tests.conftest import Seed, seeded_settings
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
WHEEL_10 = "foo_bar-1.0-py3-none-any.whl"
SDIST_10 = "foo_bar-1.0.tar.gz"
WHEEL_LOCAL = "foo_bar-2.1+local-py3-none-any.whl"
IMMUTABLE = "max-age=365000000, immutable"
ORIGIN = {"Origin": "https://example.org"}


@pytest.fixture
def settings(seed: Seed, tmp_path: Path) -> Settings:
    return seeded_settings(seed, tmp_path)


def file_path(filename: str, project: str = "foo-bar") -> str:
    return f"/files/{project}/{quote(filename)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        [member] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(member)


async def listed_files(client: TestClient) -> dict[str, dict]:
    response = await client.get("/simple/foo-bar/", headers={"Accept": JSON})
    assert response.status == 200
    return {entry["filename"]: entry for entry in json.loads(await response.read())["files"]}


def local(client: TestClient, url: str) -> str:
    parts = urlsplit(url)
    assert parts.netloc == urlsplit(str(client.make_url("/"))).netloc  # 71: same origin
    return parts.path


# ------------------------------------------------------------------------ E. .metadata


@pytest.mark.parametrize("filename", [WHEEL_10, WHEEL_LOCAL])
async def test_e47_e48_e50_metadata_is_the_wheels_own(client: TestClient, seed: Seed, filename: str) -> None:
    """47: F.metadata is the wheel's METADATA byte for byte; 48: its sha256 is the one
    advertised; 50: the URL is the file URL (no query, no fragment) + ".metadata"."""
    entry = (await listed_files(client))[filename]
    assert urlsplit(entry["url"]).query == "" and urlsplit(entry["url"]).fragment == ""
    response = await client.get(local(client, entry["url"] + ".metadata"), headers=ORIGIN)
    assert response.status == 200
    body = await response.read()
    assert body == wheel_metadata(seed.path(filename))
    assert entry["core-metadata"] == {"sha256": sha256(body)}
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert "Content-Encoding" not in response.headers


async def test_e49_metadata_name_matches_project(client: TestClient) -> None:
    """49: pip's MetadataInconsistent check: METADATA Name canonicalises to the project."""
    from email.parser import BytesParser

    from packaging.utils import canonicalize_name

    body = await (await client.get(file_path(WHEEL_10) + ".metadata")).read()
    message = BytesParser().parsebytes(body)
    assert canonicalize_name(message["Name"]) == "foo-bar"
    assert message["Version"] == "1.0"


async def test_e47_sdist_has_no_metadata(client: TestClient) -> None:
    entry = (await listed_files(client))[SDIST_10]
    assert "core-metadata" not in entry or entry["core-metadata"] is False
    response = await client.get(file_path(SDIST_10) + ".metadata", headers=ORIGIN)
    assert response.status == 404
    assert response.headers.get("Access-Control-Allow-Origin") == "*"


async def test_metadata_head_and_conditional(client: TestClient) -> None:
    path = file_path(WHEEL_10) + ".metadata"
    first = await client.get(path)
    body = await first.read()
    head = await client.head(path)
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(body)
    etag = head.headers["ETag"]
    cached = await client.get(path, headers={"If-None-Match": etag})
    assert cached.status == 304


# ------------------------------------------------------------------------ F. downloads


@pytest.mark.parametrize("filename", [WHEEL_10, SDIST_10, WHEEL_LOCAL])
async def test_f53_bytes_match_advertised_sha256(client: TestClient, seed: Seed, filename: str) -> None:
    entry = (await listed_files(client))[filename]
    response = await client.get(local(client, entry["url"]), headers=ORIGIN)
    assert response.status == 200
    body = await response.read()
    assert sha256(body) == entry["hashes"]["sha256"] == sha256(seed.path(filename).read_bytes())
    assert int(response.headers["Content-Length"]) == len(body) == entry["size"]
    assert response.headers.get("Access-Control-Allow-Origin") == "*"  # 72


@pytest.mark.parametrize("accept_encoding", ["gzip", "gzip, deflate, br", "zstd, gzip, deflate"])
async def test_f54_no_content_encoding(client: TestClient, seed: Seed, accept_encoding: str) -> None:
    for path, expected in (
        (file_path(WHEEL_10), seed.path(WHEEL_10).read_bytes()),
        (file_path(WHEEL_10) + ".metadata", wheel_metadata(seed.path(WHEEL_10))),
    ):
        response = await client.get(path, headers={"Accept-Encoding": accept_encoding}, auto_decompress=False)
        assert response.status == 200
        assert "Content-Encoding" not in response.headers
        assert await response.read() == expected


@pytest.mark.parametrize("filename", [WHEEL_10, SDIST_10])
async def test_f55_head(client: TestClient, seed: Seed, filename: str) -> None:
    size = seed.path(filename).stat().st_size
    response = await client.head(file_path(filename))
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == size
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers.get("ETag") or response.headers.get("Last-Modified")
    assert response.headers["ETag"] == f'"{sha256(seed.path(filename).read_bytes())}"'
    assert await response.read() == b""


@pytest.mark.parametrize(("start", "end"), [(0, 0), (0, 99), (10, 20), (100, 10**9)])
async def test_f56_single_range(client: TestClient, seed: Seed, start: int, end: int) -> None:
    """56: bytes=a-b -> 206 with the slice and Content-Range (end clipped to the size)."""
    data = seed.path(WHEEL_10).read_bytes()
    total = len(data)
    response = await client.get(
        file_path(WHEEL_10), headers={"Range": f"bytes={start}-{end}", "Cache-Control": "no-cache"}
    )
    assert response.status == 206
    last = min(end, total - 1)
    assert response.headers["Content-Range"] == f"bytes {start}-{last}/{total}"
    body = await response.read()
    assert body == data[start : last + 1]
    assert int(response.headers["Content-Length"]) == len(body)


@pytest.mark.parametrize("suffix", [1, 22, 100, 10**9])
async def test_f57_suffix_range(client: TestClient, seed: Seed, suffix: int) -> None:
    """57: poetry's lazy wheel asks for the last N bytes first."""
    data = seed.path(WHEEL_10).read_bytes()
    total = len(data)
    response = await client.get(file_path(WHEEL_10), headers={"Range": f"bytes=-{suffix}"})
    assert response.status == 206
    first = max(total - suffix, 0)
    assert response.headers["Content-Range"] == f"bytes {first}-{total - 1}/{total}"
    assert await response.read() == data[first:]


async def test_f56_open_ended_range(client: TestClient, seed: Seed) -> None:
    """pip --resume-retries: bytes=N-."""
    data = seed.path(WHEEL_10).read_bytes()
    total = len(data)
    response = await client.get(file_path(WHEEL_10), headers={"Range": "bytes=100-"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 100-{total - 1}/{total}"
    assert await response.read() == data[100:]


@pytest.mark.parametrize("spec", ["bytes={total}-", "bytes={total}-{beyond}", "bytes=-0"])
async def test_f58_unsatisfiable_range(client: TestClient, seed: Seed, spec: str) -> None:
    total = seed.path(WHEEL_10).stat().st_size
    response = await client.get(
        file_path(WHEEL_10), headers={**ORIGIN, "Range": spec.format(total=total, beyond=total + 10)}
    )
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{total}"
    assert response.headers.get("Access-Control-Allow-Origin") == "*"


async def test_f_multiple_ranges_may_be_ignored(client: TestClient, seed: Seed) -> None:
    """RFC 9110 allows ignoring a multi-range request: then the full body with 200."""
    data = seed.path(WHEEL_10).read_bytes()
    response = await client.get(file_path(WHEEL_10), headers={"Range": "bytes=0-1,5-6"})
    assert response.status in (200, 206)
    if response.status == 200:
        assert await response.read() == data
    else:
        assert response.headers["Content-Type"].startswith("multipart/byteranges")


async def test_f59_if_range(client: TestClient, seed: Seed) -> None:
    """59: If-Range with the current ETag -> 206; with another ETag or an old date -> 200 and
    the whole file; with the current Last-Modified -> 206."""
    data = seed.path(WHEEL_10).read_bytes()
    total = len(data)
    head = await client.head(file_path(WHEEL_10))
    etag = head.headers["ETag"]
    last_modified = head.headers.get("Last-Modified")

    async def ranged(if_range: str):
        return await client.get(file_path(WHEEL_10), headers={"Range": "bytes=10-19", "If-Range": if_range})

    matching = await ranged(etag)
    assert matching.status == 206
    assert matching.headers["Content-Range"] == f"bytes 10-19/{total}"
    assert await matching.read() == data[10:20]

    for stale in ('"0000000000000000"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
        response = await ranged(stale)
        assert response.status == 200, stale
        assert "Content-Range" not in response.headers
        assert await response.read() == data

    if last_modified:
        by_date = await ranged(last_modified)
        assert by_date.status == 206
        assert await by_date.read() == data[10:20]


@pytest.mark.parametrize(
    "if_range",
    [
        "garbage date",
        "Mon, 32 Jan 2001 00:00:00 GMT",  # a date that does not exist
        "Mon, 01 Jan 99999 00:00:00 GMT",  # a year datetime cannot hold
        "Mon, 01 Jan 2001 99:00:00 GMT",
        "1",
        "W/",
    ],
)
async def test_f59_an_if_range_that_is_neither_tag_nor_date_sends_the_whole_file(
    client: TestClient, seed: Seed, if_range: str
) -> None:
    """RFC 9110 13.1.5: an If-Range that does not match, which one that cannot be read never
    does, means the whole file with 200; never a 500. Asked twice: once read from disk, once
    held in memory."""
    data = seed.path(WHEEL_10).read_bytes()
    for _ in range(2):
        response = await client.get(
            file_path(WHEEL_10), headers={"Range": "bytes=0-5", "If-Range": if_range}
        )
        assert response.status == 200, await response.text()
        assert "Content-Range" not in response.headers
        assert await response.read() == data


@pytest.mark.parametrize("header", ["If-Modified-Since", "If-Unmodified-Since"])
@pytest.mark.parametrize("value", ["garbage date", "Mon, 01 Jan 99999 00:00:00 GMT"])
async def test_unreadable_date_conditions_are_ignored(
    client: TestClient, seed: Seed, header: str, value: str
) -> None:
    """Files are immutable: pyproxy answers date conditions as if absent (RFC 9110 lets a
    server ignore a date it cannot parse), ranged or not."""
    data = seed.path(WHEEL_10).read_bytes()
    whole = await client.get(file_path(WHEEL_10), headers={header: value})
    assert whole.status == 200 and await whole.read() == data
    ranged = await client.get(file_path(WHEEL_10), headers={header: value, "Range": "bytes=0-5"})
    assert ranged.status == 206 and await ranged.read() == data[:6]


async def test_f_if_none_match_304(client: TestClient, seed: Seed) -> None:
    etag = f'"{sha256(seed.path(WHEEL_10).read_bytes())}"'
    response = await client.get(file_path(WHEEL_10), headers={**ORIGIN, "If-None-Match": etag})
    assert response.status == 304
    assert response.headers["ETag"] == etag
    assert await response.read() == b""
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    other = await client.get(file_path(WHEEL_10), headers={"If-None-Match": '"other"'})
    assert other.status == 200


@pytest.mark.parametrize("suffix", ["", ".metadata"])
async def test_f61_immutable_cache_control(client: TestClient, suffix: str) -> None:
    response = await client.get(file_path(WHEEL_10) + suffix)
    assert response.status == 200
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert "Date" in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/files/foo-bar/foo_bar-9.9-py3-none-any.whl",
        "/files/foo-bar/foo_bar-9.9-py3-none-any.whl.metadata",
        "/files/nope/nope-1.0-py3-none-any.whl",
        "/files/holygrail/foo_bar-1.0-py3-none-any.whl",  # a real file, under another project
    ],
)
async def test_unknown_file_404(client: TestClient, path: str) -> None:
    response = await client.get(path, headers=ORIGIN)
    assert response.status == 404
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert response.headers.get("Cache-Control") != IMMUTABLE  # a 404 must not be cached for ever


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/files/foo-bar/"), ("GET", "/files/foo-bar"), ("GET", "/no/such/path"), ("HEAD", "/no/such/path")],
)
async def test_unknown_path_404_not_405(client: TestClient, method: str, path: str) -> None:
    """A path that names nothing is 404; 405 would claim the resource exists (and uv publish
    reads a 405 as "this is the simple index URL")."""
    response = await client.request(method, path, headers=ORIGIN, allow_redirects=False)
    assert response.status == 404, (response.status, response.headers.get("Allow"))
    assert response.headers.get("Access-Control-Allow-Origin") == "*"


async def test_removed_file_404(client: TestClient, services) -> None:
    from packaging.utils import canonicalize_name

    services.private.remove(canonicalize_name("foo-bar"), "1.0", forget_name=False)
    for path in (file_path(WHEEL_10), file_path(WHEEL_10) + ".metadata", file_path(SDIST_10)):
        response = await client.get(path)
        assert response.status == 404, path


async def test_last_modified_is_http_date(client: TestClient) -> None:
    response = await client.head(file_path(WHEEL_10))
    if "Last-Modified" in response.headers:
        assert email.utils.parsedate_to_datetime(response.headers["Last-Modified"]) is not None


# ------------------------------------------------------------------------ X-Pyproxy-Cache


@pytest.mark.parametrize("suffix", ["", ".metadata"])
async def test_cache_status_hit_for_a_file_on_disk(client: TestClient, seed: Seed, suffix: str) -> None:
    """A private file (any LocalFile) is "hit"; `pyproxy prefetch` counts it as already cached."""
    response = await client.get(file_path(WHEEL_10) + suffix)
    assert response.status == 200
    assert response.headers["X-Pyproxy-Cache"] == "hit"
    etag = response.headers["ETag"]
    conditional = await client.get(file_path(WHEEL_10) + suffix, headers={"If-None-Match": etag})
    assert conditional.status == 304
    assert conditional.headers["X-Pyproxy-Cache"] == "hit"


async def test_cache_status_miss_while_streaming_from_upstream_then_hit(make_client, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dists", "up-stream", "1.0")
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("up-stream", wheel.name, wheel.read_bytes(), metadata=wheel_metadata(wheel))
        client, _ = await make_client(upstream_url=fake.index_url)
        first = await client.get(file_path(wheel.name, "up-stream"))
        assert first.status == 200
        assert first.headers["X-Pyproxy-Cache"] == "miss"
        assert await first.read() == wheel.read_bytes()
        second = await client.get(file_path(wheel.name, "up-stream"))
        assert second.status == 200
        assert second.headers["X-Pyproxy-Cache"] == "hit"
        assert await second.read() == wheel.read_bytes()
        assert fake.count(fake.file_path("up-stream", wheel.name)) == 1


@pytest.mark.parametrize("size", [3000, 600_000])  # read with its open / sent with sendfile
async def test_a_cached_file_whole_and_by_range(make_client, size: int) -> None:
    body = hashlib.sha256(b"seed").digest() * (size // 32)
    filename = "sized-1.0-py3-none-any.whl"
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("sized", filename, body)
        client, _ = await make_client(upstream_url=fake.index_url)
        assert await (await client.get(file_path(filename, "sized"))).read() == body  # a miss
        whole = await client.get(file_path(filename, "sized"))
        assert whole.headers["X-Pyproxy-Cache"] == "hit"
        assert int(whole.headers["Content-Length"]) == len(body)
        assert await whole.read() == body
        for spec, expected in ((f"bytes=100-{len(body) - 101}", body[100:-100]),
                               ("bytes=-1000", body[-1000:]), ("bytes=7-7", body[7:8])):
            part = await client.get(file_path(filename, "sized"), headers={"Range": spec})
            assert part.status == 206
            assert await part.read() == expected
        head = await client.head(file_path(filename, "sized"))
        assert int(head.headers["Content-Length"]) == len(body) and await head.read() == b""
        assert fake.count(fake.file_path("sized", filename)) == 1
