"""The checks of the private store's writes (stores/private.py), on a SQLite connection: who
holds roles on a project, and whether an upload's file is a duplicate or was removed."""

from __future__ import annotations

import sqlite3

from pyproxy.model import NormalizedName, version_of
from pyproxy.stores.private_schema import NewFile, RoleRows, StoreRejected, canonical_version


def project_roles(db: sqlite3.Connection, project: NormalizedName) -> RoleRows | None:
    if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
        return None
    rows = db.execute(
        "SELECT user, role FROM roles WHERE project = ? ORDER BY role DESC, user", (project,)
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def check_duplicate(db: sqlite3.Connection, new: NewFile) -> bool:
    row = db.execute(
        "SELECT filename, sha256, blake2_256 FROM files WHERE filename = ? OR blake2_256 = ?",
        (new.filename, new.blake2_256),
    ).fetchone()
    if row is not None:
        if row["filename"] == new.filename and row["sha256"] == new.sha256:
            return True
        raise StoreRejected(
            "file_exists", filename=row["filename"], blake2_256=row["blake2_256"]
        )
    if db.execute("SELECT 1 FROM tombstones WHERE filename = ?", (new.filename,)).fetchone():
        raise StoreRejected("filename_removed")
    if new.filetype == "sdist" and (removed := _removed_sdist(db, new)) is not None:
        # legacy sdist names ("my-pkg-1.0.tar.gz") give one release several spellings
        raise StoreRejected("sdist_removed", filename=removed)
    if new.filetype == "sdist" and db.execute(
        "SELECT 1 FROM files WHERE project = ? AND version = ? AND filetype = 'sdist'",
        (new.project, canonical_version(new.version)),
    ).fetchone():
        raise StoreRejected("sdist_exists")
    return False


def _removed_sdist(db: sqlite3.Connection, new: NewFile) -> str | None:
    """The deleted sdist of `new`'s release, under whatever spelling it was uploaded."""
    release = canonical_version(new.version)
    rows = db.execute(
        "SELECT filename FROM tombstones WHERE project = ? AND filename LIKE '%.tar.gz'",
        (new.project,),
    )
    return next((name for (name,) in rows if version_of(name, new.project) == release), None)
