"""pyproxy.formats.releases: files grouped by release, the releases' order, the current release
and the one a URL names. Pure calls on hand-built pages."""

from __future__ import annotations

import pytest

from pyproxy.formats.releases import (
    Releases,
    choose_version,
    find_version,
    group_files,
    group_releases,
    release_yanked,
)
from pyproxy.model import DistFile, ProjectPage, ProjectStatus, normalize

SHA = "a" * 64


def dist(filename: str, **fields: object) -> DistFile:
    fields.setdefault("hashes", {"sha256": SHA})
    return DistFile(filename=filename, **fields)  # type: ignore[arg-type]


def page(
    *files: DistFile, versions: tuple[str, ...] = (), status: ProjectStatus | None = None
) -> ProjectPage:
    return ProjectPage.build(normalize("foo"), tuple(files), extra_versions=versions, status=status)


def versions(*names: str, yanked: tuple[str, ...] = ()) -> Releases:
    files = [dist(f"foo-{v}-py3-none-any.whl", yanked=v in yanked) for v in names]
    return group_releases(page(*files))


# ---------------------------------------------------------------------------- release choice


@pytest.mark.parametrize(
    ("names", "yanked", "expected"),
    [
        (("1.0", "2.0", "1.5"), (), "2.0"),
        (("1.0", "2.0b1"), (), "1.0"),  # a prerelease only if nothing else
        (("2.0b1", "2.0rc1"), (), "2.0rc1"),
        (("1.0", "2.0"), ("2.0",), "1.0"),  # yanked only if nothing else
        (("1.0", "2.0"), ("1.0", "2.0"), "2.0"),
        (("1.0", "2.0b1"), ("1.0",), "2.0b1"),  # as the public index: not yanked beats final
        (("1.0", "1.0.post1", "1.0+local"), (), "1.0.post1"),
        (("2.1+local", "2.0"), (), "2.1+local"),
        (("10.0", "9.0"), (), "10.0"),  # by version, not by string
    ],
)
def test_choose_version(names: tuple[str, ...], yanked: tuple[str, ...], expected: str) -> None:
    assert choose_version(versions(*names, yanked=yanked)) == expected


def test_choose_version_prefers_releases_with_files() -> None:
    releases = group_releases(page(dist("foo-1.0.tar.gz"), versions=("3.0",)))
    assert releases == {"1.0": [releases["1.0"][0]], "3.0": []}
    assert choose_version(releases) == "1.0"
    only_empty = group_releases(page(versions=("1.0", "3.0")))
    assert choose_version(only_empty) == "3.0"
    assert choose_version({}) is None


def test_a_release_is_yanked_only_when_all_its_files_are() -> None:
    wheel = dist("foo-1.0-py3-none-any.whl", yanked=True, yanked_reason="broken")
    sdist = dist("foo-1.0.tar.gz")
    assert release_yanked([wheel, sdist]) == (False, None)
    sdist = dist("foo-1.0.tar.gz", yanked=True)
    assert release_yanked([sdist, wheel]) == (True, "broken")
    assert release_yanked([sdist]) == (True, None)
    assert release_yanked([]) == (False, None)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [("1.0", "1.0"), ("1.0.0", "1.0"), ("1", "1.0"), ("2.0RC1", "2.0rc1"), ("2.0-rc.1", "2.0rc1"),
     ("3.0", None), ("not a version", None), ("", None)],
)
def test_find_version(requested: str, expected: str | None) -> None:
    assert find_version(versions("1.0", "2.0rc1"), requested) == expected


LONG = "9" * 5000  # a release number Python will not convert (sys.get_int_max_str_digits)


@pytest.mark.parametrize("requested", [LONG, f"1.{LONG}", f"{LONG}rc1", f"1.0.post{LONG}"])
def test_find_version_of_a_number_too_long_to_convert_is_none(requested: str) -> None:
    """packaging reads it, but raises ValueError converting its digits: no such release, not
    an error (GET /pypi/<project>/<version>/json and /project/<project>/<version>/ are 404)."""
    assert find_version(versions("1.0", "2.0rc1"), requested) is None


def test_a_version_too_long_to_convert_is_an_invalid_one() -> None:
    """An upstream page naming one: a release like any invalid version (sorted first, chosen
    last), found by its exact spelling."""
    releases = group_releases(page(dist("foo-1.0.tar.gz"), versions=(LONG,)))
    assert list(releases) == [LONG, "1.0"]
    assert choose_version(releases) == "1.0"
    assert find_version(releases, LONG) == LONG
    assert find_version(releases, "1.0.0") == "1.0"


def test_group_releases_orders_versions_and_files_and_skips_unparsable_filenames() -> None:
    files = (
        dist("foo-10.0.tar.gz"), dist("foo-2.0.tar.gz"), dist("foo-2.0-py3-none-any.whl"),
        dist("README.txt"), dist("foo-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
    )
    releases = group_releases(page(*files))
    assert list(releases) == ["2.0", "10.0"]
    assert [d.filename for d in releases["2.0"]] == [
        "foo-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "foo-2.0-py3-none-any.whl",
        "foo-2.0.tar.gz",
    ]


def test_quarantined_page_has_releases_but_no_files() -> None:
    p = page(dist("foo-1.0.tar.gz"), versions=("1.0",), status=ProjectStatus("quarantined"))
    assert group_releases(p) == {"1.0": []}


def test_group_files_sets_apart_the_files_in_no_release() -> None:
    files = (dist("foo-1.0.tar.gz"), dist("z.txt"), dist("README.txt"))
    releases, other = group_files(page(*files))
    assert list(releases) == ["1.0"] and [d.filename for d in other] == ["README.txt", "z.txt"]
    assert group_files(page(*files, status=ProjectStatus("quarantined"))) == ({"1.0": []}, [])
