"""The shared vocabulary (pyproxy/model.py): which strings are project names."""

from __future__ import annotations

import pytest

from pyproxy.model import normalize, valid_name


@pytest.mark.parametrize(
    "name",
    ["a", "A", "0", "foo", "Foo_Bar", "foo.bar", "foo-bar", "a1", "zope.interface", "x" * 200],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "", "-", "_foo", "foo-", ".foo", "foo.", "foo bar", "foo/bar", "foo\n", "\nfoo",
        "föo", "\u017f",  # long s: case-folds to "s"
        "\u212aeras",  # Kelvin sign: case-folds to "k"
        "\u0131nt",  # dotless i
        "ｆｏｏ",  # fullwidth letters
        "foo\u200b",  # zero-width space
    ],
    ids=repr,
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


@pytest.mark.parametrize(
    ("name", "normalized"),
    [("Foo_Bar", "foo-bar"), ("foo.bar", "foo-bar"), ("FOO--bar__baz", "foo-bar-baz")],
)
def test_a_valid_name_normalizes_to_a_valid_name(name: str, normalized: str) -> None:
    assert normalize(name) == normalized and valid_name(normalize(name))
