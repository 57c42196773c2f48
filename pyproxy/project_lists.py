"""Project lists built from others without reading them: filtered, and merged.

The upstream side of `/simple/` is about a million names on disk (stores/project_list.py);
the layers above it (a policy's allow list, the routes, private wins, a reader's hidden
projects) each make a list of their own out of it. Here they do so lazily: the result reads
its sources name by name when it is iterated (off the event loop, by the renderer), so no
layer holds the names. Every list iterates by normalised name, each name once, so merging is
a streaming merge of sorted sequences in which the first list to name a project wins.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter

from pyproxy.model import Listed, NormalizedName, ProjectList

__all__ = ["filtered", "merged"]


class _Filtered:
    def __init__(self, listing: ProjectList, keep: Callable[[NormalizedName], bool]) -> None:
        self._listing = listing
        self._keep = keep

    def entries(self) -> Iterator[Listed]:
        keep = self._keep
        return (entry for entry in self._listing.entries() if keep(entry[0]))

    def has(self, name: NormalizedName) -> bool:
        return self._keep(name) and self._listing.has(name)


class _Merged:
    def __init__(self, lists: Sequence[ProjectList]) -> None:
        self._lists = tuple(lists)

    def entries(self) -> Iterator[Listed]:
        # heapq.merge is stable: on equal names the earlier list's entry comes first
        last: NormalizedName | None = None
        for entry in heapq.merge(*(lst.entries() for lst in self._lists), key=itemgetter(0)):
            if entry[0] != last:
                last = entry[0]
                yield entry

    def has(self, name: NormalizedName) -> bool:
        return any(listing.has(name) for listing in self._lists)


def filtered(
    listing: ProjectList, keep: Callable[[NormalizedName], bool], revision: str
) -> ProjectList:
    """The projects of `listing` that `keep` keeps (`keep` is asked off the loop, per name)."""
    return ProjectList(revision=revision, source=_Filtered(listing, keep))


def merged(lists: Sequence[ProjectList], revision: str) -> ProjectList:
    """Every project of `lists` once, in the spelling of the first list that has it."""
    return ProjectList(revision=revision, source=_Merged(lists))
