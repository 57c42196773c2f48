"""pyproxy.filenames: the version a distribution filename carries."""

from __future__ import annotations

import pytest
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pyproxy.filenames import version_of

WHEELS = [
    "foo-1.0-py3-none-any.whl", "foo-1.0.0a1-py3-none-any.whl", "foo-01.00-py3-none-any.whl",
    "Foo_Bar-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "foo-1.0-1-py3-none-any.whl", "foo-1.0-x1-py3-none-any.whl", "foo-notaversion-py3-none-any.whl",
    "foo__bar-1.0-py3-none-any.whl", "foo-1.0-py3-none.whl", "foo-1.0-py3-none-any-extra-x.whl",
    "f o o-1.0-py3-none-any.whl", "foo-1.0-py3-none-ANY$.whl", "foo-1.0-py3-none-any+x.whl",
    "foo-1.0+local-py3-none-any.whl", "foo-1.0-py3.py2-none-any.whl",
]


def reference(filename: str) -> str | None:
    try:
        return str(parse_wheel_filename(filename)[1])
    except InvalidWheelFilename:
        return None


@pytest.mark.parametrize("filename", WHEELS)
def test_a_wheels_version_is_what_parse_wheel_filename_says(filename: str) -> None:
    for _ in range(2):  # the second time from what was remembered
        assert version_of(filename) == reference(filename)


def test_the_version_is_canonical_and_each_wheel_judged_on_its_own() -> None:
    assert version_of("foo-01.00-py3-none-any.whl") == "1.0"
    assert version_of("foo-1.0-py3-none-any.whl") == "1.0"
    assert version_of("foo-1.x-py3-none-any.whl") is None  # same name and tags, bad version


@pytest.mark.parametrize(("filename", "version"), [
    ("foo-1.0.tar.gz", "1.0"), ("foo-1.0.zip", "1.0"), ("foo-1.0-py2.7.egg", "1.0"),
    ("foo-1.0.tar.bz2", "1.0"), ("foo.txt", None), ("foo.tar.gz", None),
])
def test_other_distributions(filename: str, version: str | None) -> None:
    assert version_of(filename) == version


def test_a_number_too_long_for_int_cannot_be_told() -> None:
    huge = "9" * 5000  # int() refuses more than 4300 digits; an upstream page may list it
    assert version_of(f"foo-{huge}-py3-none-any.whl") is None
    assert version_of(f"foo-{huge}.tar.gz") is None


# ---- with the project's name, as pip reads it ----


@pytest.mark.parametrize(("filename", "project", "version"), [
    # a post release spelled "-1" (old sdists): the version is all after the name, not the last part
    ("foo-2.0-1.tar.gz", "foo", "2.0.post1"),
    ("foo-bar-1.0.tar.gz", "foo-bar", "1.0"),  # a '-' in the name (before PEP 625)
    ("Foo_Bar-1.0.tar.gz", "foo-bar", "1.0"),  # any spelling that normalizes to the name
    ("Foo.Bar-1.0.tar.gz", "foo-bar", "1.0"), ("foo__bar-1.0.tar.gz", "foo-bar", "1.0"),
    # one filename, two projects: the name decides where the version starts
    ("foo-1-2.tar.gz", "foo-1", "2"), ("foo-1-2.tar.gz", "foo", "1.post2"),
    # another project's file (or the rest no version): no version of this project
    ("bar-1.0.tar.gz", "foo", None), ("foobar-1.0.tar.gz", "foo", None),
    ("foo-bar-1.0.tar.gz", "foo", None), ("foo-.tar.gz", "foo", None), ("foo.tar.gz", "foo", None),
    ("foo-1.0.win32.exe", "foo", None), ("foo-1.0.txt", "foo", None),
    # the legacy suffixes, and those pip installs besides
    ("foo-2.0-1.tar.bz2", "foo", "2.0.post1"), ("foo-2.0-1.zip", "foo", "2.0.post1"),
    ("foo-2.0-1.tar.xz", "foo", "2.0.post1"), ("foo-2.0-1.tgz", "foo", "2.0.post1"),
    ("foo-2.0-1.tbz", "foo", "2.0.post1"), ("foo-2.0-1.tar", "foo", "2.0.post1"),
    ("foo_bar-1.0-py2.7.egg", "foo-bar", "1.0"), ("foo-01.0.tar.gz", "foo", "1.0"),
    # wheels: unambiguous, but another name's is none of this project's (pip skips it too)
    ("foo_bar-1.0-py3-none-any.whl", "foo-bar", "1.0"), ("Foo_Bar-1.0-1-py3-none-any.whl", "foo-bar", "1.0"),
    ("bar-1.0-py3-none-any.whl", "foo", None), ("foo-1.x-py3-none-any.whl", "foo", None),
])
def test_the_version_follows_the_projects_name(filename: str, project: str, version: str | None) -> None:
    assert version_of(filename, project) == version


def test_a_huge_number_with_the_project_cannot_be_told() -> None:
    huge = "9" * 5000
    assert version_of(f"foo-{huge}-py3-none-any.whl", "foo") is None
    assert version_of(f"foo-{huge}.tar.gz", "foo") is None


@pytest.mark.parametrize("stem", [
    "foo-2.0-1", "foo-bar-1.0", "Foo_Bar-1.0", "foo-1-2", "FOO.bar--1.0", "foo_-bar-1.0", "foo-1.0-",
    "foo-bar-1.0-1", "foo_bar_1.0", "-foo-1.0", "foo--1.0", "fooo-1.0", "foo-1.0.dev3+local",
])
@pytest.mark.parametrize("project", ["foo", "foo-bar", "foo-1", "foo-bar-1-0", "fooo"])
def test_an_sdists_version_is_pips(stem: str, project: str) -> None:
    # pip's own reading (pip >= 24.1 then skips a version packaging does not accept)
    package_finder = pytest.importorskip("pip._internal.index.package_finder")
    pips = getattr(package_finder, "_extract_version_from_fragment", None)  # pip's internals
    if pips is None:
        pytest.skip("this pip has no _extract_version_from_fragment")
    said = pips(stem, project)
    try:
        expected = None if said is None else str(Version(said))
    except InvalidVersion:
        expected = None
    for suffix in (".tar.gz", ".zip", ".tar.bz2"):
        assert version_of(stem + suffix, project) == expected, (stem, project)
