"""pyproxy.project_lists: lists filtered and merged without being read until iterated."""

from __future__ import annotations

from collections.abc import Iterator

from pyproxy.model import Listed, NormalizedName, ProjectList, normalize
from pyproxy.project_lists import filtered, merged


class Counted:
    """A NameSource over given entries that counts how often it is read."""

    def __init__(self, *names: str) -> None:
        self.entries_read = 0
        self._entries = sorted((normalize(n), n) for n in names)

    def entries(self) -> Iterator[Listed]:
        self.entries_read += 1
        return iter(self._entries)

    def has(self, name: NormalizedName) -> bool:
        return any(entry[0] == name for entry in self._entries)


def test_in_memory_lists_iterate_by_normalised_name_each_once() -> None:
    listing = ProjectList(("b", "A_x", "a.X", "c"), revision="r")
    assert listing.names == ("b", "A_x", "a.X", "c")  # as given
    assert list(listing.entries()) == [("a-x", "A_x"), ("b", "b"), ("c", "c")]
    assert listing.has(normalize("A-X")) and not listing.has(normalize("d"))


def test_a_list_on_disk_has_no_names_in_memory() -> None:
    listing = ProjectList(revision="u", source=Counted("a"))
    try:
        listing.names  # noqa: B018 - the property is what is tested
    except TypeError as exc:
        assert "off the event loop" in str(exc)
    else:
        raise AssertionError("a list on disk gave its names")


def test_filtered_and_merged_read_nothing_until_iterated() -> None:
    upstream_source = Counted("Flask", "acme-x", "My.Pkg", "zope")
    upstream = ProjectList(revision="u", source=upstream_source)
    private = ProjectList(("my_pkg", "internal"), revision="p")
    served = merged([private, filtered(upstream, lambda n: not n.startswith("acme-"), "u")], "p+u")
    assert served.revision == "p+u" and upstream_source.entries_read == 0
    assert list(served.entries()) == [
        ("flask", "Flask"), ("internal", "internal"), ("my-pkg", "my_pkg"), ("zope", "zope"),
    ]
    assert upstream_source.entries_read == 1
    assert served.has(normalize("my.pkg")) and served.has(normalize("zope"))
    assert not served.has(normalize("acme-x"))  # filtered out, though upstream has it


def test_merged_keeps_the_first_list_s_spelling_and_each_name_once() -> None:
    first = ProjectList(("B", "d"))
    second = ProjectList(("a", "b", "c", "D", "e"))
    assert list(merged([first, second], "r").entries()) == [
        ("a", "a"), ("b", "B"), ("c", "c"), ("d", "d"), ("e", "e"),
    ]
    assert list(merged([], "r").entries()) == []
