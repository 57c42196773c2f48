"""`.metadata` for upstream wheels whose index offers none (repository/wheel_metadata.py), made
through the real upstream repository against the FakeUpstream, counting what it is asked."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from pyproxy.formats import wheel_zip
from pyproxy.model import (
    DistFile,
    LocalFile,
    NormalizedName,
    OpenedFile,
    Origin,
    ProjectPage,
    RemoteFile,
    Unavailable,
)
from pyproxy.repository import wheel_metadata
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.repository.wheel_metadata import Marked, offer_made
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageStore
from tests.conftest import MakeClient
from tests.dists import core_metadata, make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream

PROJECT = NormalizedName("demo-pkg")
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SDIST = "demo_pkg-1.0.tar.gz"
META = core_metadata("demo-pkg", "1.0", requires_dist=["attrs>=22"], summary="Made from the wheel")

TAIL = f"bytes=-{wheel_zip.TAIL_BYTES}"

MakeRepo = Callable[..., UpstreamRepository]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(formats="json") as upstream:
        upstream.offer_metadata = False
        yield upstream


@pytest.fixture
async def make_repo(tmp_path: Path) -> AsyncIterator[MakeRepo]:
    made: list[UpstreamRepository] = []

    def make(index_url: str, *, files: Path | None = None) -> UpstreamRepository:
        repo = UpstreamRepository(
            UpstreamClient(index_url, timeout=5.0),
            PageStore(tmp_path / f"pages{len(made)}"),
            BlobCache(files or tmp_path / f"files{len(made)}", 2**30),
            page_ttl=600.0,
            index_ttl=600.0,
        )
        made.append(repo)
        return repo

    yield make
    for repo in made:
        await repo.close()


def _big_wheel(directory: Path, size: int = 5 * 1024 * 1024, *, metadata_last: bool = True) -> bytes:
    """A wheel of some `size` bytes that do not compress; its dist-info last, as usual, or first."""
    info = [("demo_pkg-1.0.dist-info/METADATA", META),
            ("demo_pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")]
    modules = [("demo_pkg/__init__.py", b""), ("demo_pkg/data.bin", random.Random(7).randbytes(size))]
    members = [*modules, *info] if metadata_last else [*info, *modules]
    path = directory / f"wheel-{size}-{metadata_last}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [*members, ("demo_pkg-1.0.dist-info/RECORD", b"")]:
            archive.writestr(name, data)
    return path.read_bytes()


def _stored_metadata_wheel(metadata: bytes) -> bytes:
    """A wheel whose METADATA is stored (not compressed), all else fixed: two of them with
    METADATA of one length have every member at the same offset."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data, method in [
            ("demo_pkg/data.bin", random.Random(7).randbytes(300_000), zipfile.ZIP_DEFLATED),
            ("demo_pkg-1.0.dist-info/METADATA", metadata, zipfile.ZIP_STORED),
            ("demo_pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
             zipfile.ZIP_STORED),
            ("demo_pkg-1.0.dist-info/RECORD", b"", zipfile.ZIP_STORED),
        ]:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, method)
    return out.getvalue()


async def _read(opened: OpenedFile) -> bytes:
    source = await opened.whole() if isinstance(opened, RemoteFile) else opened  # a miss
    if isinstance(source, LocalFile):
        return source.path.read_bytes()
    return b"".join([chunk async for chunk in source.chunks])


def _file_requests(fake: FakeUpstream, filename: str = WHEEL) -> int:
    return fake.count(fake.file_path(PROJECT, filename))


async def test_offered_for_upstream_wheels_only(fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path) -> None:
    fake.add_file(PROJECT, WHEEL, make_wheel(tmp_path, "demo-pkg", "1.0", metadata=META).read_bytes())
    fake.add_file(PROJECT, SDIST, b"sdist")
    fake.add_file(PROJECT, "demo_pkg-0.9-py3-none-any.whl", b"...", metadata=META)  # offered upstream
    fake.offer_metadata = True
    fake.file(PROJECT, WHEEL).metadata = None
    page = await make_repo(fake.index_url).project_page(PROJECT)
    wheel, sdist, offered = (page.file(n) for n in (WHEEL, SDIST, "demo_pkg-0.9-py3-none-any.whl"))
    assert wheel is not None and wheel.core_metadata is True and wheel.metadata_from_wheel
    assert sdist is not None and sdist.core_metadata is False
    assert offered is not None and not offered.metadata_from_wheel
    assert offered.core_metadata == {"sha256": hashlib.sha256(META).hexdigest()}


