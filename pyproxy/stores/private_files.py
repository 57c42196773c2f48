"""The bodies of private files on disk, content-addressed by sha256, and the temp area uploads
arrive in.

A body is written to a temp file in `tmp/` (on the same filesystem, so the final rename is
atomic), fsync'd, and renamed to `blobs/<aa>/<bb>/<sha256>`; the directory is fsync'd after the
rename. The private store moves bodies in and sweeps unreferenced ones only while it holds its
write lock, so a sweep never removes a body whose record is about to commit. Temp files are
flock'd while in use, so any process can tell an abandoned one (its writer crashed) from one
still being written.

On a cluster node the bodies live in the bucket instead (stores/bucket_files.BucketFiles, the
same interface): a body may then have no local copy yet, so the store asks `local()` for one
without blocking and, when it raises NotLocal, the repository awaits `fetch()`.

Bodies are the only copy of the company's packages, so nothing here deletes one its record
refers to because it is damaged: `problem()` says why a body is not its record's bytes (for
`pyproxy cache verify` and an identical re-upload), and `restore()` writes verified bytes back
(the re-upload's, or on a cluster a node's own local copy, `heal()`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Container, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from pyproxy.model import FileSource, LocalFile

log = logging.getLogger("pyproxy.private_files")

_TEMP_PREFIX = "upload-"
_READ = 1024 * 1024
_TEMP_SUFFIX = ".part"


class NotLocal(Exception):
    """The body has no local copy yet: `await files.fetch(sha256, size)` makes one."""

    def __init__(self, sha256: str, size: int | None) -> None:
        super().__init__(f"no local copy of {sha256}")
        self.sha256 = sha256
        self.size = size


class FileBodies(Protocol):
    """What the private store keeps its bodies in: PrivateFiles, or BucketFiles on a cluster."""

    def path(self, sha256: str) -> Path: ...
    def local(self, sha256: str, size: int | None) -> LocalFile: ...
    async def fetch(self, sha256: str, size: int | None) -> FileSource: ...
    def temporary_file(self) -> AbstractContextManager[Path]: ...
    def move_into_place(self, source: Path, sha256: str) -> None: ...
    def sweep_temporary(self) -> int: ...
    def remove_unreferenced(self, referenced: Container[str]) -> int: ...
    def problem(
        self, sha256: str, size: int | None, *, md5: str | None = None
    ) -> str | None: ...
    def restore(self, sha256: str, source: Path) -> bool: ...
    def heal(self, sha256: str, size: int | None) -> bool: ...


class Unrestorable(Exception):
    """The bytes offered to put a body back are not that body's: nothing was written."""


def digests(path: Path) -> tuple[int, str, str]:
    """(size, sha256, md5) of a file, in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as body:
        while chunk := body.read(_READ):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


def verified(source: Path, sha256: str) -> tuple[int, str]:
    """(size, md5) of `source` if it holds the body `sha256`; else Unrestorable."""
    size, actual, md5 = digests(source)
    if actual != sha256.lower():
        raise Unrestorable(f"{source} is not the body {sha256} (sha256 {actual})")
    return size, md5


class UploadTemps:
    """The temp area uploads arrive in: flock'd files, so a sweep knows the abandoned ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def temporary_file(self) -> Iterator[Path]:
        """A temp file, removed on leaving unless it was moved away; flock'd while in use."""
        fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self.directory)
        path = Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def sweep(self) -> int:
        """Remove temp files whose writer died (no process holds their lock); how many."""
        removed = 0
        for leftover in self.directory.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
            if _abandoned(leftover):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed


class PrivateFiles:
    def __init__(self, directory: Path) -> None:
        self.blobs = directory / "blobs"
        self.tmp = directory / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._temps = UploadTemps(self.tmp)

    def path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    def local(self, sha256: str, size: int | None) -> LocalFile:
        """The body on disk (always local here); a stat only when the size is not known."""
        path = self.path(sha256)
        return LocalFile(path, path.stat().st_size if size is None else size, sha256,
                         cache="private")

    async def fetch(self, sha256: str, size: int | None) -> FileSource:
        return self.local(sha256, size)

    def temporary_file(self) -> AbstractContextManager[Path]:
        """A temp file in the temp area, removed unless it was moved into place; flock'd while
        in use."""
        return self._temps.temporary_file()

    def move_into_place(self, source: Path, sha256: str) -> None:
        """Rename an fsync'd temp file to its content address (call under the write lock)."""
        target = self.path(sha256)
        if target.exists():
            # content-addressed: the same bytes should be there (another file's .metadata may
            # be them), unless they were damaged since: then these replace them, verified
            if self.problem(sha256, None) is not None:
                with contextlib.suppress(Unrestorable):  # not them either: the caller's mistake
                    self.restore(sha256, source)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        fsync_directory(target.parent)

    def sweep_temporary(self) -> int:
        """Remove temp files whose writer died (no process holds their lock); how many."""
        return self._temps.sweep()

    def remove_unreferenced(self, referenced: Container[str]) -> int:
        """Remove bodies whose sha256 is not in `referenced` (call under the write lock)."""
        removed = 0
        for blob in self.blobs.glob("*/*/*"):
            if blob.name not in referenced:
                blob.unlink(missing_ok=True)
                removed += 1
        return removed

    def problem(self, sha256: str, size: int | None, *, md5: str | None = None
                ) -> str | None:
        """Why the body on disk is not the record's (`size` bytes, `sha256`); None if it is.
        A disk has no checksum to vouch for it, so it is read whole (cheaper than the upload
        that asks): blocking. `md5` is for the bucket's ETag, not used here."""
        try:
            actual_size, actual, _md5 = digests(self.path(sha256))
        except FileNotFoundError:
            return "its body is missing from the data directory"
        if size is not None and actual_size != size:
            return f"its body on disk is {actual_size} bytes, {size} recorded"
        if actual != sha256:
            return f"its body on disk has sha256 {actual}"
        return None

    def restore(self, sha256: str, source: Path) -> bool:
        """Put the body back from `source` (a temp file from `temporary_file()`, moved away),
        once its sha256 is checked (Unrestorable if it is not the body). The rename replaces a
        damaged body whole: a reader sees the old bytes or the new. True: written."""
        verified(source, sha256)
        fsync_file(source)
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        fsync_directory(target.parent)
        log.warning("repaired private file %s: its body was written again in %s", sha256,
                    target)
        return True

    def heal(self, sha256: str, size: int | None) -> bool:
        """One box has no other copy to heal a body from: False (a re-upload restores it)."""
        return False


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
