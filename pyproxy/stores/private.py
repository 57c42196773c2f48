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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pyproxy.access import ROLES
from pyproxy.model import NormalizedName, NotFound
from pyproxy.stores import sqlite
from pyproxy.stores.private_checks import check_duplicate, project_roles
from pyproxy.stores.private_files import fsync_file
from pyproxy.stores.private_reads import PrivateReads
from pyproxy.stores.private_schema import (
    FILE_COLUMNS,
    SCHEMA,
    NewFile,
    RoleRows,
    StoreRejected,
    canonical_version,
    file_row,
)


class PrivateStore(PrivateReads):
    def _writer(self) -> sqlite3.Connection:
        # one connection per write: writes run in worker threads
        return sqlite.connect(self._db_path, SCHEMA)

    # ---- roles ----

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
                    f"INSERT INTO files ({FILE_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                    file_row(new, metadata_sha256, provenance_sha256),
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
