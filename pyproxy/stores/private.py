"""Durable private packages: records in SQLite, bodies content-addressed on disk, never evicted.

A file becomes visible only when its record commits, and its body is fsync'd and renamed into
place inside the same write transaction, so a crash at any point leaves either nothing visible
or a complete file. Bodies left without a record by a crash are removed by `collect_garbage`.
The bodies themselves are kept by `private_files.PrivateFiles`, or by another body store passed
as `files` (a cluster node's bucket, stores/bucket_files.BucketFiles); `open_*` then raise
private_files.NotLocal for a body not copied to this node yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson

from pyproxy.access import ROLES
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
from pyproxy.stores.private_files import FileBodies, PrivateFiles, fsync_file
from pyproxy.stores.private_schema import (
    DB_RECHECK_S,
    SCHEMA,
    FileRecord,
    NewFile,
    ProjectRecord,
    RoleRows,
    StoreRejected,
    canonical_version,
    migrate,
)


class PrivateStore:
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

    def _writer(self) -> sqlite3.Connection:
        # one connection per write: writes run in worker threads
        return sqlite.connect(self._db_path, SCHEMA)

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

    def grant(self, project: NormalizedName, user: str, role: str = "maintainer") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._write() as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
                raise NotFound(f"no private project {project!r}")
            db.execute(
                "INSERT INTO roles (project, user, role) VALUES (?, ?, ?)"
                " ON CONFLICT (project, user) DO UPDATE SET role = excluded.role",
                (project, user, role),
            )

    def revoke(self, project: NormalizedName, user: str) -> bool:
        with self._write() as db:
            cursor = db.execute("DELETE FROM roles WHERE project = ? AND user = ?", (project, user))
            return cursor.rowcount > 0

    def restrict(self, project: NormalizedName, *, undo: bool = False) -> bool:
        """Make a project readable only by users with a role on it (and admins), or by every
        reader again with `undo`; False if it already was."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
                raise NotFound(f"no private project {project!r}")
            return db.execute(
                "UPDATE projects SET restricted = ? WHERE name = ? AND restricted != ?",
                (int(not undo), project, int(not undo)),
            ).rowcount > 0

    def roles(self, project: NormalizedName) -> RoleRows:
        return self.project_roles(project) or []

    # ---- writes (blocking; call from a worker thread) ----

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._writer()
        try:
            with sqlite.write_transaction(db):
                yield db
            self._changes.bump()  # committed: every process reloads on its next read
        finally:
            db.close()

    def find_duplicate(self, new: NewFile) -> bool:
        """True if exactly this file is already stored (an idempotent re-upload); raises
        StoreRejected if its filename, its bytes or its release's sdist are taken otherwise."""
        return check_duplicate(self._reader, new)

    def add_file(
        self, new: NewFile, body: Path, *, allowed: Callable[[RoleRows | None], bool] | None = None
    ) -> bool:
        """Store an uploaded file; False if the identical file was already there.

        `body` is a temp file from `files.temporary_file()`; it is moved into the store.
        `allowed` (None: no check) is asked under the write lock, with the project's role rows
        as they are then, whether the upload may go ahead.
        """
        fsync_file(body)
        try:
            return self._add_file(new, body, allowed)
        except StoreRejected:
            raise  # refused before any body was moved in
        except Exception:
            # a commit that failed (e.g. a full disk) may leave bodies moved in for a record
            # that never was: the sweep (under the write lock) removes what nothing refers to
            with contextlib.suppress(Exception):
                self.collect_garbage()
            raise

    def _add_file(
        self, new: NewFile, body: Path, allowed: Callable[[RoleRows | None], bool] | None
    ) -> bool:
        with (
            self.files.temporary_file() as metadata_tmp,
            self.files.temporary_file() as provenance_tmp,
        ):
            metadata_sha256 = write_side_body(metadata_tmp, new.core_metadata)
            provenance_sha256 = write_side_body(provenance_tmp, new.provenance)
            with self._write() as db:
                # checked again under the write lock: another process may have won the race
                if check_duplicate(db, new):
                    return False
                if allowed is not None and not allowed(project_roles(db, new.project)):
                    raise StoreRejected("forbidden")
                self._claim_project(db, new)
                # bodies enter the store only under the write lock, so garbage collection
                # (which holds it too) never sees a body whose record is about to commit
                self.files.move_into_place(body, new.sha256)
                if metadata_sha256 is not None:
                    self.files.move_into_place(metadata_tmp, metadata_sha256)
                if provenance_sha256 is not None:
                    self.files.move_into_place(provenance_tmp, provenance_sha256)
                db.execute(
                    "INSERT INTO files (filename, project, version, filetype, size, sha256,"
                    " blake2_256, md5, metadata_sha256, provenance_sha256, requires_python,"
                    " summary, upload_time, uploader, yanked, yanked_reason, fields)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.filename, new.project, canonical_version(new.version), new.filetype,
                        new.size, new.sha256, new.blake2_256, new.md5, metadata_sha256,
                        provenance_sha256, new.requires_python, new.summary,
                        new.upload_time or datetime.now(UTC).isoformat(),
                        new.uploader, new.yanked_reason is not None, new.yanked_reason or "",
                        orjson.dumps(dict(new.fields)),
                    ),
                )
                self._bump(db, new.project)
        return True

    @staticmethod
    def _claim_project(db: sqlite3.Connection, new: NewFile) -> None:
        """Create the project on its first file; its first uploader owns it."""
        db.execute(
            "INSERT INTO projects (name, display_name, created) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (new.project, new.display_name, datetime.now(UTC).isoformat()),
        )
        if new.uploader is not None and db.execute(
            "SELECT 1 FROM roles WHERE project = ? AND role != 'reader' LIMIT 1", (new.project,)
        ).fetchone() is None:
            db.execute(
                "INSERT INTO roles (project, user, role) VALUES (?, ?, 'owner')"
                " ON CONFLICT (project, user) DO UPDATE SET role = 'owner'",
                (new.project, new.uploader),
            )

    @staticmethod
    def _bump(db: sqlite3.Connection, project: NormalizedName) -> None:
        db.execute("UPDATE projects SET serial = serial + 1 WHERE name = ?", (project,))

    def reserve(self, project: NormalizedName, display_name: str) -> bool:
        """Take a name for private use without a file (what `remove` leaves); False if taken."""
        with self._write() as db:
            inserted = db.execute(
                "INSERT INTO projects (name, display_name, created) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (project, display_name, datetime.now(UTC).isoformat()),
            ).rowcount
        return bool(inserted)

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

    def yank(
        self, project: NormalizedName, version: str, reason: str, *, undo: bool = False
    ) -> int:
        with self._write() as db:
            count = db.execute(
                "UPDATE files SET yanked = ?, yanked_reason = ? WHERE project = ? AND version = ?",
                (0 if undo else 1, "" if undo else reason, project, canonical_version(version)),
            ).rowcount
            if count == 0:
                raise NotFound(f"no files of {project!r} version {version!r}")
            self._bump(db, project)
        return count

    def remove(self, project: NormalizedName, version: str | None, *, forget_name: bool) -> int:
        """Delete files (all, or one version's). Their filenames are never reusable, and the
        project name stays reserved (so an upstream project cannot take it over) unless
        `forget_name`."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
                raise NotFound(f"no private project {project!r}")
            where, args = "project = ?", [str(project)]
            if version is not None:
                where, args = "project = ? AND version = ?", [project, canonical_version(version)]
            rows = db.execute(f"SELECT filename FROM files WHERE {where}", args).fetchall()
            if version is not None and not rows:
                raise NotFound(f"no files of {project!r} version {version!r}")
            now = datetime.now(UTC).isoformat()
            db.executemany(
                "INSERT OR IGNORE INTO tombstones (filename, project, removed) VALUES (?, ?, ?)",
                [(row[0], project, now) for row in rows],
            )
            db.execute(f"DELETE FROM files WHERE {where}", args)
            if forget_name and version is None:
                db.execute("DELETE FROM roles WHERE project = ?", (project,))
                db.execute("DELETE FROM projects WHERE name = ?", (project,))
            else:
                self._bump(db, project)
        self.collect_garbage()
        return len(rows)

    def collect_garbage(self) -> int:
        """Remove bodies no record refers to, and temp files left by crashed uploads."""
        removed = self.files.sweep_temporary()
        with self._write() as db:  # bodies are only moved in under this lock
            referenced = {row[0] for row in db.execute("SELECT sha256 FROM files")}
            for column in ("metadata_sha256", "provenance_sha256"):
                referenced |= {
                    row[0]
                    for row in db.execute(f"SELECT {column} FROM files WHERE {column} IS NOT NULL")
                }
            removed += self.files.remove_unreferenced(referenced)
        return removed


def write_side_body(path: Path, body: bytes | None) -> str | None:
    """Write a file's `.metadata` or provenance to its temp file, fsync'd; its sha256."""
    if body is None:
        return None
    path.write_bytes(body)
    fsync_file(path)
    return hashlib.sha256(body).hexdigest()
