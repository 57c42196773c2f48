"""Private packages over the upstream index: the private-wins policy, and nothing else.

A name that exists privately is served from the private repository only: no upstream file,
`.metadata` or page of that name is reachable (dependency confusion), unless the operator
allow-lists the name for merging, and then a private file wins a filename collision. A name
under one of the private prefixes (e.g. "acme-") is never looked up upstream at all, whether or
not it exists privately, so neither a typo nor a squatted upstream name can leak in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from pyproxy.model import (
    FileSource,
    NormalizedName,
    NotFound,
    OpenedFile,
    ProjectList,
    ProjectPage,
    Repository,
    Unavailable,
    normalize,
)
from pyproxy.project_lists import filtered, merged

log = logging.getLogger("pyproxy.overlay")
Opener = Callable[[NormalizedName, str], Awaitable[FileSource]]


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


def merge_lists(
    private: ProjectList, upstream: ProjectList, *, private_prefixes: tuple[str, ...] = ()
) -> ProjectList:
    """Both lists' names, each project once (in its private spelling), without upstream names
    under a private prefix (they are never served). Lazy: the upstream list stays on disk."""
    revision = f"{private.revision}+{upstream.revision}"
    if private_prefixes:
        upstream = filtered(
            upstream, lambda name: not name.startswith(private_prefixes), upstream.revision
        )
    return merged([private, upstream], revision)


class PrivateWins:
    """The Repository the web layer serves: the private repository first, then upstream."""

    def __init__(
        self,
        private: Repository,
        upstream: Repository,
        merge: Iterable[str] = (),
        private_prefixes: Iterable[str] = (),
    ) -> None:
        self.private = private
        self.upstream = upstream
        self.merge = frozenset(normalize(name) for name in merge)
        # normalised like names, so "Acme_" and "acme-" are the same prefix
        self.private_prefixes = tuple(sorted({normalize(p) for p in private_prefixes if p}))
        self._merged_list: ProjectList | None = None
        self._private_names: tuple[str, frozenset[NormalizedName]] = ("", frozenset())

    async def _is_private(self, name: NormalizedName) -> bool:
        """On every request: a set lookup, rebuilt only when the private list's revision moves."""
        listed = await self.private.list_projects()
        if listed.revision != self._private_names[0] or not listed.revision:
            self._private_names = (listed.revision, frozenset(map(normalize, listed.names)))
        return name in self._private_names[1]

    async def goes_upstream(self, name: NormalizedName) -> bool:
        """Whether a request for `name` may be sent upstream: not private, no private prefix
        (a merged private name counts as private: for the warm-up, which asks nothing then)."""
        return not await self._is_private(name) and self._never_upstream(name) is None

    def _never_upstream(self, name: NormalizedName) -> str | None:
        """Why `name` is never looked up upstream, if it is under a private prefix."""
        prefix = next((p for p in self.private_prefixes if name.startswith(p)), None)
        if prefix is None:
            return None
        return f"no private project {name!r}, and names starting with {prefix!r} are private"

    async def list_projects(self) -> ProjectList:
        private = await self.private.list_projects()
        try:
            upstream = await self.upstream.list_projects()
        except Unavailable as exc:
            log.warning("project list without upstream names: %s", exc)
            return private
        # a million names on disk: the merged list reads them when it is rendered
        revision = f"{private.revision}+{upstream.revision}"
        if self._merged_list is None or self._merged_list.revision != revision:
            self._merged_list = merge_lists(
                private, upstream, private_prefixes=self.private_prefixes
            )
        return self._merged_list

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        if not await self._is_private(name):
            if (why := self._never_upstream(name)) is not None:
                raise NotFound(why)
            return await self.upstream.project_page(name)
        private = await self.private.project_page(name)
        if name not in self.merge or self._never_upstream(name) is not None:
            return private
        try:
            upstream = await self.upstream.project_page(name)
        except (NotFound, Unavailable) as exc:
            log.warning("merged project %s served without upstream files: %s", name, exc)
            return private
        return merge_pages(private, upstream)

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        if await self._is_private(project):
            try:
                return await self.private.open_file(project, filename)
            except NotFound:
                if project not in self.merge or self._never_upstream(project) is not None:
                    raise
        elif (why := self._never_upstream(project)) is not None:
            raise NotFound(why)
        return await self.upstream.open_file(project, filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._open_beside(
            project, filename, self.private.open_metadata, self.upstream.open_metadata
        )

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._open_beside(
            project, filename, self.private.open_provenance, self.upstream.open_provenance
        )

    async def _open_beside(
        self, project: NormalizedName, filename: str, private: Opener, upstream: Opener
    ) -> FileSource:
        """A file's `.metadata` or provenance, by the same rule as the file itself, except that
        a private file without one never gets an upstream file's."""
        if await self._is_private(project):
            try:
                return await private(project, filename)
            except NotFound:
                if project not in self.merge or self._never_upstream(project) is not None:
                    raise
                if (await self.private.project_page(project)).file(filename) is not None:
                    raise
        elif (why := self._never_upstream(project)) is not None:
            raise NotFound(why)
        return await upstream(project, filename)
