"""pyproxy.filenames: the version a distribution filename carries."""

from __future__ import annotations

import pytest
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

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
