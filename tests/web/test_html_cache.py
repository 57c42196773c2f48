"""pyproxy.web.html_cache: rendered human pages kept per revision, built once at a time,
bounded by bytes."""

from __future__ import annotations

import asyncio

from pyproxy.web.html_cache import Built, RenderedHTML


class Builder:
    """Counts its builds; each waits for `gate` when one is given."""

    def __init__(self, body: bytes = b"page", *, complete: bool = True) -> None:
        self.body, self.complete = body, complete
        self.builds = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Built:
        self.builds += 1
        if self.gate is not None:
            await self.gate.wait()
        return Built(self.body + str(self.builds).encode(), self.complete)


async def test_one_build_per_revision() -> None:
    cache, build = RenderedHTML(), Builder()
    key = ("http://h", "foo", "")
    assert [await cache.get(key, "r1", build) for _ in range(3)] == [b"page1"] * 3
    assert await cache.get(key, "r2", build) == b"page2"  # a new revision is a new page
    assert await cache.get(("http://other", "foo", ""), "r2", build) == b"page3"  # another origin
    assert build.builds == 3 and cache.size == len(b"page2") + len(b"page3")


async def test_concurrent_requests_share_one_build() -> None:
    cache, build = RenderedHTML(), Builder()
    build.gate = asyncio.Event()
    waiting = [asyncio.create_task(cache.get(("o", "foo", ""), "r1", build)) for _ in range(20)]
    await asyncio.sleep(0)
    build.gate.set()
    assert await asyncio.gather(*waiting) == [b"page1"] * 20
    assert build.builds == 1


async def test_incomplete_pages_and_pages_without_revision_are_not_kept() -> None:
    cache = RenderedHTML()
    incomplete = Builder(complete=False)
    await cache.get(("o", "foo", ""), "r1", incomplete)
    await cache.get(("o", "foo", ""), "r1", incomplete)
    unknown = Builder()
    await cache.get(("o", "bar", ""), "", unknown)
    await cache.get(("o", "bar", ""), "", unknown)
    assert (incomplete.builds, unknown.builds, cache.size) == (2, 2, 0)


async def test_bounded_by_bytes() -> None:
    cache = RenderedHTML(max_bytes=25)
    for name in ("a", "b", "c"):
        await cache.get(("o", name, ""), "r", Builder(b"x" * 9))  # 10 bytes each
    assert cache.size == 20  # "a" went
    rebuilt = Builder(b"y" * 9)
    await cache.get(("o", "a", ""), "r", rebuilt)
    await cache.get(("o", "c", ""), "r", rebuilt)  # still kept: no build
    assert rebuilt.builds == 1
    huge = Builder(b"z" * 30)
    assert await cache.get(("o", "huge", ""), "r", huge) == b"z" * 30 + b"1"  # served, not kept
    assert cache.size == 20
