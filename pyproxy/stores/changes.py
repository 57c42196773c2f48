"""A change counter shared by every process on one data directory, read without a system call.

Writers bump it after their transaction commits; readers compare it with the value they last
loaded at, and reload only when it moved. The counter is an 8-byte file that readers map into
memory, so a check on the warm request path is a memory read, not a database query.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_FORMAT = struct.Struct("<Q")


class ChangeCounter:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if os.fstat(self._fd).st_size < _FORMAT.size:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:  # another process may have sized it meanwhile: never shrink or reset it
                if os.fstat(self._fd).st_size < _FORMAT.size:
                    os.ftruncate(self._fd, _FORMAT.size)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._map = mmap.mmap(self._fd, _FORMAT.size, mmap.MAP_SHARED, mmap.PROT_READ)

    @property
    def value(self) -> int:
        count: int = _FORMAT.unpack_from(self._map, 0)[0]
        return count

    def bump(self) -> None:
        """After a commit. The lock makes concurrent bumps add up, so no change goes unseen."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            current = _FORMAT.unpack(os.pread(self._fd, _FORMAT.size, 0))[0]
            os.pwrite(self._fd, _FORMAT.pack(current + 1), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
