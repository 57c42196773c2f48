"""Durable private packages: records in SQLite, bodies content-addressed on disk, never evicted.

A file becomes visible only when its record commits, and its body is fsync'd and renamed into
place inside the same write transaction, so a crash at any point leaves either nothing visible
or a complete file. Bodies left without a record by a crash are removed by `collect_garbage`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from packaging.version import InvalidVersion, Version

from pyproxy.model import (
    DistFile,
    LocalFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectList,
    ProjectPage,
    ProjectStatus,
    version_of,
)
from pyproxy.publish.validate import UploadForm, ValidatedFile
from pyproxy.stores import sqlite
from pyproxy.stores.changes import ChangeCounter

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,            -- PEP 503 normalised
    display_name TEXT NOT NULL,
    created TEXT NOT NULL,
    serial INTEGER NOT NULL DEFAULT 0, -- bumped on every visible change
    restricted INTEGER NOT NULL DEFAULT 0 -- readable only by users with a role, and admins
);
CREATE TABLE IF NOT EXISTS files (
    filename TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES projects(name),
    version TEXT NOT NULL,            -- str(Version(...)), for matching yank/remove arguments
    filetype TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    blake2_256 TEXT NOT NULL UNIQUE,  -- the same bytes under two filenames is a duplicate
    md5 TEXT NOT NULL,
    metadata_sha256 TEXT,
    requires_python TEXT,
    summary TEXT,
    upload_time TEXT NOT NULL,
    uploader TEXT,
    yanked INTEGER NOT NULL DEFAULT 0,
    yanked_reason TEXT NOT NULL DEFAULT '',
    fields BLOB NOT NULL               -- the upload form's metadata, JSON
);
CREATE INDEX IF NOT EXISTS files_by_project ON files(project);
CREATE UNIQUE INDEX IF NOT EXISTS one_sdist_per_release
    ON files(project, version) WHERE filetype = 'sdist';
CREATE TABLE IF NOT EXISTS roles (
    project TEXT NOT NULL REFERENCES projects(name),
    user TEXT NOT NULL,
    role TEXT NOT NULL,               -- owner | maintainer | reader (may read, not upload)
    PRIMARY KEY (project, user)
);
CREATE TABLE IF NOT EXISTS tombstones (
    filename TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    removed TEXT NOT NULL
)
"""



class StoreRejected(Exception):
    """An upload the store refuses; `message` is one line meant for the uploader."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class NewFile:
    filename: str
    project: NormalizedName
    display_name: str
    version: str
    filetype: str
    size: int
    sha256: str
    blake2_256: str
    md5: str
    core_metadata: bytes | None
    requires_python: str | None
    summary: str | None
    fields: Mapping[str, tuple[str, ...]]
    uploader: str | None
    # `pyproxy import` keeps what the exporting index recorded; an upload leaves them None
    upload_time: str | None = None  # ISO 8601, UTC
    yanked_reason: str | None = None  # None: not yanked


def new_file(
    form: UploadForm,
    checked: ValidatedFile,
    size: int,
    digests: Mapping[str, str],
    uploader: str | None,
    **recorded: str | None,
) -> NewFile:
    """The record of a validated upload (`recorded`: what an import keeps, see NewFile)."""
    return NewFile(
        filename=checked.filename,
        project=form.project,
        display_name=form.name,
        version=checked.version,
        filetype=checked.filetype,
        size=size,
        sha256=digests["sha256"],
        blake2_256=digests["blake2_256"],
        md5=digests["md5"],
        # PEP 658 for wheels only: an sdist's PKG-INFO may leave dependencies dynamic
        core_metadata=checked.core_metadata if checked.filetype == "bdist_wheel" else None,
        requires_python=checked.requires_python,
        summary=checked.summary,
        fields=form.fields,
        uploader=uploader,
        **recorded,  # type: ignore[arg-type]
    )


def not_allowed(user: str, project: NormalizedName) -> StoreRejected:
    return StoreRejected(
        f"The user {user!r} isn't allowed to upload to project {project!r}."
        f" An owner can allow it with: pyproxy grant {project} {user}",
        status=403,
    )


def canonical_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        raise NotFound(f"{version!r} is not a valid version") from None


ROLES = ("owner", "maintainer", "reader")
# how often readers also ask the database whether it changed (normally the change counter says)
DB_RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class ReadRestrictions:
    """The restricted projects and who may read each: the users holding any role on it.
    Admins read everything; every other project is readable by anyone allowed to read."""

    readers: Mapping[NormalizedName, frozenset[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.readers)

    def may_read(self, project: NormalizedName, user: str | None, *, admin: bool) -> bool:
        allowed = self.readers.get(project)
        return allowed is None or admin or (user is not None and user in allowed)

    def hidden_from(self, user: str | None, *, admin: bool) -> frozenset[NormalizedName]:
        """The projects a listing must leave out for this reader."""
        if admin:
            return frozenset()
        return frozenset(name for name, users in self.readers.items() if user not in users)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to SCHEMA (processes may race here)."""

    def missing() -> bool:
        return "restricted" not in {row[1] for row in db.execute("PRAGMA table_info(projects)")}

    if missing():
        with sqlite.write_transaction(db):
            if missing():
                db.execute("ALTER TABLE projects ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0")


class PrivateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs"
        self.tmp = directory / "tmp"
        for path in (self.blobs, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
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
        _migrate(self._reader)
        self._restrictions = ReadRestrictions()
        self._restrictions_version: tuple[int, int] = (-1, -1)

    def close(self) -> None:
        self._reader.close()
        self._changes.close()

    def _writer(self) -> sqlite3.Connection:
        # one connection per write: writes run in worker threads
        return sqlite.connect(self._db_path, SCHEMA)

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    @contextmanager
    def temporary_file(self) -> Iterator[Path]:
        """A temp file on the store's filesystem (so the final rename is atomic), removed
        unless it was moved into place. It is flock'd while in use, so any process can tell
        an abandoned one (its writer crashed) from one still being written."""
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.tmp)
        path = Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

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

    def read_restrictions(self) -> ReadRestrictions:
        """Cheap enough for every request: reloaded only when some process committed a change,
        and then before this request is judged (a grant revoked is refused at once)."""
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
            self._restrictions = ReadRestrictions(
                {name: frozenset(users) for name, users in readers.items()}
            )
            self._restrictions_version = version
        return self._restrictions

    def has_file(self, project: NormalizedName, filename: str) -> bool:
        row = self._reader.execute(
            "SELECT 1 FROM files WHERE project = ? AND filename = ?", (project, filename)
        ).fetchone()
        return row is not None

    def list_projects(self) -> ProjectList:
        self._fresh()
        if self._list is None:
            rows = self._reader.execute("SELECT display_name FROM projects ORDER BY name").fetchall()
            changes, db_version = self._pages_version
            self._list = ProjectList(tuple(row[0] for row in rows), revision=f"d{changes}.{db_version}")
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
            "SELECT filename, size, sha256, metadata_sha256, requires_python, upload_time,"
            " yanked, yanked_reason FROM files WHERE project = ? ORDER BY upload_time, filename",
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
                core_metadata={"sha256": row["metadata_sha256"]} if row["metadata_sha256"] else False,
                origin=Origin.PRIVATE,
            )
            for row in rows
        )
        return ProjectPage.build(name, files, status=ProjectStatus(), revision=f"{project[0]}/{project[1]}")

    def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
        row = self._reader.execute(
            "SELECT sha256, size FROM files WHERE project = ? AND filename = ?", (project, filename)
        ).fetchone()
        if row is None:
            raise NotFound(f"no file {filename!r} in private project {project!r}")
        return LocalFile(
            self.blob_path(row["sha256"]), row["size"], row["sha256"], cache="private"
        )

    def open_metadata(self, project: NormalizedName, filename: str) -> LocalFile:
        row = self._reader.execute(
            "SELECT metadata_sha256 FROM files WHERE project = ? AND filename = ?",
            (project, filename),
        ).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"no metadata for {filename!r} in private project {project!r}")
        path = self.blob_path(row[0])
        return LocalFile(path, path.stat().st_size, row[0], cache="private")

    def file_fields(self, filename: str) -> dict[str, list[str]] | None:
        row = self._reader.execute("SELECT fields FROM files WHERE filename = ?", (filename,)).fetchone()
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
            row["filename"]: {"sha256": row["sha256"], "blake2_256": row["blake2_256"], "md5": row["md5"]}
            for row in rows
        }

    # ---- permissions ----

    def may_upload(self, user: str, project: NormalizedName, *, admin: bool) -> bool:
        """Anyone may claim a new name; an existing one needs a role (or admin)."""
        if admin:
            return True
        return self._may_upload(self._reader, user, project)

    @staticmethod
    def _may_upload(db: sqlite3.Connection, user: str, project: NormalizedName) -> bool:
        if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
            return True
        owned = db.execute(
            "SELECT 1 FROM roles WHERE project = ? AND role != 'reader' LIMIT 1", (project,)
        ).fetchone()
        if owned is None:
            return True  # a name reserved by removal, with no one left holding it
        role = db.execute(
            "SELECT 1 FROM roles WHERE project = ? AND user = ? AND role != 'reader'",
            (project, user),
        ).fetchone()
        return role is not None

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

    def roles(self, project: NormalizedName) -> list[tuple[str, str]]:
        rows = self._reader.execute(
            "SELECT user, role FROM roles WHERE project = ? ORDER BY role DESC, user", (project,)
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

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
        """True if exactly this file is already stored (an idempotent re-upload);
        raises StoreRejected if the filename or the bytes are already taken otherwise."""
        return self._check_duplicate(self._reader, new)

    @staticmethod
    def _check_duplicate(db: sqlite3.Connection, new: NewFile) -> bool:
        row = db.execute(
            "SELECT filename, sha256, blake2_256 FROM files WHERE filename = ? OR blake2_256 = ?",
            (new.filename, new.blake2_256),
        ).fetchone()
        if row is not None:
            if row["filename"] == new.filename and row["sha256"] == new.sha256:
                return True
            raise StoreRejected(
                f"File already exists ({row['filename']!r}, with blake2_256 hash"
                f" {row['blake2_256']!r}). Use a different version or filename."
            )
        if db.execute("SELECT 1 FROM tombstones WHERE filename = ?", (new.filename,)).fetchone():
            raise StoreRejected(
                "This filename was previously used by a file that has since been deleted."
                " Use a different version."
            )
        if new.filetype == "sdist" and (removed := _removed_sdist(db, new)) is not None:
            # legacy sdist names ("my-pkg-1.0.tar.gz") give one release several spellings
            raise StoreRejected(
                f"The sdist of this release was previously uploaded as {removed!r} and has since"
                " been deleted. Use a different version."
            )
        if new.filetype == "sdist" and db.execute(
            "SELECT 1 FROM files WHERE project = ? AND version = ? AND filetype = 'sdist'",
            (new.project, canonical_version(new.version)),
        ).fetchone():
            raise StoreRejected("Only one sdist may be uploaded per release.")
        return False

    def add_file(self, new: NewFile, body: Path, *, admin: bool = False) -> bool:
        """Store an uploaded file; False if the identical file was already there.

        `body` is a temp file from `temporary_file()`; it is moved into the store.
        """
        _fsync_file(body)
        with self.temporary_file() as metadata_tmp:
            metadata_sha256 = None
            if new.core_metadata is not None:
                metadata_sha256 = hashlib.sha256(new.core_metadata).hexdigest()
                metadata_tmp.write_bytes(new.core_metadata)
                _fsync_file(metadata_tmp)
            with self._write() as db:
                # checked again under the write lock: another process may have won the race
                if self._check_duplicate(db, new):
                    return False
                if new.uploader is not None and not admin and not self._may_upload(
                    db, new.uploader, new.project
                ):
                    raise not_allowed(new.uploader, new.project)
                self._claim_project(db, new)
                # bodies enter the store only under the write lock, so garbage collection
                # (which holds it too) never sees a body whose record is about to commit
                self._move_into_place(body, new.sha256)
                if metadata_sha256 is not None:
                    self._move_into_place(metadata_tmp, metadata_sha256)
                db.execute(
                    "INSERT INTO files (filename, project, version, filetype, size, sha256,"
                    " blake2_256, md5, metadata_sha256, requires_python, summary, upload_time,"
                    " uploader, yanked, yanked_reason, fields)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.filename, new.project, canonical_version(new.version), new.filetype,
                        new.size, new.sha256, new.blake2_256, new.md5, metadata_sha256,
                        new.requires_python, new.summary,
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

    def _move_into_place(self, source: Path, sha256: str) -> None:
        target = self.blob_path(sha256)
        if target.exists():
            return  # content-addressed: the same bytes are already there
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        _fsync_dir(target.parent)

    def reserve(self, project: NormalizedName, display_name: str) -> bool:
        """Take a name for private use without a file (what `remove` leaves); False if taken."""
        with self._write() as db:
            inserted = db.execute(
                "INSERT INTO projects (name, display_name, created) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (project, display_name, datetime.now(UTC).isoformat()),
            ).rowcount
        return bool(inserted)

    # ---- export ----

    def exported_projects(self) -> list[dict[str, object]]:
        """Every private project, with or without files: name, display name, restriction, roles."""
        rows = self._reader.execute(
            "SELECT name, display_name, restricted FROM projects ORDER BY name"
        ).fetchall()
        return [
            {
                "name": row[0], "display_name": row[1], "restricted": bool(row[2]),
                "roles": [{"user": user, "role": role} for user, role in self.roles(row[0])],
            }
            for row in rows
        ]

    def exported_files(self) -> list[dict[str, object]]:
        """Every file's record, oldest first, as `pyproxy export` writes it."""
        rows = self._reader.execute(
            "SELECT f.filename, p.display_name, f.version, f.filetype, f.size, f.sha256,"
            " f.blake2_256, f.md5, f.upload_time, f.uploader, f.yanked, f.yanked_reason, f.fields"
            " FROM files f JOIN projects p ON p.name = f.project ORDER BY f.upload_time, f.filename"
        ).fetchall()
        return [
            {
                "filename": row["filename"], "name": row["display_name"], "version": row["version"],
                "filetype": row["filetype"], "size": row["size"], "sha256": row["sha256"],
                "blake2_256": row["blake2_256"], "md5": row["md5"],
                "upload_time": row["upload_time"], "uploader": row["uploader"],
                "yanked_reason": row["yanked_reason"] if row["yanked"] else None,
                "fields": orjson.loads(row["fields"]),
            }
            for row in rows
        ]

    def yank(self, project: NormalizedName, version: str, reason: str, *, undo: bool = False) -> int:
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
            where, args = "project = ?", [project]
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
        removed = 0
        for leftover in self.tmp.glob("upload-*.part"):
            if _abandoned(leftover):
                leftover.unlink(missing_ok=True)
                removed += 1
        with self._write() as db:  # bodies are only moved in under this lock
            referenced = {row[0] for row in db.execute("SELECT sha256 FROM files")}
            referenced |= {
                row[0]
                for row in db.execute(
                    "SELECT metadata_sha256 FROM files WHERE metadata_sha256 IS NOT NULL"
                )
            }
            for blob in self.blobs.glob("*/*/*"):
                if blob.name not in referenced:
                    blob.unlink(missing_ok=True)
                    removed += 1
        return removed


def _removed_sdist(db: sqlite3.Connection, new: NewFile) -> str | None:
    """The deleted sdist of `new`'s release, under whatever spelling it was uploaded."""
    release = canonical_version(new.version)
    rows = db.execute(
        "SELECT filename FROM tombstones WHERE project = ? AND filename LIKE '%.tar.gz'",
        (new.project,),
    )
    return next((name for (name,) in rows if version_of(name) == release), None)


def _abandoned(path: Path) -> bool:
    """True if no process holds the temp file's lock (its upload died with its process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PrivateRepository:
    """The private store as a read-only Repository (private packages only)."""

    def __init__(self, store: PrivateStore) -> None:
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
        # no private file offers a provenance object (its page never says so)
        raise NotFound(f"no provenance for {filename!r} in project {project!r}")
