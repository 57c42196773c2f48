"""The shared vocabulary (pyproxy/model.py): which strings are project names; a file offering
its made `.metadata`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from pyproxy.model import DistFile, Origin, normalize, valid_name


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


def test_offering_is_replace_of_those_two_fields_with_every_other_field_kept() -> None:
    # every field set to a value unlike its default, so a field offering() forgot would show
    dist = DistFile(
        filename="demo-1.0-py3-none-any.whl", hashes={"sha256": "ab" * 32}, size=7,
        upload_time=datetime(2026, 1, 2, tzinfo=UTC), requires_python=">=3.9",
        yanked=True, yanked_reason="broken", core_metadata={"sha256": "cd" * 32},
        metadata_from_wheel=False, origin=Origin.UPSTREAM, upstream_url="http://up/demo.whl",
        provenance=True, provenance_url="http://up/demo.whl.provenance",
    )
    kept = [f for f in dataclasses.fields(DistFile)
            if f.init and f.name not in ("core_metadata", "metadata_from_wheel")]
    assert all(getattr(dist, f.name) != f.default for f in kept)
    offered = dist.offering(True, from_wheel=True)
    assert offered == dataclasses.replace(dist, core_metadata=True, metadata_from_wheel=True)
    assert dist.version == "1.0" and offered.version == "1.0"
    assert dist.offering(False, from_wheel=False).version == "1.0"
