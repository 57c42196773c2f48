"""Work done once per event loop iteration instead of once per request: what the requests of an
iteration add (access-log lines, metric observations) is written in one go right after it, so a
burst of keep-alive requests costs one write of each kind, not one each. A leaf module.

Without a running loop the work is done at once. What is pending when a worker stops is
written by `flush_all` (the loop may never run again to do it).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

__all__ = ["Soon", "flush_all"]

_ALL: weakref.WeakSet[Soon] = weakref.WeakSet()


class Soon:
    """Calls `flush` once, soon after one or more calls of `due` (from the loop's thread)."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._loop: asyncio.AbstractEventLoop | None = None  # where a call of run() is due
        _ALL.add(self)

    def due(self) -> None:
        """Something was added for `flush`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.run()
            return
        scheduled = self._loop
        if scheduled is loop:
            return
        if scheduled is not None and not scheduled.is_closed():
            return  # another live loop will flush it
        if scheduled is not None:
            self.run()  # due on a loop that was closed before it ran: now
        self._loop = loop
        loop.call_soon(self.run)

    def run(self) -> None:
        self._loop = None
        self._flush()


def flush_all() -> None:
    """Everything pending, now: before a worker exits."""
    for soon in list(_ALL):
        soon.run()
