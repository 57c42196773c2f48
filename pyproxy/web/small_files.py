"""Small files on disk (a `.metadata`, a provenance, a tiny wheel) kept in memory per worker, so
that a warm request for one costs no thread hop and no system call: under uv's parallel
downloads the thread that opens a 3 KB file costs more than sending it.

An entry is keyed by the file's path and sha256, and kept only when the bytes read are the whole
file and hash to that sha256, so it can never serve a partial or a different file. A file
evicted, replaced or removed on disk is never asked for under the same path and sha256 again (the
blob cache and the private store hand out a new path or none), so its entry is never served and
goes when the least recently used go. The memory is bounded in bytes (entries and their keys).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pyproxy.lru import BoundedLRU
from pyproxy.model import LocalFile

MAX_FILE_BYTES = 64 * 1024  # a .metadata is a few KB; bigger files go out with sendfile
MAX_BYTES = 16 * 1024**2  # per worker
_ENTRY_OVERHEAD = 512  # the key, the entry and the dictionary's share, roughly


@dataclass(frozen=True, slots=True)
class Held:
    body: bytes
    mtime: float  # the file's, for If-Range
    headers: dict[str, str]  # of a 200 for it, built once: copy before changing


class SmallFiles:
    def __init__(self, max_bytes: int = MAX_BYTES, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.max_file_bytes = max_file_bytes
        self._held: BoundedLRU[tuple[Path, str], Held] = BoundedLRU(
            max(1, max_bytes // _ENTRY_OVERHEAD),
            weigh=lambda held: len(held.body) + _ENTRY_OVERHEAD,
            max_weight=max_bytes,
        )

    def __len__(self) -> int:
        return len(self._held)

    @property
    def weight(self) -> int:
        return self._held.weight

    def get(self, file: LocalFile) -> Held | None:
        if file.size > self.max_file_bytes:
            return None
        return self._held.get((file.path, file.sha256))

    def wanted(self, file: LocalFile) -> bool:
        """Whether `file` is small enough to be kept (its bytes are then worth checking)."""
        return file.size <= self.max_file_bytes

    def keep(self, file: LocalFile, held: Held, *, verified: bool) -> None:
        """Keep what was read of `file` if it is all of it and `verified` (see `verify`)."""
        if verified and len(held.body) == file.size and self.wanted(file):
            self._held.put((file.path, file.sha256), held)


def verify(file: LocalFile, body: bytes) -> bool:
    """Blocking (a hash): whether `body` is the whole of `file`, byte for byte."""
    return len(body) == file.size and hashlib.sha256(body).hexdigest() == file.sha256
