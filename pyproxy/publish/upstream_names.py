"""Is a name a project upstream? What the publish service asks before a new name is claimed.

The answer comes from upstream's project list (the `/simple/` index, cached and revalidated by
the upstream repository like any page), never from a request for the name itself: a name
someone is about to upload privately is not sent upstream. The list can hold hundreds of
thousands of names, so its normalised names are kept as a set per list revision (built in a
thread, once however many uploads ask meanwhile) and each question is one set lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from pyproxy.model import NormalizedName, ProjectList, normalize


class UpstreamNames(Protocol):
    async def lists(self, name: NormalizedName) -> bool:
        """Whether upstream's project list has `name`; raises model.Unavailable when the list
        cannot be had (then nobody can tell, and the caller must not guess)."""
        ...


class ListedUpstream:
    """UpstreamNames from a repository's `list_projects` (e.g. the upstream repository's)."""

    def __init__(self, list_projects: Callable[[], Awaitable[ProjectList]]) -> None:
        self._list_projects = list_projects
        self._listing: ProjectList | None = None
        self._names: frozenset[NormalizedName] = frozenset()
        self._building = asyncio.Lock()

    async def lists(self, name: NormalizedName) -> bool:
        listing = await self._list_projects()
        if not self._same(listing):
            async with self._building:
                if not self._same(listing):
                    self._names = await asyncio.to_thread(_normalised, listing.names)
                    self._listing = listing
        return name in self._names

    def _same(self, listing: ProjectList) -> bool:
        known = self._listing
        if known is None:
            return False
        if listing is known:
            return True
        return bool(listing.revision) and listing.revision == known.revision


def _normalised(names: Iterable[str]) -> frozenset[NormalizedName]:
    return frozenset(normalize(shown) for shown in names)
