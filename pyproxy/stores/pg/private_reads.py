"""The reads of the cluster's private store (stores/pg/private.py), every one answered from
node memory (private_memory.Memory): the Simple API's pages and listing, the files' bodies and
digests, the upload forms, who may read the restricted projects."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Literal

from pyproxy.model import LocalFile, NormalizedName, NotFound, ProjectList, ProjectPage
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.notify import Changes, Listener
from pyproxy.stores.pg.private_memory import Memory
from pyproxy.stores.private_files import FileBodies

TOPIC = "project"  # notifications "project:<normalized name>"


class PrivateReads:
    """`listener` None (the CLI): nothing is held in memory, every read asks the database."""

    def __init__(self, db: Database, files: FileBodies, listener: Listener | None) -> None:
        self.db = db
        self.files = files
        self._changes = Changes()
        self._listener = listener
        if listener is not None:
            listener.subscribe(TOPIC, self._changes.mark)
            listener.on_lost(self._changes.mark_all)
        self._memory = Memory(db, self._changes, listening=self._listening)
        if listener is not None:
            # every request asks whether its name is private: a worker that first asks while
            # the database is down could answer nothing, not even an upstream page
            with contextlib.suppress(DatabaseUnavailable):  # then on first use, as the rest
                self._memory.catalog()

    def _listening(self) -> bool:
        return self._listener is None or self._listener.connected

    # ---- reads (from memory; called on the event loop) ----

    def has_project(self, name: NormalizedName) -> bool:
        self._uncached()
        return name in self._memory.catalog().names

    def restricted_readers(self) -> Mapping[NormalizedName, frozenset[str]]:
        self._uncached()
        return self._memory.catalog().restricted

    def list_projects(self) -> ProjectList:
        self._uncached()
        return self._memory.catalog().listing

    def project_page(self, name: NormalizedName) -> ProjectPage:
        self._uncached()
        return self._memory.page(name)

    def has_file(self, project: NormalizedName, filename: str) -> bool:
        self._uncached()
        return filename in self._memory.project(project).files

    def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
        self._uncached()
        stored = self._memory.project(project).files.get(filename)
        if stored is None:
            raise NotFound(f"no file {filename!r} in private project {project!r}")
        return self.files.local(stored.sha256, stored.size)  # NotLocal: fetched by the caller

    def open_metadata(self, project: NormalizedName, filename: str) -> LocalFile:
        return self._open_body("metadata", project, filename)

    def open_provenance(self, project: NormalizedName, filename: str) -> LocalFile:
        return self._open_body("provenance", project, filename)

    def _open_body(
        self, kind: Literal["metadata", "provenance"], project: NormalizedName, filename: str
    ) -> LocalFile:
        self._uncached()
        stored = self._memory.project(project).files.get(filename)
        sha256 = None if stored is None else getattr(stored, f"{kind}_sha256")
        if sha256 is None:
            raise NotFound(f"no {kind} for {filename!r} in private project {project!r}")
        return self.files.local(sha256, None)

    def file_fields(self, filename: str) -> dict[str, list[str]] | None:
        self._uncached()
        return self._memory.fields(filename)

    def project_serial(self, name: NormalizedName) -> int | None:
        self._uncached()
        return self._memory.project(name).serial

    def file_digests(self, project: NormalizedName) -> dict[str, dict[str, str]]:
        self._uncached()
        return {
            filename: {"sha256": f.sha256, "blake2_256": f.blake2_256, "md5": f.md5}
            for filename, f in self._memory.project(project).files.items()
        }

    def _uncached(self) -> None:
        if self._listener is None:
            self._changes.mark_all()
