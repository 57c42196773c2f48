"""Uses of the cluster's cached files, noted in memory and written to its index in batches, so
that a hit costs no database round trip: `interval` seconds after the first use not yet
written, before an eviction (which orders by them) and at close. A batch the database refused
is kept for the next (newer uses winning) up to `_KEEP` keys; beyond that the oldest are
dropped: recency is a hint for eviction, not a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from pyproxy.stores.pg.connect import DatabaseUnavailable

__all__ = ["PendingUses"]

log = logging.getLogger("pyproxy.clusterblobs")

_KEEP = 100_000


class PendingUses:
    def __init__(self, write: Callable[[dict[str, float]], None], interval: float) -> None:
        self._write = write  # blocking: key -> unix time
        self.interval = interval
        self._lock = threading.Lock()  # noted from the loop and from lookups in threads
        self._pending: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, key: str) -> None:
        with self._lock:
            self._pending[key] = time.time()

    def start(self) -> None:
        """Write on a timer in the running loop (once; a server's first fetch calls it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cache uses")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.flush)

    def flush(self) -> int:
        """Blocking: write what is pending; how many uses were written."""
        with self._lock:
            uses, self._pending = self._pending, {}
        if not uses:
            return 0
        try:
            self._write(uses)
        except DatabaseUnavailable as exc:
            log.warning("could not record the use of %d cached files: %s", len(uses), exc)
            with self._lock:
                for key, when in uses.items():
                    self._pending[key] = max(when, self._pending.get(key, 0.0))
                if len(self._pending) > _KEEP:
                    newest = sorted(self._pending.items(), key=lambda kv: kv[1])[-_KEEP:]
                    self._pending = dict(newest)
            return 0
        return len(uses)

    def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(RuntimeError):
                self._task.cancel()
            self._task = None
        with contextlib.suppress(DatabaseUnavailable):
            self.flush()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.flush)
