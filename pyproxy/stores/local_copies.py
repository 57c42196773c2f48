"""A cluster node's local copies of bucket objects: complete, verified files for sendfile, bounded
by [cache] local_max_size, shared by the node's worker processes through the filesystem alone.

    <directory>/<aa>/<bb>/<name>   a copy (name: a sha256, or any name the caller hashes)
    <directory>/tmp/*.part         a download in progress, flock'd by its writer

A copy appears only by the rename of a complete file whose size and sha256 matched, so nobody
ever sees a partial one. There is no index beside the files to get out of step with them: any
process may remove any copy at any time (the bound, an operator's `rm -rf`); a reader that has it
open keeps its bytes, and the next lookup misses and downloads again. Two processes may download
one object at once: both write whole files, the second rename replaces the first with the same
bytes.

Least recently used goes first. A use is noted in memory and written as the copy's mtime in
batches (every `flush_interval` seconds, and before a trim), so a hit costs one stat and no
write; across processes the order is as fresh as their last batches, enough for a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pyproxy.stores.private_files import UploadTemps, fsync_file

__all__ = ["Copy", "CopyMismatch", "LocalCopies"]

log = logging.getLogger("pyproxy.local_copies")

FLUSH_INTERVAL = 30.0
_READ = 1024 * 1024


class Copy(NamedTuple):
    path: Path
    size: int


class CopyMismatch(Exception):
    """What was written is not the object announced (size or sha256); nothing was kept."""


class LocalCopies:
    def __init__(
        self, directory: Path, max_size: int, *, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.flush_interval = flush_interval
        self._root = str(directory)
        self._uses: dict[str, float] = {}  # location -> unix time of its last use here
        self._lock = threading.Lock()
        self._flushed = time.monotonic()
        self._flushing = False
        self._temps().sweep()  # downloads whose process died

    def _temps(self) -> UploadTemps:
        # made again for each download: the whole directory may have been removed meanwhile
        return UploadTemps(self.directory / "tmp")

    def path(self, name: str) -> Path:
        return Path(self._location(name))

    def _location(self, name: str) -> str:
        # a string, not Path arithmetic: this is on every warm request
        return f"{self._root}/{name[:2]}/{name[2:4]}/{name}"

    # -- reading: one stat ------------------------------------------------------------------------

    def find(self, name: str) -> Copy | None:
        """The copy, if this node has one (a stat); counts as a use."""
        location = self._location(name)
        try:
            size = os.stat(location).st_size
        except OSError:  # not there, or its directories removed
            return None
        self._note(location)
        return Copy(Path(location), size)

    def _note(self, location: str) -> None:
        now = time.time()
        with self._lock:
            self._uses[location] = now
            due = not self._flushing and time.monotonic() - self._flushed >= self.flush_interval
            if due:
                self._flushing = True
        if due:
            try:
                asyncio.get_running_loop().run_in_executor(None, self.flush_uses)
            except RuntimeError:  # no loop: a command, or already in a thread
                self.flush_uses()

    def flush_uses(self) -> int:
        """Blocking: write the uses noted here as the copies' mtimes; how many."""
        with self._lock:
            uses, self._uses = self._uses, {}
            self._flushed = time.monotonic()
            self._flushing = False
        written = 0
        for path, when in uses.items():
            with contextlib.suppress(OSError):  # removed meanwhile
                os.utime(path, (when, when))
                written += 1
        return written

    # -- writing (blocking: call in a thread) -----------------------------------------------------

    def fill(
        self, name: str, *, sha256: str, size: int | None, write: Callable[[Path], object]
    ) -> Copy:
        """Make the copy: `write(temp)` fills a temp file (e.g. a download from the bucket),
        which is kept only if its size and sha256 are the announced ones (else CopyMismatch).
        The bound is kept afterwards, sparing this copy."""
        with self._temps().temporary_file() as temp:
            write(temp)
            actual_size, actual = _digest(temp)
            if (size is not None and actual_size != size) or actual != sha256.lower():
                raise CopyMismatch(
                    f"{name}: got {actual_size} bytes with sha256 {actual}, expected"
                    f" {size if size is not None else '?'} bytes with sha256 {sha256}"
                )
            fsync_file(temp)  # a crash must not leave a renamed, unwritten copy
            target = self._place(temp, name, os.replace)
        self.trim(protect=target)
        return Copy(target, actual_size)

    def adopt(self, name: str, source: Path) -> bool:
        """Link a file known to hold the object's bytes (an upload just stored) in as its copy;
        False if it cannot be linked (another filesystem)."""
        try:
            target = self._place(source, name, os.link)
        except FileExistsError:
            return True
        except OSError as exc:
            log.debug("no local copy of %s: %s", name, exc)
            return False
        self.trim(protect=target)
        return True

    def _place(self, source: Path, name: str, how: Callable[[Path, Path], None]) -> Path:
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        how(source, target)
        return target

    def discard(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    # -- the bound --------------------------------------------------------------------------------

    def copies(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every copy, least recently used first (as far as written)."""
        found = []
        for top in _entries(self.directory):
            if top.name == "tmp" or not top.is_dir(follow_symlinks=False):
                continue
            for middle in _entries(Path(top.path)):
                for entry in _entries(Path(middle.path)):
                    with contextlib.suppress(OSError):
                        info = entry.stat(follow_symlinks=False)
                        found.append((info.st_mtime, info.st_size, Path(entry.path)))
        found.sort()
        return found

    def volume(self) -> int:
        return sum(size for _when, size, _path in self.copies())

    def trim(self, *, protect: Path | None = None, limit: int | None = None) -> int:
        """Remove least recently used copies until they hold at most `limit` (max_size) bytes;
        how many were removed. The copy just made (`protect`) is spared."""
        limit = self.max_size if limit is None else limit
        self.flush_uses()
        copies = self.copies()
        excess = sum(size for _when, size, _path in copies) - limit
        removed = 0
        for _when, size, path in copies:
            if excess <= 0:
                break
            if path == protect:
                continue
            with contextlib.suppress(FileNotFoundError):  # another process trims too
                path.unlink()
                removed += 1
            excess -= size
        return removed


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as listing:
            return list(listing)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as body:
        while chunk := body.read(_READ):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
