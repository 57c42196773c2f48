"""The private store as a Repository: private packages only, no upstream."""

from __future__ import annotations

from collections.abc import Callable

from pyproxy.model import FileSource, LocalFile, NormalizedName, ProjectList, ProjectPage
from pyproxy.stores.interfaces import PrivateStoreAPI
from pyproxy.stores.private_files import NotLocal


class PrivateRepository:
    """The private store as a read-only Repository (private packages only)."""

    def __init__(self, store: PrivateStoreAPI) -> None:
        self.store = store

    async def list_projects(self) -> ProjectList:
        return self.store.list_projects()

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        return self.store.project_page(name)

    async def open_file(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._open(self.store.open_file, project, filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._open(self.store.open_metadata, project, filename)

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        return await self._open(self.store.open_provenance, project, filename)

    async def _open(
        self, opener: Callable[[NormalizedName, str], LocalFile], project: NormalizedName,
        filename: str,
    ) -> FileSource:
        # the warm path is the record and a local file; a cluster node without a copy of the
        # body yet fetches it from the bucket (Unavailable, a 503, when it cannot)
        try:
            return opener(project, filename)
        except NotLocal as missing:
            return await self.store.files.fetch(missing.sha256, missing.size)
