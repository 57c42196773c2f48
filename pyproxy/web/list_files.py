"""The project lists (/simple/), rendered to files (stores/rendered_lists.py) and sent from disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import BinaryIO

from aiohttp import web

from pyproxy.lru import BoundedLRU, SingleFlight
from pyproxy.stores.rendered_lists import RenderedLists
from pyproxy.web.files import send_rendered

log = logging.getLogger("pyproxy.web")
LIST_RENDERING = 2  # changes with write_index's output, and so do the rendered files' names
_RENDER_PATIENCE_S = 300.0  # waiting for another worker rendering a list of a million names


class ListFiles:
    """The project lists rendered to files (stores/rendered_lists.py), each rendered once
    however many requests (in this process: single flight; across workers: its lock) ask."""

    def __init__(self, store: RenderedLists) -> None:
        self.store = store
        self._ready: BoundedLRU[str, bool] = BoundedLRU(64)
        self._rendering: SingleFlight[str, None] = SingleFlight()

    async def send(
        self, request: web.Request, name: str, write: Callable[[BinaryIO], None],
        compressed: bool, headers: dict[str, str],
    ) -> web.StreamResponse:
        for attempt in (1, 2):
            if self._ready.get(name) is None:
                await self._rendering.run(name, lambda: self._render(name, write))
            path = self.store.paths(name)[1 if compressed else 0]
            try:
                return await send_rendered(request, path, headers)
            except FileNotFoundError:  # pruned since: render it again
                self._ready.pop(name)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _render(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        # off the loop: a million names take seconds to read, render and compress
        if not await asyncio.to_thread(self.store.ready, name):
            async with self.store.turn(name, patience=_RENDER_PATIENCE_S):
                if not await asyncio.to_thread(self.store.ready, name):
                    started = time.monotonic()
                    await asyncio.to_thread(self.store.build, name, write)
                    log.info("rendered the project list in %.1f s", time.monotonic() - started)
        self._ready.put(name, True)


LISTS = web.AppKey("rendered_lists", ListFiles)
