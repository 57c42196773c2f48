"""The reads of the private store (stores/private.py) on its SQLite database: the Simple API's
pages and listing, the bodies' locations, digests, upload forms and roles, and every record for
`pyproxy export`. What the warm path reads is cached per process and dropped when any process
commits a change."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson

from pyproxy.model import (
    DistFile,
    LocalFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectList,
    ProjectPage,
    ProjectStatus,
)
from pyproxy.stores import sqlite
from pyproxy.stores.changes import ChangeCounter
from pyproxy.stores.private_checks import check_duplicate, project_roles
from pyproxy.stores.private_files import FileBodies, PrivateFiles
from pyproxy.stores.private_schema import (
    DB_RECHECK_S,
    SCHEMA,
    FileRecord,
    NewFile,
    ProjectRecord,
    RoleRows,
    migrate,
)


class PrivateReads:
    """Every read of the store; stores/private.PrivateStore adds the writes."""

    def __init__(self, directory: Path, files: FileBodies | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.files: FileBodies = PrivateFiles(directory) if files is None else files
        self._db_path = directory / "private.sqlite3"
        self._reader = sqlite.connect(self._db_path, SCHEMA)
        # what the warm path reads is cached and reloaded only when the change counter moves;
        # the database's own data_version is a backstop for a writer that died before its bump
        self._changes = ChangeCounter(directory / "changes")
        self._db_version = -1
        self._db_checked = float("-inf")
        self._pages: dict[NormalizedName, ProjectPage] = {}
        self._names: frozenset[NormalizedName] | None = None
        self._list: ProjectList | None = None
        self._pages_version: tuple[int, int] = (-1, -1)
        migrate(self._reader)
        self._restricted: Mapping[NormalizedName, frozenset[str]] = {}
        self._restrictions_version: tuple[int, int] = (-1, -1)

    def close(self) -> None:
        self._reader.close()
        self._changes.close()

    # ---- reads (cheap; called on the event loop) ----

    def _version(self) -> tuple[int, int]:
        now = time.monotonic()
        if now - self._db_checked >= DB_RECHECK_S:
            self._db_checked = now
            self._db_version = self._reader.execute("PRAGMA data_version").fetchone()[0]
        return self._changes.value, self._db_version

    def _fresh(self) -> None:
        """Drop what is cached when any process committed a change."""
        version = self._version()
        if version != self._pages_version:
            self._pages.clear()
            self._names = None
            self._list = None
            self._pages_version = version

    def has_project(self, name: NormalizedName) -> bool:
        """On every request for every project: a set lookup, no query while nothing changes."""
        self._fresh()
        if self._names is None:
            rows = self._reader.execute("SELECT name FROM projects").fetchall()
            self._names = frozenset(NormalizedName(row[0]) for row in rows)
        return name in self._names

    def restricted_readers(self) -> Mapping[NormalizedName, frozenset[str]]:
        """Each restricted project and the users holding any role on it (access.ReadRestrictions
        judges by it). Cheap enough for every request: reloaded only when some process committed
        a change, and then before this request is judged (a grant revoked is refused at once)."""
        version = self._version()
        if version != self._restrictions_version:
            readers: dict[NormalizedName, set[str]] = {}
            for name, user in self._reader.execute(
                "SELECT projects.name, roles.user FROM projects"
                " LEFT JOIN roles ON roles.project = projects.name WHERE projects.restricted"
            ):
                users = readers.setdefault(name, set())
                if user is not None:
                    users.add(user)
            self._restricted = {name: frozenset(users) for name, users in readers.items()}
            self._restrictions_version = version
        return self._restricted

    def has_file(self, project: NormalizedName, filename: str) -> bool:
        row = self._reader.execute(
            "SELECT 1 FROM files WHERE project = ? AND filename = ?", (project, filename)
        ).fetchone()
        return row is not None

    def list_projects(self) -> ProjectList:
        self._fresh()
        if self._list is None:
            rows = self._reader.execute(
                "SELECT display_name FROM projects ORDER BY name"
            ).fetchall()
            changes, db_version = self._pages_version
            self._list = ProjectList(
                tuple(row[0] for row in rows), revision=f"d{changes}.{db_version}"
            )
        return self._list

    def project_page(self, name: NormalizedName) -> ProjectPage:
        self._fresh()
        page = self._pages.get(name)
        if page is None:
            page = self._load_page(name)
            self._pages[name] = page
        return page

    def _load_page(self, name: NormalizedName) -> ProjectPage:
        project = self._reader.execute(
            "SELECT created, serial FROM projects WHERE name = ?", (name,)
        ).fetchone()
        if project is None:
            raise NotFound(f"no private project {name!r}")
        rows = self._reader.execute(
            "SELECT filename, size, sha256, metadata_sha256, provenance_sha256, requires_python,"
            " upload_time, yanked, yanked_reason FROM files WHERE project = ?"
            " ORDER BY upload_time, filename",
            (name,),
        ).fetchall()
        files = tuple(
            DistFile(
                filename=row["filename"],
                hashes={"sha256": row["sha256"]},
                size=row["size"],
                upload_time=datetime.fromisoformat(row["upload_time"]),
                requires_python=row["requires_python"],
                yanked=bool(row["yanked"]),
                yanked_reason=row["yanked_reason"],
                core_metadata=(
                    {"sha256": row["metadata_sha256"]} if row["metadata_sha256"] else False
                ),
                origin=Origin.PRIVATE,
                provenance=row["provenance_sha256"] is not None,
            )
            for row in rows
        )
        return ProjectPage.build(
            name, files, status=ProjectStatus(), revision=f"{project[0]}/{project[1]}"
        )

    def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
        row = self._reader.execute(
            "SELECT sha256, size FROM files WHERE project = ? AND filename = ?", (project, filename)
        ).fetchone()
        if row is None:
            raise NotFound(f"no file {filename!r} in private project {project!r}")
        return self.files.local(row["sha256"], row["size"])

    def open_metadata(self, project: NormalizedName, filename: str) -> LocalFile:
        return self._open_body("metadata", project, filename)

    def open_provenance(self, project: NormalizedName, filename: str) -> LocalFile:
        return self._open_body("provenance", project, filename)

    def _open_body(
        self, kind: Literal["metadata", "provenance"], project: NormalizedName, filename: str
    ) -> LocalFile:
        """A body kept beside a file (its column is `<kind>_sha256`)."""
        row = self._reader.execute(
            f"SELECT {kind}_sha256 FROM files WHERE project = ? AND filename = ?",
            (project, filename),
        ).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"no {kind} for {filename!r} in private project {project!r}")
        return self.files.local(row[0], None)

    def file_fields(self, filename: str) -> dict[str, list[str]] | None:
        row = self._reader.execute(
            "SELECT fields FROM files WHERE filename = ?", (filename,)
        ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def project_serial(self, name: NormalizedName) -> int | None:
        """The project's change counter (the legacy JSON API's `last_serial`); None if unknown."""
        row = self._reader.execute("SELECT serial FROM projects WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def file_digests(self, project: NormalizedName) -> dict[str, dict[str, str]]:
        """filename -> every digest stored for it (the page's files carry only sha256)."""
        rows = self._reader.execute(
            "SELECT filename, sha256, blake2_256, md5 FROM files WHERE project = ?", (project,)
        ).fetchall()
        return {
            row["filename"]: {
                "sha256": row["sha256"], "blake2_256": row["blake2_256"], "md5": row["md5"]
            }
            for row in rows
        }

    # ---- roles ----

    def project_roles(self, project: NormalizedName) -> RoleRows | None:
        """The project's (user, role) rows; None if there is no such private project."""
        return project_roles(self._reader, project)

    def roles(self, project: NormalizedName) -> RoleRows:
        return self.project_roles(project) or []

    def find_duplicate(self, new: NewFile) -> bool:
        """True if exactly this file is already stored (an idempotent re-upload); raises
        StoreRejected if its filename, its bytes or its release's sdist are taken otherwise."""
        return check_duplicate(self._reader, new)

    # ---- everything, for `pyproxy export` ----

    def project_records(self) -> list[ProjectRecord]:
        """Every private project, with or without files, by name."""
        rows = self._reader.execute(
            "SELECT name, display_name, restricted FROM projects ORDER BY name"
        ).fetchall()
        return [ProjectRecord(NormalizedName(row[0]), row[1], bool(row[2])) for row in rows]

    def file_records(self) -> list[FileRecord]:
        """Every file's record, oldest first."""
        rows = self._reader.execute(
            "SELECT f.filename, p.display_name, f.version, f.filetype, f.size, f.sha256,"
            " f.blake2_256, f.md5, f.upload_time, f.uploader, f.yanked, f.yanked_reason, f.fields"
            " FROM files f JOIN projects p ON p.name = f.project ORDER BY f.upload_time, f.filename"
        ).fetchall()
        return [
            FileRecord(
                filename=row["filename"], display_name=row["display_name"],
                version=row["version"], filetype=row["filetype"], size=row["size"],
                sha256=row["sha256"], blake2_256=row["blake2_256"], md5=row["md5"],
                upload_time=row["upload_time"], uploader=row["uploader"],
                yanked_reason=row["yanked_reason"] if row["yanked"] else None,
                fields=orjson.loads(row["fields"]),
            )
            for row in rows
        ]
