"""pyproxy.publish.upstream_names.ListedUpstream: upstream's project list as a set, built once
per list revision; the upstream repository's own list is tested in tests/repository/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from pyproxy.model import NormalizedName, ProjectList, Unavailable, normalize
from pyproxy.publish import upstream_names
from pyproxy.publish.upstream_names import ListedUpstream


class Lists:
    """A `list_projects` that answers what the test last set."""

    def __init__(self, listing: ProjectList) -> None:
        self.listing: ProjectList | Exception = listing
        self.calls = 0

    async def __call__(self) -> ProjectList:
        self.calls += 1
        await asyncio.sleep(0)
        if isinstance(self.listing, Exception):
            raise self.listing
        return self.listing


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many names each set build normalised."""
    counted: list[int] = []
    real = upstream_names._normalised

    def normalised(names: Iterable[str]) -> frozenset[NormalizedName]:
        names = list(names)
        counted.append(len(names))
        return real(names)

    monkeypatch.setattr(upstream_names, "_normalised", normalised)
    return counted


async def test_names_are_compared_normalised(builds: list[int]) -> None:
    listed = ListedUpstream(Lists(ProjectList(("Foo_Bar", "requests"), revision="r1")))
    assert await listed.lists(normalize("foo.bar"))
    assert await listed.lists(normalize("Requests"))
    assert not await listed.lists(normalize("foo"))
    assert builds == [2]  # one set for every question about revision r1


async def test_a_new_revision_is_built_once_however_many_ask(builds: list[int]) -> None:
    source = Lists(ProjectList(("a",), revision="r1"))
    listed = ListedUpstream(source)
    assert not await listed.lists(normalize("b"))
    source.listing = ProjectList(("a", "b"), revision="r2")
    answers = await asyncio.gather(*(listed.lists(normalize("b")) for _ in range(20)))
    assert all(answers)
    assert builds == [1, 2]
    assert source.calls == 21  # the list itself is the repository's to cache


async def test_a_list_without_revision_is_rebuilt_only_when_it_is_another_list(
    builds: list[int],
) -> None:
    first = ProjectList(("a",))
    source = Lists(first)
    listed = ListedUpstream(source)
    await listed.lists(normalize("a"))
    await listed.lists(normalize("a"))
    source.listing = ProjectList(("b",))
    assert await listed.lists(normalize("b"))
    assert builds == [1, 1]


async def test_an_unavailable_list_is_not_a_no() -> None:
    source = Lists(ProjectList(("a",), revision="r1"))
    source.listing = Unavailable("upstream index unavailable (timeout) and no copy is cached")
    listed = ListedUpstream(source)
    with pytest.raises(Unavailable):
        await listed.lists(normalize("a"))
