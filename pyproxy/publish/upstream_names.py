"""Is a name a project upstream? What the publish service asks before a new name is claimed.

The answer comes from upstream's project list (the `/simple/` index, cached and revalidated by
the upstream repository like any page), never from a request for the name itself: a name
someone is about to upload privately is not sent upstream. The list can hold a million names,
so it is not loaded: each question is one lookup in the list's on-disk database (an indexed
query, in a thread), or in the set a short list in memory keeps of its normalised names.

With `[[upstreams]]` routes a name is asked of the one upstream that serves it (`RoutedUpstream`),
never of the merged `/simple/` list, which leaves out the names of an upstream whose list failed.
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


class RoutedUpstream:
    """UpstreamNames over `[[upstreams]]` routes: a name a route claims is upstream's without
    asking any list; any other name is asked of the default upstream's list alone, whose
    Unavailable is the caller's (503), as without routes.

    A route's `projects` claim names by configuration, as `[uploads] reserved_prefixes` does:
    a private upload of one would win over the route for every client, and a routed index's
    list is often absent (no root `/simple/`), failing or stale, so it is never what lets a
    plain user have one; an admin makes one private with `pyproxy reserve`.
    """

    def __init__(
        self, routed: Callable[[NormalizedName], bool], default: UpstreamNames | None
    ) -> None:
        self._routed = routed
        self._default = default  # None: no [upstream], a name no route claims is nobody's

    async def lists(self, name: NormalizedName) -> bool:
        if self._routed(name):
            return True
        if self._default is None:
            return False
        return await self._default.lists(name)
