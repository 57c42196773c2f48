"""The errors of a cluster's stores, importable without their drivers: the embedded default
never loads psycopg (22 MB of a process's memory, libpq with it) nor obstore (4 MB), yet the
web layer and the commands name these errors wherever a store may raise them."""

from __future__ import annotations

__all__ = ["BucketUnavailable", "DatabaseUnavailable", "SchemaTooNew"]


class DatabaseUnavailable(Exception):
    """The database cannot be reached or refused us; the message is one line, without secrets."""


class BucketUnavailable(Exception):
    """The bucket cannot be reached or refused us; the message is one line, without secrets."""


class SchemaTooNew(Exception):
    """The database was migrated by a newer pyproxy than this one."""
