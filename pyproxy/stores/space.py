"""Running out of disk space: telling it from other failures, and the spare file that lets
pyproxy start and delete on a full disk.

SQLite needs room to delete anything (its write-ahead log grows before the delete commits) and
even to open a database whose last connection has closed (its -shm index is made anew), so a
full disk would lock an operator out of the very commands that free space. The data directory
therefore keeps a spare file of SPARE_BYTES (DataDir.spare): work that failed for want of space
is tried again after the databases' write-ahead logs are cut to nothing (they keep their room
otherwise) and then after the spare file is given up (`with_room`); the file is made again once
there is room for it twice over (`Spare.keep`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyproxy.units import human_size

log = logging.getLogger("pyproxy.space")

SPARE_BYTES = 2 * 1024**2
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite says SQLITE_FULL when a write finds no room, SQLITE_IOERR_SHMSIZE when it cannot make
# the -shm index of a database it opens
_FULL_SQLITE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE})
_T = TypeVar("_T")


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says the disk or the quota is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(seen, sqlite3.Error) and code in _FULL_SQLITE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


class Spare:
    """The spare file: its room, given up when nothing else can run, kept otherwise."""

    def __init__(self, path: Path, size: int = SPARE_BYTES) -> None:
        self.path = path
        self.size = size

    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def keep(self) -> bool:
        """Make the spare file unless it is there, if there is room for it twice over (so
        making it never fills the disk); whether it is there now."""
        if self.held():
            return True
        try:
            if free_bytes(self.path.parent) < 2 * self.size:
                return False
            partial = self.path.with_name(self.path.name + ".part")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # blocks taken, not a sparse file
            except OSError:
                os.close(fd)
                partial.unlink(missing_ok=True)
                raise
            os.close(fd)
            os.replace(partial, self.path)
        except OSError as exc:
            log.debug("no spare file in %s: %s", self.path.parent, exc)
            return False
        return True

    def give_up(self) -> bool:
        """Remove the spare file, freeing its room; False if there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def truncate_logs(root: Path) -> int:
    """Checkpoint the write-ahead log of every database under `root` and cut it to nothing:
    SQLite reuses a log's room rather than giving it back, so this frees what the logs hold
    (safe beside other processes: SQLite waits for them, briefly). Returns the bytes freed."""
    freed = 0
    for wal in root.rglob("*-wal"):
        try:
            size = wal.stat().st_size
            with contextlib.closing(sqlite3.connect(wal.with_name(wal.name[:-4]), timeout=1)) as db:
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except (OSError, sqlite3.Error):
            continue
        if not busy:
            freed += size
    return freed


def with_room(spare: Spare, work: Callable[[], _T], what: str) -> _T:
    """`work()`; if it fails for want of space, once more after the databases' logs are cut
    (if that freed anything), and once more after the spare file is given up."""
    root = spare.path.parent
    def cut_logs() -> bool:
        return truncate_logs(root) > 0

    ways: tuple[tuple[str, Callable[[], bool]], ...] = (
        ("cut the databases' logs", cut_logs),
        (f"gave up its spare {human_size(spare.size)}", spare.give_up),
    )
    try:
        return work()
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        failure = exc
    for done, make_room in ways:
        if not make_room():
            continue
        log.warning(
            "the disk of %s is full: %s to %s; free space soon (pyproxy cache prune, pyproxy"
            " remove)", root, done, what,
        )
        try:
            return work()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            failure = exc
    raise failure
