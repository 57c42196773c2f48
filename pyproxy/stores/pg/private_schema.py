"""The private store's tables on PostgreSQL (migration 10) and the locks its writes take.

The same rules as the embedded store (stores/private_schema.py), enforced by the database so
they hold across nodes: one record per filename, per sha256 and per blake2_256; one sdist per
release. The rules that read other rows first (a removed filename stays burnt, a removed sdist
blocks its release under any spelling, who may upload) run under a per-project transaction
lock, so two nodes' writes to one project take turns as two processes' writes do under SQLite's
write lock.
"""

from __future__ import annotations

from pyproxy.stores.pg.migrations import Migration, register

SCHEMA_V10 = """
CREATE TABLE private_projects (
    name text PRIMARY KEY,                 -- PEP 503 normalised
    display_name text NOT NULL,
    created text NOT NULL,                 -- ISO 8601, UTC
    serial bigint NOT NULL DEFAULT 0,      -- bumped on every visible change
    restricted boolean NOT NULL DEFAULT false
);
CREATE TABLE private_files (
    filename text PRIMARY KEY,
    project text NOT NULL REFERENCES private_projects(name),
    version text NOT NULL,                 -- str(Version(...))
    filetype text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL UNIQUE,
    blake2_256 text NOT NULL UNIQUE,       -- the same bytes under two filenames is a duplicate
    md5 text NOT NULL,
    metadata_sha256 text,
    provenance_sha256 text,
    requires_python text,
    summary text,
    upload_time text NOT NULL,             -- ISO 8601, UTC
    uploader text,
    yanked boolean NOT NULL DEFAULT false,
    yanked_reason text NOT NULL DEFAULT '',
    fields text NOT NULL                   -- the upload form's metadata, JSON as sent
);
CREATE INDEX private_files_by_project ON private_files(project);
CREATE UNIQUE INDEX private_one_sdist_per_release
    ON private_files(project, version) WHERE filetype = 'sdist';
CREATE TABLE private_roles (
    project text NOT NULL REFERENCES private_projects(name),
    username text NOT NULL,
    role text NOT NULL,                    -- owner | maintainer | reader
    PRIMARY KEY (project, username)
);
CREATE TABLE private_tombstones (
    filename text PRIMARY KEY,
    project text NOT NULL,
    removed text NOT NULL
);
CREATE INDEX private_tombstones_by_project ON private_tombstones(project);
"""

register(Migration(10, "private store", SCHEMA_V10))

# pg_advisory_xact_lock keys: bodies enter the store holding GC_LOCK shared, garbage collection
# holds it exclusively, so a sweep never removes a body whose record is about to commit
GC_LOCK = 0x7079_7072_6F78_7910
PROJECT_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('private:' || %s, 0))"
GC_SHARED_SQL = "SELECT pg_advisory_xact_lock_shared(%s)"
GC_EXCLUSIVE_SQL = "SELECT pg_advisory_xact_lock(%s)"

FILE_COLUMNS = (
    "filename, size, sha256, metadata_sha256, provenance_sha256, requires_python, upload_time,"
    " yanked, yanked_reason, blake2_256, md5"
)
