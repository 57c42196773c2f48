"""Offline: the upstream side as the caches hold it, never contacting upstream.

A page is served as last fetched, whatever its age, and lists only the files (and `.metadata`,
and PEP 740 provenance) whose bodies are cached, so an installer never picks a version it
cannot download. The project list names the projects whose page is cached (not the cached
index, which would name projects that cannot be served). On a cluster node "cached" is what the
cluster holds: pages any node fetched (in PostgreSQL) and files in the bucket, which a node
copies into its local copies when first asked (stores.clusterblobs, `present` and `cached`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time

from pyproxy.lru import BoundedLRU
from pyproxy.model import (
    DistFile,
    FileSource,
    NormalizedName,
    NotFound,
    OpenedFile,
    ProjectList,
    ProjectPage,
)
from pyproxy.repository.upstream import (
    UpstreamRepository,
    offered_file,
    offered_metadata,
    offered_provenance,
)
from pyproxy.stores.blobkeys import blob_key, metadata_key, provenance_key

log = logging.getLogger("pyproxy.upstream.offline")

# which files are cached is looked up again after this long, so files that `cache prune` or
# `cache verify` removed drop off the page
_OFFLINE_RECHECK_S = 10.0
_OFFLINE_PAGES = 2048


def _deliverable(dist: DistFile, cached: set[str]) -> DistFile:
    """The file without the `.metadata` and provenance offers whose bodies are not cached."""
    if dist.core_metadata and metadata_key(dist) not in cached:
        dist = dataclasses.replace(dist, core_metadata=False)
    if dist.provenance and provenance_key(dist) not in cached:
        dist = dataclasses.replace(dist, provenance=False)
    return dist


def only_cached(page: ProjectPage, cached: set[str]) -> ProjectPage:
    """The page as offline pyproxy can deliver it: files (and .metadata, provenance) whose
    bodies are cached."""
    files = tuple(_deliverable(dist, cached) for dist in page.files if blob_key(dist) in cached)
    listed = "\n".join(f"{d.filename} {bool(d.core_metadata)} {d.provenance}" for d in files)
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
        present = await asyncio.to_thread(self.upstream.blobs.present, keys)
        deliverable = only_cached(page, present)
        self._pages.put(name, (page.revision, now, deliverable))
        return deliverable

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        dist = offered_file(await self.project_page(project), filename)
        return await self._cached_only(blob_key(dist), filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        dist = offered_metadata(await self.project_page(project), filename)
        return await self._cached_only(metadata_key(dist), filename + ".metadata")

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        dist = offered_provenance(await self.project_page(project), filename)
        return await self._cached_only(provenance_key(dist), filename + ".provenance")

    async def _cached_only(self, key: str, filename: str) -> FileSource:
        # on a cluster node, also a file only the bucket holds (copied into the node's copies)
        hit = await self.upstream.blobs.cached(key, filename=filename)
        if hit is None:  # removed since the page was checked
            raise NotFound(f"{filename!r} is not cached, and pyproxy is offline")
        return hit