async def test_a_cold_5mb_wheel_in_two_small_ranges(fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path) -> None:
    fake.serve_ranges = True
    body = _big_wheel(tmp_path)
    assert len(body) > 5_000_000
    fake.add_file(PROJECT, WHEEL, body)
    repo = make_repo(fake.index_url)
    before = await repo.project_page(PROJECT)
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META  # byte-exact
    ranges = fake.ranges_of(fake.file_path(PROJECT, WHEEL))
    assert ranges == [TAIL]  # METADATA is near the end: the tail held it
    assert _file_requests(fake) == len(ranges)  # no full download
    # kept, but not offered with its hash: ranges come with none, the wheel is not verified
    after = await repo.project_page(PROJECT)
    dist = after.file(WHEEL)
    assert dist is not None and dist.core_metadata is True
    fake.reset_counters()
    again = await repo.open_metadata(PROJECT, WHEEL)
    assert isinstance(again, LocalFile) and again.path.read_bytes() == META
    assert fake.total == 0
    # once the wheel is: made from it, and offered with its hash
    await _read(await repo.open_file(PROJECT, WHEEL))
    await asyncio.sleep(0.05)  # committed
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META
    verified = await repo.project_page(PROJECT)
    dist = verified.file(WHEEL)
    assert dist is not None and dist.core_metadata == {"sha256": hashlib.sha256(META).hexdigest()}
    assert verified.revision != before.revision
    assert _file_requests(fake) == 1  # the wheel's one download


async def test_metadata_far_from_the_tail_takes_one_more_range(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fake.serve_ranges = True
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, metadata_last=False))
    repo = make_repo(fake.index_url)
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META
    ranges = fake.ranges_of(fake.file_path(PROJECT, WHEEL))
    assert len(ranges) == 2 and ranges[0] == TAIL and ranges[1].startswith("bytes=0-")
    assert _file_requests(fake) == 2


async def test_from_the_cached_wheel_without_asking_upstream(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 300_000))
    repo = make_repo(fake.index_url)
    await _read(await repo.open_file(PROJECT, WHEEL))
    await asyncio.sleep(0.05)  # committed
    fake.reset_counters()
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META
    assert fake.total == 0


@pytest.mark.parametrize("ranges", ["not done", "failing"])
async def test_without_ranges_the_one_whole_download(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, ranges: str
) -> None:
    if ranges == "failing":
        fake.serve_ranges, fake.range_status = True, 500
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 300_000))
    repo = make_repo(fake.index_url)
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META
    assert fake.ranges_of(fake.file_path(PROJECT, WHEEL)) == [TAIL]
    # answered whole, the range is the one download; a failed one is followed by it
    assert _file_requests(fake) == (1 if ranges == "not done" else 2)
    fake.reset_counters()
    wheel = await repo.open_file(PROJECT, WHEEL)  # the wheel itself is cached now
    assert isinstance(wheel, LocalFile)
    assert fake.total == 0


async def test_a_host_that_answers_ranges_whole_is_not_asked_for_ranges_again(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path
) -> None:
    other = "demo_pkg-1.0-py311-none-any.whl"  # its METADATA says 1.0, as the wheel's name must
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 300_000))
    fake.add_file(PROJECT, other, _big_wheel(tmp_path, 200_000))
    repo = make_repo(fake.index_url)
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META
    assert fake.ranges_of(fake.file_path(PROJECT, WHEEL)) == [TAIL]  # learnt: no ranges there
    assert (await _read(await repo.open_metadata(PROJECT, other))) == META
    assert fake.ranges_of(fake.file_path(PROJECT, other)) == []
    assert _file_requests(fake, other) == 1  # the one whole download, no round trip before it


