"""Rendered project lists on disk: each body with its gzip copy, served with sendfile.

The `/simple/` root of a real index is tens of megabytes; it is rendered once per list
revision (and format, and set of hidden projects) into a file here, by whichever worker
process asks first while the others wait on its lock (stores/keylock.py), then sent from disk
by every worker. The body and its gzip copy are written in one pass and renamed into place,
the copy first, so a body in place always has its copy. Only the most recently built lists
stay; a list removed while a worker sends it is read to the end through its open file.

Blocking: call `ready`, `build` and `open` from a thread.
"""

from __future__ import annotations

import gzip
import os
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import BinaryIO

from pyproxy.stores.keylock import KeyLocks, Turn

__all__ = ["RenderedLists"]

KEEP = 12  # lists kept: formats times the revisions and reader variants in use
_GZIP_LEVEL = 6
_YIELD_S = 0.0005
_STALE_TEMP_S = 3600.0  # a temp file this old belongs to no rendering in progress


class _Tee:
    """Writes to the body and to its gzip copy at once."""

    def __init__(self, plain: BinaryIO, compressed: gzip.GzipFile) -> None:
        self._plain = plain
        self._compressed = compressed

    def write(self, data: bytes) -> int:
        self._plain.write(data)
        self._compressed.write(data)
        # the renderer holds the GIL between its writes: hand it to the event loop's thread
        # each time, so a request waits for one piece of the list at most, not the switch
        # interval at every step of its way through the loop
        time.sleep(_YIELD_S)
        return len(data)


class RenderedLists:
    def __init__(self, directory: Path, *, keep: int = KEEP) -> None:
        self.directory = directory
        self._keep = keep
        self._locks = KeyLocks(directory / "locks")

    def paths(self, name: str) -> tuple[Path, Path]:
        """The body's path and its gzip copy's."""
        return self.directory / f"{name}.body", self.directory / f"{name}.body.gz"

    def ready(self, name: str) -> bool:
        return self.paths(name)[0].is_file()

    def turn(self, name: str, *, patience: float) -> AbstractAsyncContextManager[Turn]:
        return self._locks.turn(name, patience=patience)

    def build(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """`write` the body (to something with a binary `write`), into place with its copy."""
        self.directory.mkdir(parents=True, exist_ok=True)
        plain, compressed = self.paths(name)
        token = uuid.uuid4().hex
        plain_temp = self.directory / f".{token}.tmp"
        compressed_temp = self.directory / f".{token}.gz.tmp"
        try:
            # mtime=0: the same list always compresses to the same bytes, in every worker
            with (
                open(plain_temp, "wb") as body,
                open(compressed_temp, "wb") as copy,
                gzip.GzipFile(
                    filename="", mode="wb", fileobj=copy, compresslevel=_GZIP_LEVEL, mtime=0
                ) as zipped,
            ):
                write(_Tee(body, zipped))  # type: ignore[arg-type]  # all it needs is write
            os.replace(compressed_temp, compressed)
            os.replace(plain_temp, plain)
        finally:
            plain_temp.unlink(missing_ok=True)
            compressed_temp.unlink(missing_ok=True)
        self._prune(keep=name)

    def remove(self, name: str) -> None:
        for path in self.paths(name):
            path.unlink(missing_ok=True)

    def _prune(self, keep: str) -> None:
        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except FileNotFoundError:
                return 0.0

        bodies = sorted(self.directory.glob("*.body"), key=mtime, reverse=True)
        for old in bodies[self._keep :]:
            if old.stem != keep:
                self.remove(old.stem)
        now = time.time()
        for temp in self.directory.glob(".*.tmp"):  # left by a worker that died rendering
            if now - mtime(temp) > _STALE_TEMP_S:
                temp.unlink(missing_ok=True)
