"""The private store's tables, the records that go in and come out of them, the refusals a
write can meet, and the migration that brings an older database up to the tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from packaging.version import InvalidVersion, Version

from pyproxy.model import NormalizedName, NotFound
from pyproxy.stores import sqlite

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
    provenance_sha256 TEXT,           -- PEP 740: the provenance object built from its attestations
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


# why the store refuses a file: "file_exists" (its filename, or its bytes under another
# filename, are stored as `filename` with `blake2_256`), "filename_removed" (a removed file had
# that filename), "sdist_removed" (the release's sdist was removed; it was `filename`),
# "sdist_exists" (one sdist per release), "forbidden" (add_file's `allowed` said no)
Refusal = Literal["file_exists", "filename_removed", "sdist_removed", "sdist_exists", "forbidden"]


class StoreRejected(Exception):
    """A file the store refuses, by rule; the publish service words it for the uploader."""

    def __init__(
        self, kind: Refusal, *, filename: str | None = None, blake2_256: str | None = None
    ) -> None:
        super().__init__(kind)
        self.kind: Refusal = kind
        self.filename = filename  # the stored or removed file it collides with
        self.blake2_256 = blake2_256


@dataclass(frozen=True, slots=True)
class NewFile:
    """The record of one file to store (built by the publish service)."""

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
    provenance: bytes | None = None  # PEP 740 provenance object (JSON) of its attestations


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    name: NormalizedName
    display_name: str
    restricted: bool


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A stored file's record as `pyproxy export` writes it."""

    filename: str
    display_name: str  # its project's
    version: str
    filetype: str
    size: int
    sha256: str
    blake2_256: str
    md5: str
    upload_time: str  # ISO 8601, UTC
    uploader: str | None
    yanked_reason: str | None  # None: not yanked
    fields: dict[str, list[str]]


# a new file's row, in both stores' files tables (SQLite's `files`, PostgreSQL's `private_files`)
FILE_COLUMNS = (
    "filename, project, version, filetype, size, sha256, blake2_256, md5, metadata_sha256,"
    " provenance_sha256, requires_python, summary, upload_time, uploader, yanked,"
    " yanked_reason, fields"
)


def file_row(
    new: NewFile, metadata_sha256: str | None, provenance_sha256: str | None
) -> tuple[object, ...]:
    """The values of FILE_COLUMNS for `new`, whose side bodies have those sha256s."""
    return (
        new.filename, new.project, canonical_version(new.version), new.filetype,
        new.size, new.sha256, new.blake2_256, new.md5, metadata_sha256,
        provenance_sha256, new.requires_python, new.summary,
        new.upload_time or datetime.now(UTC).isoformat(),
        new.uploader, new.yanked_reason is not None, new.yanked_reason or "",
        orjson.dumps(dict(new.fields)).decode(),
    )


def canonical_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        raise NotFound(f"{version!r} is not a valid version") from None


# how often readers also ask the database whether it changed (normally the change counter says)
DB_RECHECK_S = 1.0


# (user, role) rows of one project; None where there is no such project
RoleRows = list[tuple[str, str]]


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to SCHEMA (processes may race here)."""

    def missing(table: str, column: str) -> bool:
        return column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

    for table, column, definition in (
        ("projects", "restricted", "INTEGER NOT NULL DEFAULT 0"),
        ("files", "provenance_sha256", "TEXT"),
    ):
        if missing(table, column):
            with sqlite.write_transaction(db):
                if missing(table, column):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
