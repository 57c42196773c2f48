"""The private store of a cluster: records in PostgreSQL, bodies in an injected body store
(stores/private_files.PrivateFiles on one box, the bucket's on a cluster), the same interface
and rules as stores/private.PrivateStore.

Reads come from node memory (private_memory.Memory), reloaded only after a notification.
Every write is one transaction that takes its project's lock, re-checks the rules, moves the
bodies in (durable before the record commits), writes the record and sends
`project:<name>` before committing; the writer's own memory is told at once after the commit.
A body moved in for a record that then failed to commit is removed by `collect_garbage`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from pyproxy.access import ROLES
from pyproxy.model import NormalizedName, NotFound, Unavailable
from pyproxy.stores.outages import DatabaseUnavailable
from pyproxy.stores.pg.database import Connection
from pyproxy.stores.pg.notify import notify
from pyproxy.stores.pg.private_checks import check_duplicate, project_exists, project_roles
from pyproxy.stores.pg.private_reads import TOPIC, PrivateReads
from pyproxy.stores.pg.private_schema import (
    GC_EXCLUSIVE_SQL,
    GC_LOCK,
    GC_SHARED_SQL,
    PROJECT_LOCK_SQL,
)
from pyproxy.stores.private import write_side_body
from pyproxy.stores.private_files import fsync_file
from pyproxy.stores.private_schema import (
    FILE_COLUMNS,
    FileRecord,
    NewFile,
    ProjectRecord,
    RoleRows,
    StoreRejected,
    canonical_version,
    file_row,
)

log = logging.getLogger("pyproxy.private")
_ATTEMPTS = 3  # a unique violation is looked at again: identical (False), refused, or retried


class PgPrivateStore(PrivateReads):
    """`listener` None (the CLI): nothing is held in memory, every read asks the database."""

    def close(self) -> None:
        """The database and the listener belong to whoever opened them (compose)."""

    # ---- roles ----

    def project_roles(self, project: NormalizedName) -> RoleRows | None:
        with self.db.transaction() as conn:
            return project_roles(conn, project)

    def roles(self, project: NormalizedName) -> RoleRows:
        return self.project_roles(project) or []

    def grant(self, project: NormalizedName, user: str, role: str = "maintainer") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._write(project) as conn:
            if not project_exists(conn, project):
                raise NotFound(f"no private project {project!r}")
            conn.execute(
                "INSERT INTO private_roles (project, username, role) VALUES (%s, %s, %s)"
                " ON CONFLICT (project, username) DO UPDATE SET role = excluded.role",
                (project, user, role),
            )

    def revoke(self, project: NormalizedName, user: str) -> bool:
        with self._write(project) as conn:
            cursor = conn.execute(
                "DELETE FROM private_roles WHERE project = %s AND username = %s", (project, user)
            )
            return cursor.rowcount > 0

    def restrict(self, project: NormalizedName, *, undo: bool = False) -> bool:
        with self._write(project) as conn:
            if not project_exists(conn, project):
                raise NotFound(f"no private project {project!r}")
            return conn.execute(
                "UPDATE private_projects SET restricted = %s WHERE name = %s"
                " AND restricted != %s",
                (not undo, project, not undo),
            ).rowcount > 0

    # ---- writes (blocking; call from a worker thread) ----

    @contextmanager
    def _write(self, project: NormalizedName) -> Iterator[Connection]:
        """One transaction holding `project`'s lock; everyone hears of it once it commits."""
        with self.db.transaction() as conn:
            conn.execute(PROJECT_LOCK_SQL, (project,))
            yield conn
            notify(conn, f"{TOPIC}:{project}")
        self._changes.mark(project)  # this node sees its own write at once

    def find_duplicate(self, new: NewFile) -> bool:
        with self.db.transaction() as conn:
            # one snapshot for all its queries: a file committed between two of them must not
            # look like another file of its release (add_file checks again under the lock)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return check_duplicate(conn, new)

    def add_file(
        self, new: NewFile, body: Path, *, allowed: Callable[[RoleRows | None], bool] | None = None
    ) -> bool:
        """As PrivateStore.add_file. A race the project lock cannot see (the same bytes or
        filename sent to two projects at once) ends in a unique violation: looked at again,
        it is an identical file (False) or a refusal, as if the two had taken turns."""
        fsync_file(body)
        for attempt in range(_ATTEMPTS):
            try:
                return self._add_file(new, body, allowed)
            except psycopg.errors.UniqueViolation:
                if attempt == _ATTEMPTS - 1:
                    raise
            except StoreRejected as refusal:
                if refusal.kind == "forbidden" or attempt == 0:
                    raise  # refused before any body was moved in
                self._collect_quietly()  # a body moved in before the collision
                raise
            except Exception:
                self._collect_quietly()
                raise
        raise AssertionError("unreachable")

    def _collect_quietly(self) -> None:
        """After a failed commit: remove what it may have moved in for nothing."""
        with contextlib.suppress(Exception):
            self.collect_garbage()

    def _add_file(
        self, new: NewFile, body: Path, allowed: Callable[[RoleRows | None], bool] | None
    ) -> bool:
        with (
            self.files.temporary_file() as metadata_tmp,
            self.files.temporary_file() as provenance_tmp,
        ):
            metadata_sha256 = write_side_body(metadata_tmp, new.core_metadata)
            provenance_sha256 = write_side_body(provenance_tmp, new.provenance)
            with self._write(new.project) as conn:
                if check_duplicate(conn, new):
                    return False
                if allowed is not None and not allowed(project_roles(conn, new.project)):
                    raise StoreRejected("forbidden")
                self._claim_project(conn, new)
                conn.execute(GC_SHARED_SQL, (GC_LOCK,))
                # durable before the record commits
                self.files.move_into_place(body, new.sha256)
                if metadata_sha256 is not None:
                    self.files.move_into_place(metadata_tmp, metadata_sha256)
                if provenance_sha256 is not None:
                    self.files.move_into_place(provenance_tmp, provenance_sha256)
                conn.execute(
                    f"INSERT INTO private_files ({FILE_COLUMNS})"
                    f" VALUES ({', '.join(['%s'] * 17)})",
                    file_row(new, metadata_sha256, provenance_sha256),
                )
                _bump(conn, new.project)
        return True

    @staticmethod
    def _claim_project(conn: Connection, new: NewFile) -> None:
        """Create the project on its first file; its first uploader owns it."""
        conn.execute(
            "INSERT INTO private_projects (name, display_name, created) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING",
            (new.project, new.display_name, datetime.now(UTC).isoformat()),
        )
        if new.uploader is not None and conn.execute(
            "SELECT 1 FROM private_roles WHERE project = %s AND role != 'reader' LIMIT 1",
            (new.project,),
        ).fetchone() is None:
            conn.execute(
                "INSERT INTO private_roles (project, username, role) VALUES (%s, %s, 'owner')"
                " ON CONFLICT (project, username) DO UPDATE SET role = 'owner'",
                (new.project, new.uploader),
            )

    def reserve(self, project: NormalizedName, display_name: str) -> bool:
        with self._write(project) as conn:
            return conn.execute(
                "INSERT INTO private_projects (name, display_name, created) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (project, display_name, datetime.now(UTC).isoformat()),
            ).rowcount > 0

    # ---- everything, for `pyproxy export` ----

    def project_records(self) -> list[ProjectRecord]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, display_name, restricted FROM private_projects ORDER BY name"
            ).fetchall()
        return [ProjectRecord(NormalizedName(row[0]), row[1], bool(row[2])) for row in rows]

    def file_records(self) -> list[FileRecord]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT f.filename, p.display_name, f.version, f.filetype, f.size, f.sha256,"
                " f.blake2_256, f.md5, f.upload_time, f.uploader, f.yanked, f.yanked_reason,"
                " f.fields FROM private_files f JOIN private_projects p ON p.name = f.project"
                " ORDER BY f.upload_time, f.filename"
            ).fetchall()
        return [
            FileRecord(
                filename=row[0], display_name=row[1], version=row[2], filetype=row[3],
                size=row[4], sha256=row[5], blake2_256=row[6], md5=row[7], upload_time=row[8],
                uploader=row[9], yanked_reason=row[11] if row[10] else None,
                fields=orjson.loads(row[12]),
            )
            for row in rows
        ]

    def yank(
        self, project: NormalizedName, version: str, reason: str, *, undo: bool = False
    ) -> int:
        with self._write(project) as conn:
            count = conn.execute(
                "UPDATE private_files SET yanked = %s, yanked_reason = %s"
                " WHERE project = %s AND version = %s",
                (not undo, "" if undo else reason, project, canonical_version(version)),
            ).rowcount
            if count == 0:
                raise NotFound(f"no files of {project!r} version {version!r}")
            _bump(conn, project)
        return count

    def remove(self, project: NormalizedName, version: str | None, *, forget_name: bool) -> int:
        """As PrivateStore.remove: the filenames stay burnt, the name reserved unless
        `forget_name`; then the bodies nothing refers to any more are collected."""
        with self._write(project) as conn:
            if not project_exists(conn, project):
                raise NotFound(f"no private project {project!r}")
            where, args = "project = %s", [str(project)]
            if version is not None:
                where, args = "project = %s AND version = %s", [project, canonical_version(version)]
            rows = conn.execute(
                f"SELECT filename FROM private_files WHERE {where}", args
            ).fetchall()
            if version is not None and not rows:
                raise NotFound(f"no files of {project!r} version {version!r}")
            now = datetime.now(UTC).isoformat()
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO private_tombstones (filename, project, removed)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(row[0], project, now) for row in rows],
                )
            conn.execute(f"DELETE FROM private_files WHERE {where}", args)
            if forget_name and version is None:
                conn.execute("DELETE FROM private_roles WHERE project = %s", (project,))
                conn.execute("DELETE FROM private_projects WHERE name = %s", (project,))
            else:
                _bump(conn, project)
        try:
            self.collect_garbage()
        except (Unavailable, DatabaseUnavailable) as exc:  # removed all the same
            log.warning("the removed files' bodies stay until the next collection (a node's"
                        " start, or the next remove): %s", exc)
        return len(rows)

    def collect_garbage(self) -> int:
        """Remove bodies no record refers to, and temp files left by crashed uploads; under the
        exclusive GC lock, so no node is between moving a body in and committing its record."""
        removed = self.files.sweep_temporary()
        with self.db.transaction() as conn:
            conn.execute(GC_EXCLUSIVE_SQL, (GC_LOCK,))
            referenced = {
                str(sha)
                for row in conn.execute(
                    "SELECT sha256, metadata_sha256, provenance_sha256 FROM private_files"
                )
                for sha in row if sha is not None
            }
            removed += self.files.remove_unreferenced(referenced)
        return removed


def _bump(conn: Connection, project: NormalizedName) -> None:
    conn.execute("UPDATE private_projects SET serial = serial + 1 WHERE name = %s", (project,))
