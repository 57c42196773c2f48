"""Private packages over the upstream index: the merge policy, and where files come from.

A name that exists privately is served from the private store only: no upstream file,
`.metadata` or page of that name is reachable (dependency confusion), unless the operator
allow-lists the name for merging, and then a private file wins a filename collision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

from pyproxy.model import (
    DistFile,
    FileSource,
    NormalizedName,
    NotFound,
    ProjectList,
    ProjectPage,
    Unavailable,
    normalize,
)
from pyproxy.repository.upstream import Upstream
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.private import PrivateStore

log = logging.getLogger("pyproxy.overlay")

# offline, a page lists only cached files; which are cached is looked up again after this long,
# so files that `cache prune`/`verify` removed drop off the page
_OFFLINE_RECHECK_S = 10.0
_OFFLINE_PAGES = 2048


def merge_pages(private: ProjectPage, upstream: ProjectPage) -> ProjectPage:
    """Both pages' files; on a filename collision the private file wins."""
    private_names = {dist.filename for dist in private.files}
    for dist in upstream.files if upstream.status.offers_files else ():
        if dist.filename in private_names:
            log.warning("%s exists privately and upstream; serving the private file", dist.filename)
    offered = upstream.files if upstream.status.offers_files else ()
    files = private.files + tuple(d for d in offered if d.filename not in private_names)
    return ProjectPage.build(
        private.name,
        files,
        extra_versions=private.versions + upstream.versions,
        status=private.status,
        revision=f"{private.revision}+{upstream.revision}",
    )


def merge_lists(private: ProjectList, upstream: ProjectList) -> ProjectList:
    names = dict.fromkeys(private.names)
    private_normalized = {normalize(name) for name in private.names}
    for name in upstream.names:
        if normalize(name) not in private_normalized:
            names.setdefault(name, None)
    return ProjectList(tuple(names), revision=f"{private.revision}+{upstream.revision}")


def blob_key(dist: DistFile) -> str:
    """Cache key of an upstream file: its sha256 when upstream names one, else its URL."""
    if dist.sha256:
        return dist.sha256
    assert dist.upstream_url is not None
    return "url:" + hashlib.sha256(dist.upstream_url.encode()).hexdigest()


def metadata_key(dist: DistFile) -> str:
    """Cache key of an upstream file's `.metadata`."""
    sha256 = None if isinstance(dist.core_metadata, bool) else dist.core_metadata.get("sha256")
    return "meta:" + (sha256 or blob_key(dist))


def only_cached(page: ProjectPage, cached: set[str]) -> ProjectPage:
    """The page as offline pyproxy can deliver it: files (and .metadata) whose bodies are cached."""
    files = tuple(
        dist if not dist.core_metadata or metadata_key(dist) in cached
        else dataclasses.replace(dist, core_metadata=False)
        for dist in page.files
        if blob_key(dist) in cached
    )
    listed = "\n".join(f"{d.filename} {bool(d.core_metadata)}" for d in files)
    digest = hashlib.blake2b(listed.encode(), digest_size=8).hexdigest()
    return ProjectPage.build(
        page.name, files, status=page.status, revision=f"{page.revision}~{digest}"
    )


class Overlay:
    """The Repository the web layer serves: private store first, then upstream."""

    def __init__(
        self,
        private: PrivateStore,
        upstream: Upstream,
        blobs: BlobCache,
        merge: Iterable[str] = (),
    ) -> None:
        self.private = private
        self.upstream = upstream
        self.blobs = blobs
        self.merge = frozenset(normalize(name) for name in merge)
        self._merged_list: ProjectList | None = None
        self._offline_pages: OrderedDict[NormalizedName, tuple[str, float, ProjectPage]] = (
            OrderedDict()
        )

    @property
    def offline(self) -> bool:
        return self.upstream.offline

    async def _upstream_page(self, name: NormalizedName) -> ProjectPage:
        page = await self.upstream.project_page(name)
        if not self.offline:
            return page
        held = self._offline_pages.get(name)
        now = time.monotonic()
        if held is not None and held[0] == page.revision and now - held[1] < _OFFLINE_RECHECK_S:
            return held[2]
        keys = [blob_key(d) for d in page.files]
        keys += [metadata_key(d) for d in page.files if d.core_metadata]
        cached = await asyncio.to_thread(self.blobs.present, keys)
        deliverable = only_cached(page, cached)
        self._offline_pages[name] = (page.revision, now, deliverable)
        self._offline_pages.move_to_end(name)
        while len(self._offline_pages) > _OFFLINE_PAGES:
            self._offline_pages.popitem(last=False)
        return deliverable

    async def list_projects(self) -> ProjectList:
        private = self.private.list_projects()
        try:
            upstream = await self.upstream.project_list()
        except Unavailable as exc:
            log.warning("project list without upstream names: %s", exc)
            return private
        # the upstream list can hold hundreds of thousands of names: merge once per revision
        revision = f"{private.revision}+{upstream.revision}"
        if self._merged_list is None or self._merged_list.revision != revision:
            self._merged_list = merge_lists(private, upstream)
        return self._merged_list

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        if not self.private.has_project(name):
            return await self._upstream_page(name)
        private = self.private.project_page(name)
        if name not in self.merge:
            return private
        try:
            upstream = await self._upstream_page(name)
        except (NotFound, Unavailable) as exc:
            log.warning("merged project %s served without upstream files: %s", name, exc)
            return private
        return merge_pages(private, upstream)

    async def _upstream_file(self, project: NormalizedName, filename: str) -> DistFile:
        """The upstream file a request may reach (callers have ruled out private names)."""
        page = await self._upstream_page(project)
        dist = page.file(filename)
        if dist is None or not page.status.offers_files:
            raise NotFound(f"no file {filename!r} in project {project!r}")
        return dist

    async def open_file(self, project: NormalizedName, filename: str) -> FileSource:
        if self.private.has_project(project):
            try:
                return self.private.open_file(project, filename)
            except NotFound:
                if project not in self.merge:
                    raise
        dist = await self._upstream_file(project, filename)
        assert dist.upstream_url is not None
        if self.offline:
            return await self._cached_only(blob_key(dist), filename)
        return await self.blobs.fetch(
            blob_key(dist),
            sha256=dist.sha256,
            size=dist.size,
            open_upstream=self.upstream.opener(dist.upstream_url),
            filename=filename,
        )

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        if self.private.has_project(project):
            try:
                return self.private.open_metadata(project, filename)
            except NotFound:
                if project not in self.merge or self.private.has_file(project, filename):
                    raise
        dist = await self._upstream_file(project, filename)
        if not dist.core_metadata:
            raise NotFound(f"upstream offers no metadata for {filename!r}")
        assert dist.upstream_url is not None
        if self.offline:
            return await self._cached_only(metadata_key(dist), filename + ".metadata")
        sha256 = None if dist.core_metadata is True else dist.core_metadata.get("sha256")
        return await self.blobs.fetch(
            metadata_key(dist),
            sha256=sha256,
            size=None,
            open_upstream=self.upstream.opener(dist.upstream_url + ".metadata"),
            filename=filename + ".metadata",
        )


    async def _cached_only(self, key: str, filename: str) -> FileSource:
        hit = await asyncio.to_thread(self.blobs.lookup, key)
        if hit is None:  # removed since the page was checked
            raise NotFound(f"{filename!r} is not cached, and pyproxy is offline")
        return hit
