"""The private store as a Repository: private packages only, no upstream."""

from __future__ import annotations

from pyproxy.model import LocalFile, NormalizedName, ProjectList, ProjectPage
from pyproxy.stores.interfaces import PrivateStoreAPI


class PrivateRepository:
    """The private store as a read-only Repository (private packages only)."""

    def __init__(self, store: PrivateStoreAPI) -> None:
        self.store = store

    async def list_projects(self) -> ProjectList:
        return self.store.list_projects()

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        return self.store.project_page(name)

    async def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
        return self.store.open_file(project, filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> LocalFile:
        return self.store.open_metadata(project, filename)

    async def open_provenance(self, project: NormalizedName, filename: str) -> LocalFile:
        return self.store.open_provenance(project, filename)
