"""The shared vocabulary (pyproxy/model.py): which strings are project names; a file offering
its made `.metadata`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from pyproxy.model import DistFile, Origin, ProjectPage, normalize, valid_name


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


def dist(filename: str) -> DistFile:
    return DistFile(filename=filename, hashes={})


def test_a_pages_files_carry_the_version_read_with_its_name() -> None:
    # the policy, `versions` and the releases read dist.version: pip's, not what follows the last '-'
    files = (dist("foo-2.0-1.tar.gz"), dist("foo-1-2.tar.gz"), dist("bar-3.0.tar.gz"),
             dist("foo-1.0-py3-none-any.whl"), dist("bar-3.0-py3-none-any.whl"))
    page = ProjectPage.build(normalize("foo"), files)
    assert [d.version for d in page.files] == ["2.0.post1", "1.post2", None, "1.0", None]
    assert page.versions == ("2.0.post1", "1.post2", "1.0")  # no bogus "1", "2" or "3.0"
    direct = ProjectPage(name=normalize("foo"), files=(dist("foo-2.0-1.zip"),))
    assert direct.files[0].version == "2.0.post1"  # however the page is made


def test_a_version_read_without_the_project_is_read_again_on_its_page() -> None:
    early = dist("foo-2.0-1.tar.gz")
    assert early.version == "1"  # on no page: the last '-' (what private upload names allow)
    page = ProjectPage.build(normalize("foo"), (early,))
    assert page.files[0].version == "2.0.post1" and page.versions == ("2.0.post1",)
    assert page.files[0].offering(True, from_wheel=False).version == "2.0.post1"
    assert dataclasses.replace(page, revision="r").files[0].version == "2.0.post1"


def test_a_file_on_two_projects_pages_has_each_ones_version() -> None:
    shared = dist("foo-1-2.tar.gz")
    of_foo = ProjectPage.build(normalize("foo"), (shared,))
    of_foo_1 = ProjectPage.build(normalize("foo-1"), (shared,))
    assert (of_foo.files[0].version, of_foo_1.files[0].version) == ("1.post2", "2")
    assert of_foo.versions == ("1.post2",) and of_foo_1.versions == ("2",)
    assert of_foo_1.file("foo-1-2.tar.gz") is of_foo_1.files[0]
