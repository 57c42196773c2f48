"""Rendered human pages (a project's page, a release's page), kept per page revision.

Building the page of a project with 20,000 files takes the best part of a second (the view
models and the template), so it is built off the event loop, once per revision: concurrent
requests for a page being built wait for that build, later ones get the bytes kept here. What
is kept is bounded by bytes, not by count, since one such page is megabytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pyproxy.lru import BoundedLRU, SingleFlight

__all__ = ["Built", "RenderedHTML"]

Key = tuple[str, ...]  # (origin, project, the page within it)


@dataclass(frozen=True, slots=True)
class Built:
    body: bytes
    # False: built without something that could not be read now (an upstream .metadata file);
    # served, but the next request builds it again
    complete: bool = True


class RenderedHTML:
    def __init__(self, capacity: int = 512, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._kept: BoundedLRU[Key, tuple[str, bytes]] = BoundedLRU(
            capacity, weigh=lambda entry: len(entry[1]), max_weight=max_bytes
        )
        self._building: SingleFlight[tuple[Key, str], Built] = SingleFlight()

    @property
    def size(self) -> int:
        """Bytes kept."""
        return self._kept.weight

    async def get(self, key: Key, revision: str, build: Callable[[], Awaitable[Built]]) -> bytes:
        """The page for `key` at `revision`, built by `build` unless kept. A page without a
        revision (nothing tells when it changes) is built for every request."""
        if not revision:
            return (await build()).body
        entry = self._kept.get(key)
        if entry is not None and entry[0] == revision:
            return entry[1]

        async def build_and_keep() -> Built:
            built = await build()
            if built.complete:
                self._kept.put(key, (revision, built.body))
            return built

        return (await self._building.run((key, revision), build_and_keep)).body
