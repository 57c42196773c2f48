"""What one process knows of the blob cache's index without asking it, so that a hit never writes.

`KnownPaths` holds the blobs this process looked up (key -> LocalFile, the most recent few
thousand) and trusts them while the cache's removal counter (a stores.changes.ChangeCounter,
read from memory) still has the value read before the lookup. Every process bumps that counter
before it removes a blob file (eviction, prune, verify, a replaced entry), after the index row
is gone. A path handed out may still be removed before it is opened; since the counter moves
before the file goes, the caller that then fails to open it finds it moved when it asks again.
"""

from __future__ import annotations

import threading

from pyproxy.lru import BoundedLRU
from pyproxy.model import LocalFile
from pyproxy.stores.changes import ChangeCounter

__all__ = ["KnownPaths"]

_KNOWN_MAX = 10_000  # paths a process remembers (a few MB)


class KnownPaths:
    """Blobs this process has looked up, trusted until the removal counter moves."""

    def __init__(self, removals: ChangeCounter, limit: int = _KNOWN_MAX) -> None:
        self._removals = removals
        self._lock = threading.Lock()  # lookups run on the loop and in threads
        self._paths: BoundedLRU[str, LocalFile] = BoundedLRU(limit)
        self._seen = removals.value

    def token(self) -> int:
        """Read before asking the index, handed back to `remember`."""
        return self._removals.value

    def get(self, key: str) -> LocalFile | None:
        now = self._removals.value
        with self._lock:
            if now != self._seen:
                self._paths.clear()
                self._seen = now
                return None
            return self._paths.get(key)

    def remember(self, key: str, hit: LocalFile, token: int) -> None:
        """Keep what the index said, unless a blob was removed since `token` was read."""
        with self._lock:
            now = self._removals.value
            if now != token:
                return
            if now != self._seen:
                self._paths.clear()
                self._seen = now
            self._paths.put(key, hit)

    def forget(self, key: str) -> None:
        with self._lock:
            self._paths.pop(key)
