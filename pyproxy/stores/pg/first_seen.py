"""A cluster node's first-seen times (stores/first_seen.py) on PostgreSQL: the first writer wins.

A page's new files are inserted in one transaction with `ON CONFLICT DO NOTHING` and every time
of the project read back in the same one, so the node whose sighting committed first decides a
file's time and every node uses that time (a time is never moved later). Reads come from an
in-memory map per project, filled from the database the first time a project is looked at and
extended only by what the database answered, so no node keeps a time the others do not. With
the database down, a project whose files are all held in memory is answered from it; any other
is DatabaseUnavailable (a 503): a time made up now could later be recorded differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

from pyproxy.lru import BoundedLRU
from pyproxy.stores.first_seen import in_batches
from pyproxy.stores.pg.database import READ_TIMEOUT_S, Database
from pyproxy.stores.pg.migrations import Migration, register

__all__ = ["PgFirstSeenStore"]

_MEMORY_PROJECTS = 4096

register(Migration(31, "first-seen times", """
    CREATE TABLE first_seen (
        project text NOT NULL,
        filename text NOT NULL,
        seen double precision NOT NULL,  -- seconds since the epoch (UTC)
        PRIMARY KEY (project, filename)
    )
"""))


class PgFirstSeenStore:
    """(project, filename) -> when the cluster first saw the file, in seconds since the epoch."""

    def __init__(
        self, db: Database, *, memory_projects: int = _MEMORY_PROJECTS,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._memory: BoundedLRU[str, Mapping[str, float]] = BoundedLRU(memory_projects)
        self._release = release

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    async def times(
        self, project: str, filenames: Collection[str], now: float
    ) -> Mapping[str, float]:
        """When each of `filenames` was first seen; those never seen before are recorded as
        seen at `now` (unless another node has just recorded an earlier time)."""
        known = self._memory.get(project)
        if known is not None and all(name in known for name in filenames):
            return known
        unseen = [name for name in filenames if known is None or name not in known]
        times = await asyncio.to_thread(self.record, project, unseen, now)
        self._memory.put(project, times)
        return times

    def record(self, project: str, filenames: Collection[str], now: float) -> dict[str, float]:
        """Blocking: record `filenames` as seen at `now` where not seen before, in one
        transaction; every first-seen time of the project."""
        with self._db.transaction(timeout=READ_TIMEOUT_S) as conn:
            if filenames:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO first_seen (project, filename, seen) VALUES (%s, %s, %s)"
                        " ON CONFLICT (project, filename) DO NOTHING",
                        [(project, name, now) for name in filenames],
                    )
            rows = conn.execute(
                "SELECT filename, seen FROM first_seen WHERE project = %s", (project,)
            ).fetchall()
        return {str(row[0]): float(row[1]) for row in rows}

    def export_times(self) -> Iterator[tuple[str, str, float]]:
        with self._db.transaction(timeout=READ_TIMEOUT_S) as conn, \
                conn.cursor(name="first_seen") as cursor:
            cursor.itersize = 1000
            cursor.execute("SELECT project, filename, seen FROM first_seen")
            for project, filename, seen in cursor:
                yield str(project), str(filename), float(seen)

    def import_times(self, rows: Iterable[tuple[str, str, float]]) -> int:
        added = 0
        for batch in in_batches(rows):
            with self._db.transaction() as conn:
                for row in batch:  # one statement each: rowcount tells which were new
                    added += conn.execute(
                        "INSERT INTO first_seen (project, filename, seen) VALUES (%s, %s, %s)"
                        " ON CONFLICT (project, filename) DO NOTHING", row,
                    ).rowcount
        self._memory.clear()
        return added
