"""`.metadata` (PEP 658) for the upstream wheels whose index offers none, made by pyproxy from
the wheel's own `*.dist-info/METADATA`, byte for byte, and cached like any upstream file.

Offered on the page (`mark`): every such wheel gets `core-metadata`, `true` while its hash is
unknown (PEP 714 allows it), its sha256 once it has been made (the page's revision changes with
it). Which ones were made is read from the blob cache, per page, again after `_RECHECK_S`, so
another worker's work shows too; and so are the sizes of the page's cached files where the page
gives none (an HTML-only upstream's; PEP 700 makes `size` mandatory in JSON): the size of the
verified body, which changes the page's revision likewise. A wheel whose METADATA cannot be
had (no `.dist-info`, a damaged zip, ...: what pip and uv cannot install either) gets an empty
body (see `_UNUSABLE`).

Made (`open`), inside the blob cache's single flight for the `.metadata`'s key: from the cached
wheel when there is one; else from ranges of the upstream wheel (its tail, then the member if
the tail did not hold it: two small requests mostly); when upstream does not do ranges, or a
range fails, from the whole wheel, fetched through the blob cache like any download of it (so
one upstream download per file still holds) and read once cached. Ranges come with no hash, so
what they give is kept apart (`ranged_metadata_key`) and served, but never offered with its
hash: once the wheel itself is cached (verified), the `.metadata` is made from it, and that one
is offered with its hash and served from then on (a difference is logged). The tail is asked
inside the blob cache's single flight for the wheel itself (across worker processes, and a
cluster's nodes, too): a host that answers it with the whole wheel has that answer taken as
the download (no second request), and a wheel another worker is downloading is read from that
download, not asked for. A host known to answer ranges whole is not asked for ranges again for
a while (RangeMemory). A wheel is judged unusable only on bytes the blob cache verified: what ranges
find wrong is read again whole.

The warm-up asks with `WHOLE_WHEEL_LIMIT` set: a wheel over it whose host does not do ranges is
not read for it (`TooBigToWarm`, before any download starts that a client could join). Where the
page gives no size, the tail request tells it (Content-Range, or the whole answer's
Content-Length, which is dropped unread when over the limit); of a host known to answer ranges
whole, a GET without a Range does (its body likewise taken as the download, or dropped).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import io
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from pyproxy.formats import wheel_zip
from pyproxy.formats.wheel_zip import NotProducible
from pyproxy.lru import BoundedLRU, SingleFlight
from pyproxy.model import (
    DistFile,
    FileSource,
    LocalFile,
    NormalizedName,
    ProjectPage,
    StreamedFile,
    Unavailable,
)
from pyproxy.repository.downloads import Origins
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.http_answers import RangeAnswer, WholeAnswer
from pyproxy.repository.misses import RangeMemory, host_of
from pyproxy.stores import proof
from pyproxy.stores.blobcache import Ask, OpenUpstream
from pyproxy.stores.blobkeys import (
    blob_key,
    made_metadata_key,
    metadata_key,
    ranged_metadata_key,
)
from pyproxy.stores.chunks import held, once
from pyproxy.stores.filecache import FileCache

__all__ = [
    "WHOLE_WHEEL_LIMIT", "Marked", "TooBigToWarm", "WheelMetadata", "offer_made", "unusable",
    "wants_made",
]

log = logging.getLogger("pyproxy.upstream.metadata")

_RECHECK_S = 30.0  # how long a page's marks hold before the blob cache is asked again
_PAGES = 2048
_INLINE_WHEELS = 200
_FACTS = 8192  # wheels whose verdict (made: sha256, or why not) this process remembers
_TAILS = 64  # at most TAIL_BYTES each
_TAIL_KEPT_S = 60.0

# set by the warm-up: the biggest wheel it may have downloaded whole for its METADATA
WHOLE_WHEEL_LIMIT = contextvars.ContextVar[int | None]("whole_wheel_limit", default=None)

OpenWheel = Callable[[NormalizedName, str], Awaitable[FileSource]]


class Marked(NamedTuple):
    """A page with `.metadata` offered for its wheels, and the hashes (by filename) it offers;
    with the sizes (by filename) it gives of cached files the upstream page gives none for."""

    page: ProjectPage
    made: Mapping[str, str]
    sizes: Mapping[str, int] = MappingProxyType({})


class _Held(NamedTuple):
    revision: str  # of the upstream page that was marked
    checked: float  # when the blob cache was last asked for made hashes (monotonic)
    marked: Marked


def wants_made(dist: DistFile) -> bool:
    """An upstream wheel whose index offers no `.metadata` (sdists' may leave fields dynamic)."""
    return (
        dist.filename.endswith(".whl")
        and dist.upstream_url is not None
        and (dist.metadata_from_wheel or not dist.core_metadata)
    )


def offer_made(
    page: ProjectPage, made: Mapping[str, str], before: Marked | None = None,
    sizes: Mapping[str, int] = MappingProxyType({}),
) -> ProjectPage:
    """The page with `.metadata` offered for each wheel that wants one, with its sha256 if in
    `made` (by filename), and with the size in `sizes` (by filename: of a cached file the page
    gives no size for); its revision says which hashes and sizes are known. `before`: an
    earlier marking of this same page, whose files are kept where their hash and size are the
    same (a page of thousands of wheels gains one hash at a time)."""
    files: list[DistFile] = []
    marks: list[str] = []
    for dist in page.files:
        wanted = wants_made(dist)
        size = sizes.get(dist.filename) if dist.size is None else None
        if not wanted and size is None:
            files.append(dist)
            continue
        sha256 = made.get(dist.filename) if wanted else None
        if sha256:
            marks.append(f"{dist.filename}={sha256}")
        if size is not None:
            marks.append(f"{dist.filename}#{size}")
        if (
            before is not None
            and (not wanted or before.made.get(dist.filename) == sha256)
            and before.sizes.get(dist.filename) == size
            and (kept := before.page.file(dist.filename)) is not None
        ):
            dist = kept
        else:
            if wanted:
                offer: Mapping[str, str] | bool = {"sha256": sha256} if sha256 else True
                dist = dist.offering(offer, from_wheel=True)
            if size is not None:
                dist = dataclasses.replace(dist, size=size)
        files.append(dist)
    digest = hashlib.blake2b("\n".join(marks).encode(), digest_size=8).hexdigest()
    revision = f"{page.revision}~w{digest}" if page.revision else ""
    return dataclasses.replace(page, files=tuple(files), revision=revision)


class _Dropped(NamedTuple):
    """An answer of the whole wheel that the warm-up let go unread: over its limit, or of a
    size it does not tell."""

    size: int | None


class TooBigToWarm(Unavailable):
    """The warm-up would have to download a wheel bigger than WHOLE_WHEEL_LIMIT whole."""


class WheelMetadata:
    """Offers and makes the `.metadata` of one upstream's wheels; `open_wheel` is how the
    upstream repository opens a wheel (the blob cache's one download)."""

    def __init__(
        self, client: UpstreamClient, blobs: FileCache, open_wheel: OpenWheel,
        ranges: RangeMemory | None = None,
    ) -> None:
        self._client = client
        # which hosts answer ranges with the whole file: asking them costs a round trip for
        # nothing (what a cold install on an HTML-only index waits for, once per wheel)
        self._ranges = RangeMemory() if ranges is None else ranges
        self._blobs = blobs
        self._open_wheel = open_wheel
        self._pages: BoundedLRU[NormalizedName, _Held] = BoundedLRU(_PAGES)
        self._made: BoundedLRU[str, str] = BoundedLRU(_FACTS)  # wheel key -> .metadata sha256
        self._bad: BoundedLRU[str, str] = BoundedLRU(_FACTS)  # wheel key -> why not
        # tails the warm-up read to learn a size, for the making that follows (url -> when, tail)
        self._tails: BoundedLRU[str, tuple[float, RangeAnswer]] = BoundedLRU(_TAILS)
        self._asking: SingleFlight[
            str, RangeAnswer | LocalFile | StreamedFile | _Dropped
        ] = SingleFlight()

    async def mark(self, page: ProjectPage) -> ProjectPage:
        """The page with `.metadata` offered for its wheels (see `offer_made`), and the sizes
        of its cached files where the page has none (an HTML-only upstream's: PEP 700), both
        read from the blob cache in one thread hop, one batched query each."""
        # on every request for the project or one of its files: the kept marks, if fresh
        held = self._pages.get(page.name)
        now = time.monotonic()
        if held is not None and held.revision == page.revision and now - held.checked < _RECHECK_S:
            return held.marked.page
        wheels = [dist for dist in page.files if wants_made(dist)]
        unsized = [(dist.filename, blob_key(dist)) for dist in page.files
                   if dist.size is None and dist.upstream_url is not None]
        if not wheels and not unsized:
            self._pages.put(page.name, _Held(page.revision, now, Marked(page, {})))
            return page
        keys = {made_metadata_key(dist): dist.filename for dist in wheels}
        cached, lengths = await asyncio.to_thread(
            self._cached, list(keys), [key for _, key in unsized]
        )
        made = {keys[key]: sha256 for key, sha256 in cached.items()}
        for dist in wheels:
            if (sha256 := self._made.get(blob_key(dist))) is not None:
                made.setdefault(dist.filename, sha256)
        sizes = {name: lengths[key] for name, key in unsized if key in lengths}
        before = held.marked if held is not None and held.revision == page.revision else None
        if before is not None and before.made == made and before.sizes == sizes:
            marked = before.page  # the same page, rechecked: unchanged
        elif not made and not sizes and not wheels:
            marked = page
        else:  # thousands of files take tens of ms: not on the event loop, unless remarked
            marked = (offer_made(page, made, before, sizes)
                      if len(wheels) + len(sizes) <= _INLINE_WHEELS or before is not None
                      else await asyncio.to_thread(offer_made, page, made, None, sizes))
        self._pages.put(page.name, _Held(page.revision, now, Marked(marked, made, sizes)))
        return marked

    def _cached(
        self, made_keys: list[str], file_keys: list[str]
    ) -> tuple[dict[str, str], dict[str, int]]:
        """Blocking: the sha256 of each made `.metadata` cached, and the size of each file."""
        digests = self._blobs.digests(made_keys) if made_keys else {}
        return digests, self._blobs.sizes(file_keys) if file_keys else {}

    async def open(self, project: NormalizedName, dist: DistFile, origins: Origins) -> FileSource:
        """The `.metadata` of a wheel `mark` offers it for: cached, or made now; Unavailable
        when the wheel cannot be read now. For a wheel that has no usable METADATA (nobody can
        install it), an empty body: see `_UNUSABLE`."""
        if self._bad.get(blob_key(dist)) is not None:
            return unusable()
        listed = None if isinstance(dist.core_metadata, bool) else dist.core_metadata.get("sha256")
        limit = WHOLE_WHEEL_LIMIT.get()
        if limit is not None:  # the warm-up asks
            await self._within(limit, dist, origins, listed)
        name = dist.filename + ".metadata"
        try:
            if (hit := await self._blobs.hit(metadata_key(dist), sha256=listed, size=None)):
                return hit
            if (ranged := await self._ranged(project, dist, origins, listed)) is not None:
                return ranged
            return await self._blobs.fetch(
                metadata_key(dist),
                sha256=listed,
                size=None,
                open_upstream=self._maker(project, dist, origins),
                filename=name,
            )
        except Unavailable:
            if self._bad.get(blob_key(dist)) is None:
                raise
            return unusable()

    async def _ranged(
        self, project: NormalizedName, dist: DistFile, origins: Origins, listed: str | None
    ) -> FileSource | None:
        """The `.metadata` made from ranges of the wheel, kept under a key of its own until the
        wheel is verified (then `_make` makes it from the cached wheel, and the page offers
        its hash); None when the wheel is cached, its host does no ranges, or they failed."""
        if self._ranges.refuses(host_of(dist.upstream_url or "")) or (
            await self._blobs.hit(blob_key(dist), sha256=dist.sha256, size=dist.size)
        ):
            return None

        name = dist.filename + ".metadata"

        async def ask() -> OpenUpstream | None:
            data = await self._from_ranges(project, dist, origins)
            if data is None:
                return None
            try:
                proof.check_file(name, io.BytesIO(data), len(data))
            except proof.Unproven as exc:  # judged on the wheel's verified bytes only
                log.info("the metadata ranges of %s gave is unusable (%s): reading it whole",
                         dist.filename, exc)
                return None
            return held(data)

        return await self._blobs.fetch_first(
            ranged_metadata_key(dist), sha256=listed, size=None, ask=ask, filename=name
        )

    async def _within(self, limit: int, dist: DistFile, origins: Origins, md: str | None) -> None:
        """TooBigToWarm unless the `.metadata` or wheel is cached (or being downloaded), its
        host does ranges, or the wheel is at most `limit` bytes (upstream asked when the page
        does not say)."""
        if self._ranges.serves(host_of(dist.upstream_url or "")):
            return
        size = dist.size if dist.size is not None else self._ranges.size(blob_key(dist))
        if size is not None and size <= limit:
            return
        for key, sha256 in ((metadata_key(dist), md), (blob_key(dist), dist.sha256)):
            if await self._blobs.hit(key, sha256=sha256, size=None) is not None:
                return
        if size is None:
            # no HEAD (a round trip of its own): the tail `_from_ranges` reads first, kept for
            # it; an answer of the whole wheel within `limit` is the wheel's one download, one
            # over it is dropped unread
            first = await self._first_read(dist, origins, limit)
            if isinstance(first, RangeAnswer):  # the host does ranges
                self._tails.put(dist.upstream_url or "", (time.monotonic(), first))
                return
            if not isinstance(first, _Dropped):  # downloaded (or being so): read from that
                return
            size = first.size
        if size is None or size > limit:
            raise TooBigToWarm(f"{dist.filename} would be read whole: over {limit} bytes")

    async def _first_read(
        self, dist: DistFile, origins: Origins, limit: int | None
    ) -> RangeAnswer | LocalFile | StreamedFile | _Dropped:
        """The first read of a wheel not cached: its tail, and what that tells of its host's
        ranges (remembered). Asked inside the blob cache's single flight for the wheel, across
        worker processes too, so an answer of the whole wheel is its one download: that
        download (or another's, already under way, or the cached wheel, and then nothing is
        asked) is returned. With a `limit` (the warm-up's), an answer of a bigger or unsized
        whole wheel is dropped unread. A host known to answer ranges whole is asked for the
        whole wheel instead. One request however many ask in this process at once (the
        warm-up and a client's request, mostly)."""
        url = dist.upstream_url
        assert url is not None
        key, host = blob_key(dist), host_of(url)
        told: list[RangeAnswer | _Dropped] = []
        wholes: list[WholeAnswer] = []

        async def ask() -> OpenUpstream | None:
            answer: RangeAnswer | WholeAnswer
            if self._ranges.refuses(host):
                answer = await self._client.read_whole(url, file_origins=origins)
                size = answer.size
                if size is not None:
                    self._ranges.know_size(key, size)
            else:
                answer = await self._client.read_tail(
                    url, wheel_zip.TAIL_BYTES, file_origins=origins
                )
                if isinstance(answer, RangeAnswer):
                    self._ranges.learn(key, host, answer)
                    told.append(answer)
                    return None
                size = answer.size
                self._ranges.learn(key, host, None, size)
            wholes.append(answer)
            if limit is not None and (size is None or size > limit):
                answer.close()
                told.append(_Dropped(size))
                return None
            return answer.opener

        async def read() -> RangeAnswer | LocalFile | StreamedFile | _Dropped:
            try:
                source = await self._fetch_first(dist, ask)
            finally:
                for whole in wholes:  # nothing if the download took it
                    whole.close()
            if isinstance(source, LocalFile | StreamedFile):
                return source
            return told[0] if told else _Dropped(None)

        return await self._asking.run(url, read)

    async def _fetch_first(self, dist: DistFile, ask: Ask) -> FileSource | None:
        """The blob cache's fetch_first of the wheel (see `_first_read`): on a cluster the
        asking too is in the cluster's single flight."""
        return await self._blobs.fetch_first(
            blob_key(dist), sha256=dist.sha256, size=dist.size, ask=ask, filename=dist.filename
        )

    def _maker(self, project: NormalizedName, dist: DistFile, origins: Origins) -> OpenUpstream:
        @asynccontextmanager
        async def make() -> AsyncIterator[AsyncIterator[bytes]]:
            data = await self._make(project, dist, origins)
            yield once(data)

        return make

    async def _make(self, project: NormalizedName, dist: DistFile, origins: Origins) -> bytes:
        """From the wheel's verified bytes: the cached wheel, else its one download."""
        wheel = blob_key(dist)
        try:
            data = await self._from_cached(wheel, project)
            if data is None:
                data = await self._from_whole(project, dist)
            try:
                proof.check_file(dist.filename + ".metadata", io.BytesIO(data), len(data))
            except proof.Unproven as exc:
                raise NotProducible(str(exc)) from None
        except NotProducible as exc:
            log.warning("no metadata can be made from %s: %s", dist.filename, exc)
            self._bad.put(wheel, str(exc))
            raise Unavailable(f"no metadata can be made from {dist.filename}: {exc}") from None
        self._made.put(wheel, hashlib.sha256(data).hexdigest())
        if (held := self._pages.get(project)) is not None:  # offer it with its hash
            self._pages.put(project, held._replace(checked=-math.inf))
        await asyncio.to_thread(self._compare_ranged, dist, data)
        return data

    def _compare_ranged(self, dist: DistFile, data: bytes) -> None:
        """Blocking: warn when what ranges of the wheel gave differs from its verified METADATA
        (a host whose ranges are not of the file it lists): served until now, never again."""
        ranged = self._blobs.lookup(ranged_metadata_key(dist))
        if ranged is None:
            return
        try:
            differs = ranged.size != len(data) or ranged.path.read_bytes() != data
        except FileNotFoundError:
            return
        if differs:
            log.warning("upstream's ranges of %s gave another METADATA than the verified wheel"
                        " holds: the host answers ranges with other bytes than the file",
                        dist.filename)

    async def _from_cached(self, wheel: str, project: NormalizedName) -> bytes | None:
        hit = await asyncio.to_thread(self._blobs.lookup, wheel)
        if hit is None:
            return None
        try:
            return await asyncio.to_thread(_read_file, hit.path, hit.size, project)
        except FileNotFoundError:  # evicted since: read it another way
            return None

    async def _from_ranges(
        self, project: NormalizedName, dist: DistFile, origins: Origins
    ) -> bytes | None:
        """None when upstream does not do ranges, or one of them failed."""
        url = dist.upstream_url
        assert url is not None
        if self._ranges.refuses(host_of(url)):
            return None
        try:
            tail = self._kept_tail(url) or await self._first_read(dist, origins, None)
            if not isinstance(tail, RangeAnswer):  # the wheel's one download: read from it
                return None
            if tail.start + len(tail.body) != tail.total or (
                dist.size is not None and tail.total != dist.size
            ):
                log.warning("upstream sent another tail of %s than asked for", dist.filename)
                return None
            reads = wheel_zip.metadata_reads(tail.total, tail.body, project)
            wanted = next(reads)
            while True:
                part = await self._client.read_range(
                    url, wanted.start, wanted.length, file_origins=origins
                )
                if part is None or part.start != wanted.start or len(part.body) != wanted.length:
                    return None
                wanted = reads.send(part.body)
        except StopIteration as done:
            made: bytes = done.value
            return made
        except (Unavailable, NotProducible) as exc:
            log.info("reading %s in ranges failed (%s): reading it whole", dist.filename, exc)
            return None

    def _kept_tail(self, url: str) -> RangeAnswer | None:
        kept = self._tails.pop(url)
        return kept[1] if kept is not None and time.monotonic() - kept[0] < _TAIL_KEPT_S else None

    async def _from_whole(self, project: NormalizedName, dist: DistFile) -> bytes:
        source = await self._open_wheel(project, dist.filename)
        if not isinstance(source, LocalFile):
            async for _chunk in source.chunks:  # until the one download is complete
                pass
            hit = await asyncio.to_thread(self._blobs.lookup, blob_key(dist))
            if hit is None:
                raise Unavailable(f"{dist.filename} was downloaded, and not kept to be read")
            source = hit
        try:
            return await asyncio.to_thread(_read_file, source.path, source.size, project)
        except FileNotFoundError:
            raise Unavailable(f"{dist.filename} was evicted before it could be read") from None


# What a wheel without usable METADATA gets, once known: a `.metadata` that is not core
# metadata. uv then skips the version (as when its own range reads find no METADATA; reading a
# damaged zip itself, it would stop), and pip stops with the "Bad metadata" error the wheel
# itself gives it. A 404 or 5xx would stop uv (tests/e2e/test_wheel_metadata.py).
_UNUSABLE = b""


def unusable() -> FileSource:
    """The `.metadata` of a wheel without usable METADATA (online, and offline likewise)."""
    return StreamedFile(
        chunks=once(_UNUSABLE), size=len(_UNUSABLE),
        sha256=hashlib.sha256(_UNUSABLE).hexdigest(), cache="miss",
    )


def _read_file(path: Path, size: int, project: NormalizedName) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return wheel_zip.metadata_from(lambda start, n: os.pread(fd, n, start), size, project)
    finally:
        os.close(fd)
