"""When pyproxy first saw each upstream file that carries no upload time, for the cooldown.

An upstream that serves HTML only (or JSON without `upload-time`) says nothing about a file's
age, so the time rules of `[policy]` can read only when pyproxy first saw it. That time is kept
here, never in the page cache (which may be rebuilt) and never shown as an upload time.

One SQLite file that every worker process shares: a page's new files are written in one
transaction, `INSERT OR IGNORE`, and read back, so the process whose sighting was written first
decides a file's time and every process uses that same time (a time is never moved later, so
a file that was available never goes back to being held back). Reads come from an in-memory map
per project, filled from the database the first time a project is looked at. A cluster node's
store is stores/pg/first_seen.py (the same rule on PostgreSQL); `FirstSeen` is what both offer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from pyproxy.lru import BoundedLRU
from pyproxy.stores.space import is_disk_full
from pyproxy.stores.sqlite import connect, write_transaction
from pyproxy.stores.write_turns import WriteTurns

__all__ = ["FirstSeen", "FirstSeenStore", "in_batches"]

log = logging.getLogger("pyproxy.policy")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS first_seen (
    project TEXT NOT NULL,
    filename TEXT NOT NULL,
    seen REAL NOT NULL,  -- seconds since the epoch (UTC)
    PRIMARY KEY (project, filename)
) WITHOUT ROWID
"""
_MEMORY_PROJECTS = 4096


class FirstSeen(Protocol):
    async def times(
        self, project: str, filenames: Collection[str], now: float
    ) -> Mapping[str, float]: ...

    def close(self) -> None: ...

    def export_times(self) -> Iterator[tuple[str, str, float]]:
        """Blocking: every (project, filename, seen), for `pyproxy export`."""
        ...

    def import_times(self, rows: Iterable[tuple[str, str, float]]) -> int:
        """Blocking: record those not recorded yet (a recorded time is kept: it may already
        be in use); how many were new."""
        ...


_BATCH = 1000  # rows per transaction or query of an export/import


class FirstSeenStore:
    """(project, filename) -> when pyproxy first saw the file, in seconds since the epoch."""

    def __init__(self, path: Path, *, memory_projects: int = _MEMORY_PROJECTS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(path, _SCHEMA)
        self._lock = threading.Lock()  # one connection, used from worker threads
        self._turns = WriteTurns(path)  # with the other processes' writers
        self._memory: BoundedLRU[str, Mapping[str, float]] = BoundedLRU(memory_projects)
        self._warned = False

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._turns.close()

    async def times(
        self, project: str, filenames: Collection[str], now: float
    ) -> Mapping[str, float]:
        """When each of `filenames` was first seen; those never seen before are recorded as
        seen at `now` (unless another process has just recorded an earlier time)."""
        known = self._memory.get(project)
        if known is not None and all(name in known for name in filenames):
            return known
        unseen = [name for name in filenames if known is None or name not in known]
        try:
            times = await asyncio.to_thread(self.record, project, unseen, now)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            # a full disk: seen now, for this answer only (not kept, so the next one tries to
            # record them again; a time kept in memory alone could later be recorded later)
            return await asyncio.to_thread(self._unrecorded, project, unseen, now)
        self._memory.put(project, times)
        return times

    def _unrecorded(self, project: str, filenames: Collection[str], now: float) -> dict[str, float]:
        if not self._warned:
            self._warned = True
            log.warning("the disk is full: first-seen times of new upstream files are not"
                        " recorded meanwhile (each page counts them from now)")
        with self._lock:
            rows = self._db.execute(
                "SELECT filename, seen FROM first_seen WHERE project = ?", (project,)
            ).fetchall()
        times = {row["filename"]: row["seen"] for row in rows}
        for name in filenames:
            times.setdefault(name, now)
        return times

    def record(self, project: str, filenames: Collection[str], now: float) -> dict[str, float]:
        """Blocking: record `filenames` as seen at `now` where not seen before, in one
        transaction; every first-seen time of the project."""
        with self._lock:
            if filenames:
                with self._turns.turn(), write_transaction(self._db) as db:
                    # the first sighting committed stays, so every process reads one time
                    db.executemany(
                        "INSERT OR IGNORE INTO first_seen (project, filename, seen)"
                        " VALUES (?, ?, ?)",
                        [(project, name, now) for name in filenames],
                    )
            rows = self._db.execute(
                "SELECT filename, seen FROM first_seen WHERE project = ?", (project,)
            ).fetchall()
        return {row["filename"]: row["seen"] for row in rows}

    def export_times(self) -> Iterator[tuple[str, str, float]]:
        after = ("", "")
        while True:  # in batches, so the lock is not held while the caller writes
            with self._lock:
                rows = self._db.execute(
                    "SELECT project, filename, seen FROM first_seen"
                    " WHERE (project, filename) > (?, ?) ORDER BY project, filename LIMIT ?",
                    (*after, _BATCH),
                ).fetchall()
            for row in rows:
                yield row["project"], row["filename"], float(row["seen"])
            if len(rows) < _BATCH:
                return
            after = (rows[-1]["project"], rows[-1]["filename"])

    def import_times(self, rows: Iterable[tuple[str, str, float]]) -> int:
        added = 0
        with self._lock:
            for batch in in_batches(rows):
                before = self._db.total_changes
                with self._turns.turn(), write_transaction(self._db) as db:
                    db.executemany(
                        "INSERT OR IGNORE INTO first_seen (project, filename, seen)"
                        " VALUES (?, ?, ?)", batch,
                    )
                added += self._db.total_changes - before
        self._memory.clear()
        return added


def in_batches(rows: Iterable[tuple[str, str, float]]) -> Iterator[list[tuple[str, str, float]]]:
    batch: list[tuple[str, str, float]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