@pytest.mark.parametrize("ranges", [True, False])
async def test_the_warm_ups_size_question_is_the_tail_the_making_reads(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, ranges: bool
) -> None:
    # an HTML page gives no size, which the warm-up needs (it reads no wheel over its limit
    # whole): the tail request tells it, and what it brought is used, not asked for again
    fake.formats, fake.serve_ranges = "html", ranges
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 300_000))
    repo = make_repo(fake.index_url)
    limit = wheel_metadata.WHOLE_WHEEL_LIMIT.set(10**6)
    try:
        assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META
    finally:
        wheel_metadata.WHOLE_WHEEL_LIMIT.reset(limit)
    path = fake.file_path(PROJECT, WHEEL)
    assert fake.count(path, "HEAD") == 0
    assert fake.ranges_of(path) == [TAIL]  # the tail held METADATA; or it was the wheel itself
    assert fake.count(path, "GET") == 1
    fake.reset_counters()
    wheel = await repo.open_file(PROJECT, WHEEL)
    assert isinstance(wheel, LocalFile) is (not ranges)  # the answer of the whole was kept
    assert fake.total == 0


async def _warm(repo: UpstreamRepository, filename: str = WHEEL, limit: int = 10**6) -> bytes:
    """The `.metadata` as the warm-up asks for it (a limit on what it may read whole)."""
    token = wheel_metadata.WHOLE_WHEEL_LIMIT.set(limit)
    try:
        return await _read(await repo.open_metadata(PROJECT, filename))
    finally:
        wheel_metadata.WHOLE_WHEEL_LIMIT.reset(token)


@pytest.mark.parametrize("ranges", [False, True])
async def test_two_workers_warming_one_wheel_download_it_once(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, ranges: bool
) -> None:
    """Two workers (each its repository and blob cache, on one cache directory: the part files'
    locks are per open file, as between processes) warm the same wheel of an HTML page (no size)
    at once: the tail request is asked inside the wheel's single flight, so a host that answers
    it with the whole wheel sends it once, and the other worker reads that download."""
    fake.formats, fake.serve_ranges = "html", ranges
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 600_000))
    fake.chunk_delay = 0.02  # the download takes a while: the other worker comes meanwhile
    workers = [make_repo(fake.index_url, files=tmp_path / "shared") for _ in range(2)]
    for repo in workers:
        await repo.project_page(PROJECT)  # each has the page (and knows nothing of the host)
    assert await asyncio.gather(*(_warm(repo) for repo in workers)) == [META, META]
    path = fake.file_path(PROJECT, WHEEL)
    if not ranges:
        assert fake.count(path, "GET") == 1, fake.ranges_of(path)  # one whole answer, kept
    else:  # ranges of the tail (one each at most), and no download
        assert fake.count(path, "GET") == len(fake.ranges_of(path)) <= 2
    for repo in workers:
        await repo.blobs.idle()
    fake.reset_counters()
    if not ranges:  # the wheel itself was cached by that one download
        assert all([isinstance(await repo.open_file(PROJECT, WHEEL), LocalFile) for repo in workers])
    assert fake.total == 0


async def test_a_wheel_another_worker_is_downloading_is_not_asked_for(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """A client's download of the wheel runs in one worker; the other, making the `.metadata`,
    reads it from that download instead of asking upstream for the tail."""
    fake.formats, fake.serve_ranges = "html", True
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 600_000))
    fake.chunk_delay = 0.02
    first, second = (make_repo(fake.index_url, files=tmp_path / "shared") for _ in range(2))
    download = await first.open_file(PROJECT, WHEEL)
    assert isinstance(download, RemoteFile)
    whole = await download.whole()  # under way
    assert (await _read(await second.open_metadata(PROJECT, WHEEL))) == META
    assert not isinstance(whole, LocalFile)
    assert b"".join([chunk async for chunk in whole.chunks]) == fake.file(PROJECT, WHEEL).body
    path = fake.file_path(PROJECT, WHEEL)
    assert fake.count(path, "GET") == 1 and fake.ranges_of(path) == []


