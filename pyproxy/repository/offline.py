"""Offline: the upstream side as the caches hold it, never contacting upstream.

A page is served as last fetched, whatever its age, and lists only the files (and `.metadata`,
and PEP 740 provenance) whose bodies are cached, so an installer never picks a version it
cannot download. A cached wheel whose index offers no `.metadata` has the one pyproxy made from
it (repository/wheel_metadata.py) offered with its sha256 when that is cached; when it is not,
it is offered (hash unknown) and made from the cached wheel on request, never from upstream, so
an install that resolved online on `.metadata` alone (uv skipping a wheel without usable
METADATA, which gets an empty body) resolves the same offline. The project list names the
projects whose page is cached (not the cached index, which would name projects that cannot be
served). On a cluster node "cached" is what the cluster holds: pages any node fetched (in
PostgreSQL) and files in the bucket, which a node copies into its local copies when first asked
(stores.clusterblobs, `digests` and `cached`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from pyproxy.formats import wheel_zip
from pyproxy.formats.wheel_zip import NotProducible
from pyproxy.lru import BoundedLRU
from pyproxy.model import (
    DistFile,
    FileSource,
    LocalFile,
    NormalizedName,
    NotFound,
    OpenedFile,
    ProjectList,
    ProjectPage,
    Unavailable,
)
from pyproxy.repository.upstream import (
    UpstreamRepository,
    offered_file,
    offered_metadata,
    offered_provenance,
)
from pyproxy.repository.wheel_metadata import unusable, wants_made
from pyproxy.stores import proof
from pyproxy.stores.blobkeys import blob_key, made_metadata_key, metadata_key, provenance_key
from pyproxy.stores.chunks import held

log = logging.getLogger("pyproxy.upstream.offline")

# which files are cached is looked up again after this long, so files that `cache prune` or
# `cache verify` removed drop off the page
_OFFLINE_RECHECK_S = 10.0
_OFFLINE_PAGES = 2048
_VERDICTS = 8192  # cached wheels found to have no usable METADATA


def _deliverable(dist: DistFile, cached: Mapping[str, str], sizes: Mapping[str, int]) -> DistFile:
    """The file without the `.metadata` and provenance offers whose bodies are not cached; a
    wheel whose index offers no `.metadata` (and is itself cached) with pyproxy's own, with
    its sha256 once that is cached (`cached`: key -> sha256); with its cached body's size
    where the page gives none (`sizes`: key -> bytes; PEP 700)."""
    if dist.size is None and (size := sizes.get(blob_key(dist))) is not None:
        dist = dataclasses.replace(dist, size=size)
    if wants_made(dist):
        made = cached.get(made_metadata_key(dist))
        dist = dist.offering({"sha256": made} if made else True, from_wheel=True)
    elif dist.core_metadata and metadata_key(dist) not in cached:
        dist = dataclasses.replace(dist, core_metadata=False)
    if dist.provenance and provenance_key(dist) not in cached:
        dist = dataclasses.replace(dist, provenance=False)
    return dist


def _offered(dist: DistFile) -> str:
    metadata = dist.core_metadata
    return str(metadata) if isinstance(metadata, bool) else metadata.get("sha256", "")


def only_cached(
    page: ProjectPage, cached: Mapping[str, str], sizes: Mapping[str, int] | None = None
) -> ProjectPage:
    """The page as offline pyproxy can deliver it: files (and .metadata, provenance) whose
    bodies are cached (`cached`: the cached keys of the page's bodies, with their sha256;
    `sizes`: the sizes of those the page gives none for)."""
    sizes = sizes or {}
    files = tuple(
        _deliverable(dist, cached, sizes) for dist in page.files if blob_key(dist) in cached
    )
    listed = "\n".join(f"{d.filename} {_offered(d)} {d.provenance} {d.size}" for d in files)
    digest = hashlib.blake2b(listed.encode(), digest_size=8).hexdigest()
    return ProjectPage.build(
        page.name, files, status=page.status, revision=f"{page.revision}~{digest}"
    )


class OnlyCached:
    """The upstream repository, offline: only what its page store and blob cache hold."""

    def __init__(self, upstream: UpstreamRepository) -> None:
        self.upstream = upstream
        # name -> (revision of the cached page, when its files were looked up, deliverable page)
        self._pages: BoundedLRU[NormalizedName, tuple[str, float, ProjectPage]] = BoundedLRU(
            _OFFLINE_PAGES
        )
        self._list: tuple[float, ProjectList] | None = None
        self._unusable: BoundedLRU[str, str] = BoundedLRU(_VERDICTS)  # wheel key -> why

    async def list_projects(self) -> ProjectList:
        if self._list is not None and time.time() - self._list[0] < self.upstream.index_ttl:
            return self._list[1]
        names = await asyncio.to_thread(self.upstream.pages.project_names)
        revision = "o" + hashlib.blake2b("\n".join(names).encode(), digest_size=12).hexdigest()
        projects = ProjectList(tuple(names), revision=revision)
        self._list = (time.time(), projects)
        return projects

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        cached = await self.upstream.cached(name)
        if cached is None:
            log.info("offline: %r was never fetched from upstream, so it is not served", name)
        if cached is None or cached.result is None:
            raise NotFound(f"no cached page for {name!r}, and pyproxy is offline")
        page = cached.result
        assert isinstance(page, ProjectPage)
        held = self._pages.get(name)
        now = time.monotonic()
        if held is not None and held[0] == page.revision and now - held[1] < _OFFLINE_RECHECK_S:
            return held[2]
        keys = [blob_key(d) for d in page.files]
        keys += [metadata_key(d) for d in page.files if d.core_metadata]
        keys += [provenance_key(d) for d in page.files if d.provenance]
        keys += [made_metadata_key(d) for d in page.files if wants_made(d)]
        unsized = [blob_key(d) for d in page.files if d.size is None]
        cached_keys, sizes = await asyncio.to_thread(self._looked_up, keys, unsized)
        deliverable = only_cached(page, cached_keys, sizes)
        self._pages.put(name, (page.revision, now, deliverable))
        return deliverable

    def _looked_up(
        self, keys: list[str], unsized: list[str]
    ) -> tuple[dict[str, str], dict[str, int]]:
        """The cached keys' sha256, and the sizes of `unsized` (one thread hop for both)."""
        blobs = self.upstream.blobs
        return blobs.digests(keys), (blobs.sizes(unsized) if unsized else {})

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        dist = offered_file(await self.project_page(project), filename)
        return await self._cached_only(blob_key(dist), filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        dist = offered_metadata(await self.project_page(project), filename)
        if not dist.metadata_from_wheel:  # upstream's own
            return await self._cached_only(metadata_key(dist), filename + ".metadata")
        hit = await self.upstream.blobs.cached(metadata_key(dist), filename=filename + ".metadata")
        return hit if hit is not None else await self._made_from_cached(project, dist)

    async def _made_from_cached(self, project: NormalizedName, dist: DistFile) -> FileSource:
        """The `.metadata` of a cached wheel, made from it as online pyproxy makes it (and
        cached so, under the same key): its METADATA, or an empty body when it has none that
        is usable (what online pyproxy answers, so uv skips the version here too)."""
        wheel = blob_key(dist)
        if self._unusable.get(wheel) is not None:
            return unusable()
        source = await self._cached_only(wheel, dist.filename)
        if not isinstance(source, LocalFile):  # a cluster node copying it from the bucket
            async for _chunk in source.chunks:
                pass
            hit = await asyncio.to_thread(self.upstream.blobs.lookup, wheel)
            if hit is None:
                raise Unavailable(f"{dist.filename} was copied, and not kept to be read")
            source = hit
        name = dist.filename + ".metadata"
        try:
            data = await asyncio.to_thread(_read_metadata, source.path, source.size, project, name)
        except FileNotFoundError:  # evicted since
            raise NotFound(f"{dist.filename!r} is not cached, and pyproxy is offline") from None
        except NotProducible as exc:
            log.warning("no metadata can be made from %s: %s", dist.filename, exc)
            self._unusable.put(wheel, str(exc))
            return unusable()
        made = await self.upstream.blobs.fetch(
            metadata_key(dist), sha256=None, size=None, open_upstream=held(data), filename=name
        )
        self._pages.pop(project)  # the page offers its hash from now on
        return made

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        dist = offered_provenance(await self.project_page(project), filename)
        return await self._cached_only(provenance_key(dist), filename + ".provenance")

    async def _cached_only(self, key: str, filename: str) -> FileSource:
        # on a cluster node, also a file only the bucket holds (copied into the node's copies)
        hit = await self.upstream.blobs.cached(key, filename=filename)
        if hit is None:  # removed since the page was checked
            raise NotFound(f"{filename!r} is not cached, and pyproxy is offline")
        return hit


def _read_metadata(path: Path, size: int, project: NormalizedName, name: str) -> bytes:
    """The METADATA of the wheel at `path`, as the `.metadata` `name` (blocking); raises
    NotProducible where online pyproxy would find it unusable too."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = wheel_zip.metadata_from(lambda start, n: os.pread(fd, n, start), size, project)
    finally:
        os.close(fd)
    try:
        proof.check_file(name, io.BytesIO(data), len(data))
    except proof.Unproven as exc:
        raise NotProducible(str(exc)) from None
    return data
