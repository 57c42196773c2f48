"""pyproxy.publish.upstream_names.ListedUpstream: is a name on upstream's list? One lookup per
question, in the list's own index (a set for a list in memory, a query for one on disk), never
the list loaded; the upstream repository's own list is tested in tests/repository/.
RoutedUpstream: with routes, a routed name is upstream's and any other is the default's to say
(end to end, over real routes: tests/e2e/test_name_claims.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pyproxy.model import Listed, NormalizedName, ProjectList, Unavailable, normalize
from pyproxy.publish.upstream_names import ListedUpstream, RoutedUpstream


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


class OnDisk:
    """A NameSource that records which thread asks it, and refuses to be read whole."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.asked_on: list[int] = []

    def entries(self) -> Iterator[Listed]:
        raise AssertionError("a name check must not read the whole list")

    def has(self, name: NormalizedName) -> bool:
        self.asked_on.append(threading.get_ident())
        return name in self.names


async def test_names_are_compared_normalised() -> None:
    listed = ListedUpstream(Lists(ProjectList(("Foo_Bar", "requests"), revision="r1")))
    assert await listed.lists(normalize("foo.bar"))
    assert await listed.lists(normalize("Requests"))
    assert not await listed.lists(normalize("foo"))


async def test_a_new_list_is_asked_at_once() -> None:
    source = Lists(ProjectList(("a",), revision="r1"))
    listed = ListedUpstream(source)
    assert not await listed.lists(normalize("b"))
    source.listing = ProjectList(("a", "b"), revision="r2")
    answers = await asyncio.gather(*(listed.lists(normalize("b")) for _ in range(20)))
    assert all(answers)
    assert source.calls == 21  # the list itself is the repository's to cache


async def test_a_list_on_disk_is_asked_one_name_off_the_loop() -> None:
    disk = OnDisk({"requests", "foo-bar"})
    listed = ListedUpstream(Lists(ProjectList(revision="u1", source=disk)))
    assert await listed.lists(normalize("Foo.Bar"))
    assert not await listed.lists(normalize("mine"))
    assert disk.asked_on and threading.get_ident() not in disk.asked_on


async def test_an_unavailable_list_is_not_a_no() -> None:
    source = Lists(ProjectList(("a",), revision="r1"))
    source.listing = Unavailable("upstream index unavailable (timeout) and no copy is cached")
    listed = ListedUpstream(source)
    with pytest.raises(Unavailable):
        await listed.lists(normalize("a"))


def routed_gpu(name: NormalizedName) -> bool:
    return name == "torch" or name.startswith("nvidia-")


async def test_a_routed_name_is_upstream_s_without_asking_a_list() -> None:
    default = Lists(ProjectList(("requests",), revision="r1"))
    default.listing = Unavailable("the default upstream's list is down")
    names = RoutedUpstream(routed_gpu, ListedUpstream(default))
    assert await names.lists(normalize("torch"))
    assert await names.lists(normalize("NVIDIA_new"))  # the route claims it, listed or not
    assert default.calls == 0


async def test_any_other_name_is_the_default_list_s_to_say() -> None:
    default = Lists(ProjectList(("requests",), revision="r1"))
    names = RoutedUpstream(routed_gpu, ListedUpstream(default))
    assert await names.lists(normalize("Requests"))
    assert not await names.lists(normalize("ours"))
    default.listing = Unavailable("upstream index unavailable (503) and no copy is cached")
    with pytest.raises(Unavailable):
        await names.lists(normalize("ours"))


async def test_without_a_default_upstream_an_unrouted_name_is_nobody_s() -> None:
    names = RoutedUpstream(routed_gpu, None)
    assert not await names.lists(normalize("ours"))
    assert await names.lists(normalize("torch"))
