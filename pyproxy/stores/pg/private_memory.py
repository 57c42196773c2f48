"""What a node holds of the private store in memory, so the warm path asks PostgreSQL nothing.

Three kinds of copy, each loaded on first use and dropped when a notification names what it
covers (`Changes`): the catalog (every project's name, the listing, who may read the restricted
ones), one snapshot per project (its page, serial, files' digests and bodies), and the upload
form of files asked for by filename. A copy superseded by a change is kept as a fallback: while
the database cannot be reached (the listener is down, or a reload fails), reads answer from it
rather than fail, since nothing can be written meanwhile either.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import orjson

from pyproxy.model import (
    DistFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectList,
    ProjectPage,
    ProjectStatus,
)
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import READ_TIMEOUT_S, Connection, Database
from pyproxy.stores.pg.notify import Changes
from pyproxy.stores.pg.private_schema import FILE_COLUMNS

_T = TypeVar("_T")
_FIELDS_HELD = 4096  # upload forms held (they may be large: the long description)


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int
    metadata_sha256: str | None
    provenance_sha256: str | None
    blake2_256: str
    md5: str


@dataclass(frozen=True, slots=True)
class Catalog:
    names: frozenset[NormalizedName]
    listing: ProjectList
    restricted: Mapping[NormalizedName, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One project as of one load; `page` None: no such project."""

    page: ProjectPage | None
    serial: int | None
    files: Mapping[str, StoredFile]


_ABSENT = Snapshot(None, None, {})


class Memory:
    def __init__(self, db: Database, changes: Changes, *, listening: Callable[[], bool]) -> None:
        self._db = db
        self._changes = changes
        self._listening = listening  # False: what is held may be stale, the server likely gone
        self._lock = threading.Lock()
        self._seen = -1
        self._catalog: Catalog | None = None
        self._old_catalog: Catalog | None = None
        self._projects: dict[NormalizedName, Snapshot] = {}
        self._old_projects: dict[NormalizedName, Snapshot] = {}
        self._fields: dict[str, tuple[str | None, dict[str, list[str]] | None]] = {}

    # ---- freshness: one integer compare while nothing changed ----

    def _fresh(self) -> None:
        if self._changes.value == self._seen:
            return
        with self._lock:
            self._seen = self._changes.value  # before take(): a later mark moves it again
            everything, keys = self._changes.take()
            if everything:
                self._old_projects.update(self._projects)
                self._projects.clear()
                self._fields.clear()
            else:
                for name in keys:
                    if name in self._projects:
                        self._old_projects[NormalizedName(name)] = self._projects.pop(
                            NormalizedName(name))
                    for filename, (project, _) in list(self._fields.items()):
                        if project is None or project == name:
                            self._fields.pop(filename, None)
            if self._catalog is not None:
                self._old_catalog = self._catalog
            self._catalog = None

    def _load(self, load: Callable[[Connection], _T], old: _T | None) -> _T:
        """`load` in a read transaction; on a database that cannot be reached, the old copy."""
        if old is not None and not self._listening():
            return old
        try:
            with self._db.transaction(timeout=READ_TIMEOUT_S) as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return load(conn)
        except DatabaseUnavailable:
            if old is None:
                raise
            return old

    # ---- the catalog ----

    def catalog(self) -> Catalog:
        self._fresh()
        catalog = self._catalog
        if catalog is None:
            catalog = self._load(_load_catalog, self._old_catalog)
            self._catalog = catalog
        return catalog

    # ---- one project ----

    def project(self, name: NormalizedName) -> Snapshot:
        self._fresh()
        snapshot = self._projects.get(name)
        if snapshot is None and name not in self.catalog().names:
            return _ABSENT  # an upstream name: no query, nothing held
        if snapshot is None:
            snapshot = self._load(lambda conn: _load_project(conn, name),
                                  self._old_projects.get(name))
            self._projects[name] = snapshot
            self._old_projects.pop(name, None)
        return snapshot

    def page(self, name: NormalizedName) -> ProjectPage:
        page = self.project(name).page
        if page is None:
            raise NotFound(f"no private project {name!r}")
        return page

    # ---- upload forms ----

    def fields(self, filename: str) -> dict[str, list[str]] | None:
        self._fresh()
        held = self._fields.get(filename)
        if held is None:
            held = self._load(lambda conn: _load_fields(conn, filename), None)
            if len(self._fields) >= _FIELDS_HELD:
                self._fields.clear()
            self._fields[filename] = held
        return held[1]


def _load_catalog(conn: Connection) -> Catalog:
    rows = conn.execute(
        "SELECT name, display_name, restricted FROM private_projects ORDER BY name"
    ).fetchall()
    readers: dict[NormalizedName, set[str]] = {
        NormalizedName(str(name)): set() for name, _, restricted in rows if restricted
    }
    if readers:
        for project, user in conn.execute(
            "SELECT r.project, r.username FROM private_roles r"
            " JOIN private_projects p ON p.name = r.project WHERE p.restricted"
        ):
            readers[NormalizedName(str(project))].add(str(user))
    shown = tuple(str(row[1]) for row in rows)
    revision = "p" + hashlib.sha256("\n".join(shown).encode()).hexdigest()[:16]
    return Catalog(
        names=frozenset(NormalizedName(str(row[0])) for row in rows),
        listing=ProjectList(shown, revision=revision),
        restricted={name: frozenset(users) for name, users in readers.items()},
    )


def _load_project(conn: Connection, name: NormalizedName) -> Snapshot:
    project = conn.execute(
        "SELECT created, serial FROM private_projects WHERE name = %s", (name,)
    ).fetchone()
    if project is None:
        return _ABSENT
    rows = conn.execute(
        f"SELECT {FILE_COLUMNS} FROM private_files WHERE project = %s"
        " ORDER BY upload_time, filename",
        (name,),
    ).fetchall()
    dists, stored = [], {}
    for (filename, size, sha256, metadata_sha256, provenance_sha256, requires_python,
         upload_time, yanked, yanked_reason, blake2_256, md5) in rows:
        dists.append(DistFile(
            filename=filename,
            hashes={"sha256": sha256},
            size=size,
            upload_time=datetime.fromisoformat(upload_time),
            requires_python=requires_python,
            yanked=bool(yanked),
            yanked_reason=yanked_reason,
            core_metadata={"sha256": metadata_sha256} if metadata_sha256 else False,
            origin=Origin.PRIVATE,
            provenance=provenance_sha256 is not None,
        ))
        stored[filename] = StoredFile(
            sha256, size, metadata_sha256, provenance_sha256, blake2_256, md5
        )
    page = ProjectPage.build(
        name, tuple(dists), status=ProjectStatus(), revision=f"{project[0]}/{project[1]}"
    )
    return Snapshot(page, int(project[1]), stored)


def _load_fields(conn: Connection, filename: str) -> tuple[str | None, dict[str, list[str]] | None]:
    row = conn.execute(
        "SELECT project, fields FROM private_files WHERE filename = %s", (filename,)
    ).fetchone()
    if row is None:
        return None, None
    fields: dict[str, list[str]] = orjson.loads(str(row[1]))
    return str(row[0]), fields
