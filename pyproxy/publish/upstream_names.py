"""Is a name a project upstream? What the publish service asks before a new name is claimed.

The answer comes from upstream's project list (the `/simple/` index, cached and revalidated by
the upstream repository like any page), never from a request for the name itself: a name
someone is about to upload privately is not sent upstream. The list can hold a million names,
so it is not loaded: each question is one lookup in the list's on-disk database (an indexed
query, in a thread), or in the set a short list in memory keeps of its normalised names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from pyproxy.model import NormalizedName, ProjectList


class UpstreamNames(Protocol):
    async def lists(self, name: NormalizedName) -> bool:
        """Whether upstream's project list has `name`; raises model.Unavailable when the list
        cannot be had (then nobody can tell, and the caller must not guess)."""
        ...


class ListedUpstream:
    """UpstreamNames from a repository's `list_projects` (e.g. the upstream repository's)."""

    def __init__(self, list_projects: Callable[[], Awaitable[ProjectList]]) -> None:
        self._list_projects = list_projects

    async def lists(self, name: NormalizedName) -> bool:
        listing = await self._list_projects()
        if listing.source is None:
            return listing.has(name)  # a set lookup, once the set is made
        return await asyncio.to_thread(listing.has, name)