async def test_the_warm_up_asks_a_host_known_to_refuse_ranges_for_none(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Learnt from one wheel, the refusal holds for the next ones: the warm-up's size question
    is a plain GET (whose answer is the download), and the refusal is logged once."""
    fake.formats = "html"  # no sizes, no ranges
    others = [f"demo_pkg-1.0-py3{i}-none-any.whl" for i in range(3)]
    big = "demo_pkg-1.0-py39-none-any.whl"
    for i, filename in enumerate((WHEEL, *others, big)):  # each its own bytes (and blob key)
        fake.add_file(PROJECT, filename, _big_wheel(tmp_path, 300_000 + i))
    repo = make_repo(fake.index_url)
    caplog.set_level("INFO", "pyproxy.upstream")
    assert await _warm(repo) == META
    assert fake.ranges_of(fake.file_path(PROJECT, WHEEL)) == [TAIL]
    for filename in others:
        assert await _warm(repo, filename) == META
        path = fake.file_path(PROJECT, filename)
        assert fake.ranges_of(path) == [] and fake.count(path, "GET") == 1, filename
    told = [r for r in caplog.records if "answers ranges with the whole file" in r.getMessage()]
    assert len(told) == 1
    # a wheel over the limit is dropped unread, and not asked in ranges either
    with pytest.raises(wheel_metadata.TooBigToWarm):
        await _warm(repo, big, limit=200_000)
    assert fake.ranges_of(fake.file_path(PROJECT, big)) == []


async def test_concurrent_requests_make_it_once(fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path) -> None:
    fake.serve_ranges = True
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 1_000_000))
    repo = make_repo(fake.index_url)
    sources = await asyncio.gather(*(repo.open_metadata(PROJECT, WHEEL) for _ in range(8)))
    assert [await _read(source) for source in sources] == [META] * 8
    assert _file_requests(fake) == 1


async def test_another_worker_made_it(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel_metadata, "_RECHECK_S", 0.0)  # each page asks the cache anew
    fake.serve_ranges = True
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 300_000))
    first = make_repo(fake.index_url, files=tmp_path / "shared")
    second = make_repo(fake.index_url, files=tmp_path / "shared")
    await _read(await first.open_metadata(PROJECT, WHEEL))
    await asyncio.sleep(0.05)
    await second.project_page(PROJECT)
    fake.reset_counters()
    made = await second.open_metadata(PROJECT, WHEEL)
    assert isinstance(made, LocalFile) and made.path.read_bytes() == META
    assert fake.total == 0
    await _read(await first.open_file(PROJECT, WHEEL))  # verified: made anew, with its hash
    await _read(await first.open_metadata(PROJECT, WHEEL))
    await asyncio.sleep(0.05)
    dist = (await second.project_page(PROJECT)).file(WHEEL)
    assert dist is not None and dist.core_metadata == {"sha256": hashlib.sha256(META).hexdigest()}


async def test_ranges_of_other_bytes_than_the_file_never_outlast_its_verified_download(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host whose ranges are cut from another wheel (of the same length, naming one more
    dependency): what they give is served while it is all there is, never with a hash; once
    the wheel is downloaded and verified, its own METADATA is, with its hash, on every worker."""
    fake.serve_ranges = True
    forged_meta = META.replace(b"attrs>=22", b"evil-dep1")  # the same length: the same layout
    body, forged = _stored_metadata_wheel(META), _stored_metadata_wheel(forged_meta)
    assert len(forged) == len(body) and forged != body
    fake.add_file(PROJECT, WHEEL, body)
    fake.ranges_from[fake.file_path(PROJECT, WHEEL)] = forged
    first = make_repo(fake.index_url, files=tmp_path / "shared")
    second = make_repo(fake.index_url, files=tmp_path / "shared")
    assert await _read(await first.open_metadata(PROJECT, WHEEL)) == forged_meta  # all there is
    assert (await first.project_page(PROJECT)).file(WHEEL).core_metadata is True  # type: ignore[union-attr]
    assert await _read(await first.open_file(PROJECT, WHEEL)) == body  # verified, cached
    await asyncio.sleep(0.05)
    with caplog.at_level("WARNING", logger="pyproxy.upstream.metadata"):
        assert await _read(await first.open_metadata(PROJECT, WHEEL)) == META
    assert "gave another METADATA than the verified wheel" in caplog.text
    for repo in (first, second):
        assert await _read(await repo.open_metadata(PROJECT, WHEEL)) == META
        dist = (await repo.project_page(PROJECT)).file(WHEEL)
        assert dist is not None and dist.core_metadata == {"sha256": hashlib.sha256(META).hexdigest()}
    assert _file_requests(fake) == 2  # the tail, then the wheel's one download


@pytest.mark.parametrize("ranges", [True, False])
@pytest.mark.parametrize("kind", ["no METADATA", "corrupt zip"])
async def test_an_unusable_wheel_gets_an_empty_body(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, ranges: bool, kind: str
) -> None:
    fake.serve_ranges = ranges
    if kind == "no METADATA":
        body = make_wheel(tmp_path, "demo-pkg", "1.0", omit=("METADATA",)).read_bytes()
    else:
        body = random.Random(5).randbytes(200_000)
    fake.add_file(PROJECT, WHEEL, body)
    repo = make_repo(fake.index_url)
    before = await repo.project_page(PROJECT)
    assert await _read(await repo.open_metadata(PROJECT, WHEEL)) == b""  # see _UNUSABLE
    # judged on the verified wheel: ranges that find nothing are followed by the one download;
    # a range answered whole is that download
    path = fake.file_path(PROJECT, WHEEL)
    assert fake.count(path, "GET") - len(fake.ranges_of(path)) == (1 if ranges else 0)
    after = await repo.project_page(PROJECT)
    assert after == before  # still offered, with no hash
    fake.reset_counters()
    assert await _read(await repo.open_metadata(PROJECT, WHEEL)) == b""  # known: nothing read
    assert isinstance(await repo.open_file(PROJECT, WHEEL), LocalFile)
    assert fake.total == 0


async def test_an_unreachable_wheel_is_unavailable_and_still_offered(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fake.add_file(PROJECT, WHEEL, _big_wheel(tmp_path, 300_000))
    fake.fail_paths[fake.file_path(PROJECT, WHEEL)] = 500
    repo = make_repo(fake.index_url)
    with pytest.raises(Unavailable):
        await repo.open_metadata(PROJECT, WHEEL)
    dist = (await repo.project_page(PROJECT)).file(WHEEL)
    assert dist is not None and dist.core_metadata is True
    del fake.fail_paths[fake.file_path(PROJECT, WHEEL)]
    assert (await _read(await repo.open_metadata(PROJECT, WHEEL))) == META


def test_a_new_hash_remarks_only_its_wheel() -> None:
    wheels = [f"demo_pkg-1.{i}-py3-none-any.whl" for i in range(3)]
    page = ProjectPage.build(PROJECT, tuple(
        DistFile(name, {}, origin=Origin.UPSTREAM, upstream_url=f"http://u/{name}") for name in wheels
    ), revision="u1")
    first = offer_made(page, {})
    made = {wheels[1]: "ab" * 32}
    second = offer_made(page, made, before=Marked(first, {}))
    assert second == offer_made(page, made)  # the same page, built from the earlier one
    assert second.revision != first.revision
    kept, remarked, also_kept = (second.file(name) for name in wheels)
    assert kept is first.file(wheels[0]) and also_kept is first.file(wheels[2])
    assert remarked is not None and remarked.core_metadata == {"sha256": "ab" * 32}


async def test_a_recheck_that_finds_nothing_new_keeps_the_marked_page(
    fake: FakeUpstream, make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_file(PROJECT, WHEEL, make_wheel(tmp_path, "demo-pkg", "1.0", metadata=META).read_bytes())
    repo = make_repo(fake.index_url)
    first = await repo.project_page(PROJECT)
    monkeypatch.setattr(wheel_metadata, "_RECHECK_S", 0.0)  # every request asks the cache again
    assert await repo.project_page(PROJECT) is first  # nothing made since: not marked again
    await _read(await repo.open_metadata(PROJECT, WHEEL))
    marked = (await repo.project_page(PROJECT)).file(WHEEL)
    assert marked is not None and marked.core_metadata == {"sha256": hashlib.sha256(META).hexdigest()}


class _Counted:
    """The blob cache's `sizes`, counted: how many queries, for how many keys."""

    def __init__(self, blobs: BlobCache) -> None:
        self.calls: list[int] = []
        self._sizes = blobs.sizes

    def __call__(self, keys: list[str]) -> dict[str, int]:
        self.calls.append(len(keys))
        return self._sizes(keys)


async def test_an_html_page_gives_the_sizes_of_its_cached_files(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEP 700's mandatory `size`, which an HTML page cannot give: of the files pyproxy holds,
    verified, in one query per page (the sdists and a file listed with no hash too), from the
    next recheck on, with a new revision; none for a file not cached."""
    old_sdist = make_sdist(tmp_path, "demo-pkg", "0.9").read_bytes()
    async with FakeUpstream(formats="html") as html:
        html.offer_metadata = False
        html.add_file(PROJECT, WHEEL, make_wheel(tmp_path, "demo-pkg", "1.0", metadata=META).read_bytes())
        html.add_file(PROJECT, SDIST, make_sdist(tmp_path, "demo-pkg", "1.0").read_bytes())
        html.add_file(PROJECT, "demo_pkg-0.9.tar.gz", old_sdist, listed_hash=False)  # kept by URL
        repo = make_repo(html.index_url)
        assert isinstance(repo.blobs, BlobCache)
        counted = _Counted(repo.blobs)
        monkeypatch.setattr(repo.blobs, "sizes", counted)
        cold = await repo.project_page(PROJECT)
        assert [dist.size for dist in cold.files] == [None, None, None]
        assert counted.calls == [3]  # every file of the page in one query
        for name in (SDIST, "demo_pkg-0.9.tar.gz"):
            await _read(await repo.open_file(PROJECT, name))
        await repo.blobs.idle()
        assert await repo.project_page(PROJECT) is cold  # the marks hold for _RECHECK_S
        assert counted.calls == [3]  # the warm path asks nothing
        monkeypatch.setattr(wheel_metadata, "_RECHECK_S", 0.0)
        sized = await repo.project_page(PROJECT)
        assert {dist.filename: dist.size for dist in sized.files} == {
            WHEEL: None, SDIST: html.file(PROJECT, SDIST).size, "demo_pkg-0.9.tar.gz": len(old_sdist),
        }
        assert sized.revision != cold.revision and counted.calls == [3, 3]
        assert await repo.project_page(PROJECT) is sized  # rechecked, nothing new: the same page
        wheel = sized.file(WHEEL)
        assert wheel is not None and wheel.core_metadata is True  # still offered


async def test_a_page_without_wheels_gets_sizes_and_one_with_sizes_asks_none(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeUpstream(formats="json") as upstream:
        upstream.add_file(PROJECT, SDIST, make_sdist(tmp_path, "demo-pkg", "1.0").read_bytes(), listed_size=False)
        upstream.add_file("sized", "sized-1.0.tar.gz", make_sdist(tmp_path, "sized", "1.0").read_bytes())
        repo = make_repo(upstream.index_url)
        assert isinstance(repo.blobs, BlobCache)
        counted = _Counted(repo.blobs)
        monkeypatch.setattr(repo.blobs, "sizes", counted)
        for project, filename in ((PROJECT, SDIST), (NormalizedName("sized"), "sized-1.0.tar.gz")):
            before = await repo.project_page(project)
            await _read(await repo.open_file(project, filename))
            await repo.blobs.idle()
            monkeypatch.setattr(wheel_metadata, "_RECHECK_S", 0.0)
            after = await repo.project_page(project)
            monkeypatch.setattr(wheel_metadata, "_RECHECK_S", 30.0)
            dist = after.file(filename)
            assert dist is not None and dist.size == upstream.file(project, filename).size
            assert (after.revision != before.revision) == (project == PROJECT)
        assert counted.calls == [1, 1]  # the sdist-only page, twice; the sized page never


def test_a_size_remarks_only_its_file_and_never_one_the_page_gives() -> None:
    names = ["demo_pkg-1.0.tar.gz", "demo_pkg-1.0-py3-none-any.whl", "demo_pkg-0.9.tar.gz"]
    page = ProjectPage.build(PROJECT, tuple(
        DistFile(name, {}, size=7 if name.startswith("demo_pkg-0.9") else None,
                 origin=Origin.UPSTREAM, upstream_url=f"http://u/{name}") for name in names
    ), revision="u1")
    first = offer_made(page, {})
    sizes = {names[0]: 5, names[2]: 99}  # the page gives the last one's: kept
    second = offer_made(page, {}, Marked(first, {}), sizes)
    assert second == offer_made(page, {}, None, sizes)
    assert second.revision != first.revision
    assert second.revision == offer_made(page, {}, None, {names[0]: 5}).revision
    sized, kept, listed = (second.file(name) for name in names)
    assert sized is not None and sized.size == 5 and sized.version == "1.0"
    assert kept is first.file(names[1])
    assert listed is not None and listed.size == 7
    assert offer_made(page, {}, Marked(second, {}, sizes), {}) == first  # evicted since


_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_SIZED_SDIST = "sized_pkg-1.0.tar.gz"
_SIZED_WHEEL = "sized_pkg-1.0-py3-none-any.whl"


async def _served_page(client: TestClient, accept: str) -> tuple[bytes, str]:
    async with client.get("/simple/sized-pkg/", headers={"Accept": accept}) as response:
        assert response.status == 200
        return await response.read(), response.headers["ETag"]


async def _served_sizes(client: TestClient) -> dict[str, int | None]:
    body, _ = await _served_page(client, _SIMPLE_JSON)
    return {entry["filename"]: entry.get("size") for entry in orjson.loads(body)["files"]}


async def test_a_downloaded_file_of_an_html_upstream_gets_its_size_on_the_json_pages(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end through the app: the JSON simple page and the legacy JSON API give the size
    of a file of an HTML-only upstream once pyproxy holds it; the HTML page stays the same."""
    async with FakeUpstream(formats="html") as fake:
        fake.add_file("sized-pkg", _SIZED_SDIST, make_sdist(tmp_path, "sized-pkg", "1.0").read_bytes())
        fake.add_file("sized-pkg", _SIZED_WHEEL, make_wheel(tmp_path, "sized-pkg", "1.0").read_bytes())
        client, _ = await make_client(upstream_url=fake.index_url, upstream_warm_up=False)
        html_before, html_etag = await _served_page(client, "text/html")
        json_before, json_etag = await _served_page(client, _SIMPLE_JSON)
        assert await _served_sizes(client) == {_SIZED_SDIST: None, _SIZED_WHEEL: None}  # HTML pages carry none

        files = {entry["filename"]: entry["url"] for entry in orjson.loads(json_before)["files"]}
        async with client.get(URL(files[_SIZED_SDIST]).path) as response:
            assert response.status == 200
            body = await response.read()
        monkeypatch.setattr(wheel_metadata, "_RECHECK_S", 0.0)  # not 30 s from now
        deadline = time.monotonic() + 5
        while (sizes := await _served_sizes(client))[_SIZED_SDIST] is None:  # committed just after the body
            assert time.monotonic() < deadline, sizes
            await asyncio.sleep(0.02)
        assert sizes == {_SIZED_SDIST: len(body), _SIZED_WHEEL: None}
        json_after, json_etag_after = await _served_page(client, _SIMPLE_JSON)
        assert json_etag_after != json_etag  # a new ETag: a client revalidating its copy gets the sizes
        after = orjson.loads(json_after)
        [sized] = [entry for entry in after["files"] if entry.pop("size", None) is not None]
        assert sized["filename"] == _SIZED_SDIST and after == orjson.loads(json_before)  # nothing else

        # no size in HTML: the same bytes, so the same ETag (of the body): still fresh for clients
        assert await _served_page(client, "text/html") == (html_before, html_etag)

        # (reading the wheel's METADATA for `info`, which then changes the pages: its hash)
        async with client.get("/pypi/sized-pkg/json") as response:
            legacy = orjson.loads(await response.read())
        assert {e["filename"]: e["size"] for e in legacy["urls"]} == {_SIZED_SDIST: len(body), _SIZED_WHEEL: None}
