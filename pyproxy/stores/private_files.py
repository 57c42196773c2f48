"""The bodies of private files on disk, content-addressed by sha256, and the temp area uploads
arrive in.

A body is written to a temp file in `tmp/` (on the same filesystem, so the final rename is
atomic), fsync'd, and renamed to `blobs/<aa>/<bb>/<sha256>`; the directory is fsync'd after the
rename. The private store moves bodies in and sweeps unreferenced ones only while it holds its
write lock, so a sweep never removes a body whose record is about to commit. Temp files are
flock'd while in use, so any process can tell an abandoned one (its writer crashed) from one
still being written.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Container, Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP_PREFIX = "upload-"
_TEMP_SUFFIX = ".part"


class PrivateFiles:
    def __init__(self, directory: Path) -> None:
        self.blobs = directory / "blobs"
        self.tmp = directory / "tmp"
        for path in (self.blobs, self.tmp):
            path.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    @contextmanager
    def temporary_file(self) -> Iterator[Path]:
        """A temp file in the temp area, removed unless it was moved into place; flock'd while
        in use."""
        fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self.tmp)
        path = Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def move_into_place(self, source: Path, sha256: str) -> None:
        """Rename an fsync'd temp file to its content address (call under the write lock)."""
        target = self.path(sha256)
        if target.exists():
            return  # content-addressed: the same bytes are already there
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        fsync_directory(target.parent)

    def sweep_temporary(self) -> int:
        """Remove temp files whose writer died (no process holds their lock); how many."""
        removed = 0
        for leftover in self.tmp.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
            if _abandoned(leftover):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove_unreferenced(self, referenced: Container[str]) -> int:
        """Remove bodies whose sha256 is not in `referenced` (call under the write lock)."""
        removed = 0
        for blob in self.blobs.glob("*/*/*"):
            if blob.name not in referenced:
                blob.unlink(missing_ok=True)
                removed += 1
        return removed


def _abandoned(path: Path) -> bool:
    """True if no process holds the temp file's lock (its upload died with its process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
