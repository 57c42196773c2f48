"""The rules a new private file is checked against before it is stored, as queries inside the
caller's transaction (the same rules and refusals as stores/private.PrivateStore's)."""

from __future__ import annotations

from pyproxy.model import NormalizedName, version_of
from pyproxy.stores.pg.database import Connection
from pyproxy.stores.private_schema import NewFile, RoleRows, StoreRejected, canonical_version


def project_exists(conn: Connection, project: NormalizedName) -> bool:
    return conn.execute(
        "SELECT 1 FROM private_projects WHERE name = %s", (project,)
    ).fetchone() is not None


def project_roles(conn: Connection, project: NormalizedName) -> RoleRows | None:
    """The project's (user, role) rows; None if there is no such private project."""
    if not project_exists(conn, project):
        return None
    rows = conn.execute(
        "SELECT username, role FROM private_roles WHERE project = %s"
        " ORDER BY role DESC, username COLLATE \"C\"",
        (project,),
    ).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows]


def check_duplicate(conn: Connection, new: NewFile) -> bool:
    """True if exactly this file is already stored; StoreRejected if its filename, its bytes
    or its release's sdist are taken otherwise."""
    row = conn.execute(
        "SELECT filename, sha256, blake2_256 FROM private_files"
        " WHERE filename = %s OR blake2_256 = %s OR sha256 = %s LIMIT 1",
        (new.filename, new.blake2_256, new.sha256),
    ).fetchone()
    if row is not None:
        if row[0] == new.filename and row[1] == new.sha256:
            return True
        raise StoreRejected("file_exists", filename=str(row[0]), blake2_256=str(row[2]))
    if conn.execute(
        "SELECT 1 FROM private_tombstones WHERE filename = %s", (new.filename,)
    ).fetchone():
        raise StoreRejected("filename_removed")
    if new.filetype == "sdist":
        if (removed := _removed_sdist(conn, new)) is not None:
            # legacy sdist names ("my-pkg-1.0.tar.gz") give one release several spellings
            raise StoreRejected("sdist_removed", filename=removed)
        if conn.execute(
            "SELECT 1 FROM private_files WHERE project = %s AND version = %s"
            " AND filetype = 'sdist'",
            (new.project, canonical_version(new.version)),
        ).fetchone():
            raise StoreRejected("sdist_exists")
    return False


def _removed_sdist(conn: Connection, new: NewFile) -> str | None:
    """The deleted sdist of `new`'s release, under whatever spelling it was uploaded."""
    release = canonical_version(new.version)
    rows = conn.execute(
        "SELECT filename FROM private_tombstones WHERE project = %s AND filename LIKE '%%.tar.gz'",
        (new.project,),
    )
    return next(
        (str(name) for (name,) in rows if version_of(str(name), new.project) == release), None
    )
