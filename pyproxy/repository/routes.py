"""Several upstreams: each project name goes to exactly one of them.

`Routed` sends a name to the first route whose patterns claim it, else to the default upstream
(`[upstream]`), and never on to another when that upstream answers 404 or fails: a name that
exists only on a GPU index and is then registered on the public one must not be served from
there (the torchtriton case). One project is never merged across upstreams. It sits under
`PrivateWins`, so private names win over every route and are never sent to any upstream.

`FilesFrom` keeps a routed upstream's page to file (and provenance) URLs on the index's own
host or a host its `files_from` lists: a hostile or compromised page must not make pyproxy
fetch other addresses.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyproxy.lru import BoundedLRU
from pyproxy.model import (
    DistFile,
    FileSource,
    NormalizedName,
    NotFound,
    OpenedFile,
    ProjectList,
    ProjectPage,
    Repository,
    Unavailable,
)
from pyproxy.project_lists import filtered, merged
from pyproxy.upstream_settings import UpstreamSettings

__all__ = ["FilesFrom", "Route", "Routed", "SingleUpstream", "UpstreamRoutes"]

log = logging.getLogger("pyproxy.routes")
_FILTERED_PAGES = 2048


class UpstreamRoutes(Protocol):
    """What pages may ask about routing: which upstream serves a name, and the routes."""

    def upstream_for(self, name: NormalizedName) -> str: ...

    def routes(self) -> Sequence[tuple[str, tuple[str, ...]]]: ...


class SingleUpstream:
    """UpstreamRoutes when there are no routes: every name is served by one description."""

    def __init__(self, description: str) -> None:
        self.description = description

    def upstream_for(self, name: NormalizedName) -> str:
        return self.description

    def routes(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        return ()


@dataclass(frozen=True)
class Route:
    settings: UpstreamSettings
    repository: Repository
    description: str  # for pages and logs: name and redacted URL

    def claims(self, name: NormalizedName) -> bool:
        return self.settings.claims(name)


class Routed:
    """A Repository over several upstreams, each name served by one of them."""

    def __init__(
        self, default: Repository | None, default_description: str, routes: Sequence[Route]
    ) -> None:
        self.default = default  # None: no [upstream], only routed names go anywhere
        self.default_description = default_description
        self.route_list = tuple(routes)
        self._merged: ProjectList | None = None

    def route_for(self, name: NormalizedName) -> Route | None:
        """The route that claims `name`; None for the default upstream."""
        return next((route for route in self.route_list if route.claims(name)), None)

    def is_routed(self, name: NormalizedName) -> bool:
        """Whether a route claims `name` (else the default upstream serves it, if any)."""
        return self.route_for(name) is not None

    def _repository_for(self, name: NormalizedName) -> Repository:
        route = self.route_for(name)
        if route is not None:
            return route.repository
        if self.default is None:
            raise NotFound(f"no private project {name!r}, and no upstream serves that name")
        return self.default

    # ---- UpstreamRoutes ----

    def upstream_for(self, name: NormalizedName) -> str:
        route = self.route_for(name)
        return self.default_description if route is None else route.description

    def routes(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        return tuple((route.description, route.settings.projects) for route in self.route_list)

    # ---- the Repository ----

    async def list_projects(self) -> ProjectList:
        """Every upstream's list, each name only from the upstream that serves it; an upstream
        that cannot answer leaves its names out (logged), all failing is Unavailable. For
        `/simple/` only: a name missing here may be one whose upstream's list failed, so the
        upload check never reads it (publish/upstream_names.py RoutedUpstream)."""
        sources: list[tuple[Route | None, Repository]] = [
            (route, route.repository) for route in self.route_list
        ]
        if self.default is not None:
            sources.insert(0, (None, self.default))
        lists: list[tuple[Route | None, ProjectList]] = []
        for owner, repository in sources:
            try:
                lists.append((owner, await repository.list_projects()))
            except Unavailable as exc:
                name = "default" if owner is None else owner.settings.name
                log.warning("project list without the names of upstream %s: %s", name, exc)
        if not lists:
            raise Unavailable("no upstream answered for its project list")
        revision = "+".join(
            f"{'' if owner is None else owner.settings.name}:{projects.revision}"
            for owner, projects in lists
        )
        if self._merged is None or self._merged.revision != revision:
            # each list read lazily, off the loop, when the merged one is (they are on disk)
            self._merged = merged(
                [filtered(projects, self._owned_by(owner), projects.revision)
                 for owner, projects in lists],
                revision,
            )
        return self._merged

    def _owned_by(self, owner: Route | None) -> Callable[[NormalizedName], bool]:
        return lambda name: self.route_for(name) is owner

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        return await self._repository_for(name).project_page(name)

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        return await self._repository_for(project).open_file(project, filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._repository_for(project).open_metadata(project, filename)

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._repository_for(project).open_provenance(project, filename)


class FilesFrom:
    """A routed upstream whose pages list only files on hosts it may serve files from."""

    def __init__(self, upstream: Repository, settings: UpstreamSettings) -> None:
        self.upstream = upstream
        self.settings = settings
        # name -> (revision of the upstream page, the page as served)
        self._pages: BoundedLRU[NormalizedName, tuple[str, ProjectPage]] = BoundedLRU(
            _FILTERED_PAGES
        )

    async def list_projects(self) -> ProjectList:
        return await self.upstream.list_projects()

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        page = await self.upstream.project_page(name)
        held = self._pages.get(name)
        if held is not None and held[0] == page.revision:
            return held[1]
        kept = []
        for dist in page.files:
            assert dist.upstream_url is not None
            if not self.settings.allows_file_host(dist.upstream_url):
                self._refused(dist.filename, dist.upstream_url)
                continue
            if dist.provenance_url and not self.settings.allows_file_host(dist.provenance_url):
                self._refused(f"the provenance of {dist.filename}", dist.provenance_url)
                dist = dataclasses.replace(dist, provenance=False, provenance_url=None)
            kept.append(dist)
        served = page
        if kept != list(page.files):
            # a version only a refused file had is gone too; one upstream lists without files stays
            with_files = {dist.version for dist in page.files}
            fileless = tuple(v for v in page.versions if v not in with_files)
            served = ProjectPage.build(
                page.name, tuple(kept), extra_versions=fileless, status=page.status,
                revision=f"{page.revision}~hosts",
            )
        self._pages.put(name, (page.revision, served))
        return served

    def _refused(self, what: str, url: str) -> None:
        log.warning(
            "upstream %s: %s is not listed: its URL %s is on a host that neither the index"
            " nor files_from names", self.settings.name, what, url,
        )

    async def _listed(self, project: NormalizedName, filename: str) -> DistFile:
        dist = (await self.project_page(project)).file(filename)
        if dist is None:
            raise NotFound(f"no file {filename!r} in project {project!r}")
        return dist

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        await self._listed(project, filename)
        return await self.upstream.open_file(project, filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        await self._listed(project, filename)
        return await self.upstream.open_metadata(project, filename)

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        if not (await self._listed(project, filename)).provenance:
            raise NotFound(f"no provenance for {filename!r} in project {project!r}")
        return await self.upstream.open_provenance(project, filename)
