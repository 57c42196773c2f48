"""pyproxy.web.views: what the human pages show, from hand-built pages. Pure calls."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from pyproxy.model import DistFile, Origin, ProjectPage, ProjectStatus, normalize
from pyproxy.web.views import (
    ReleaseView,
    project_links,
    project_view,
    release_path,
    release_view,
)

SHA = "a" * 64


def url_of(dist: DistFile) -> str:
    return f"http://127.0.0.1:8080/files/foo/{quote(dist.filename)}"


def dist(filename: str, **fields: object) -> DistFile:
    fields.setdefault("hashes", {"sha256": SHA})
    fields.setdefault("origin", Origin.UPSTREAM)
    return DistFile(filename=filename, **fields)  # type: ignore[arg-type]


def page(*files: DistFile, versions: tuple[str, ...] = (), status: str = "active") -> ProjectPage:
    return ProjectPage.build(
        normalize("foo"), tuple(files), extra_versions=versions, status=ProjectStatus(status)
    )


def wheels(*versions: str, yanked: tuple[str, ...] = ()) -> ProjectPage:
    return page(*(dist(f"foo-{v}-py3-none-any.whl", yanked=v in yanked) for v in versions))


def test_versions_newest_first_by_packaging_then_invalid_then_unversioned() -> None:
    view = project_view(
        page(
            dist("foo-1.9.tar.gz"), dist("foo-1.10-py3-none-any.whl"), dist("foo-1.10.tar.gz"),
            dist("foo-2.0rc1.tar.gz"), dist("foo-banana.tar.gz"), dist("README.txt"),
            # PEP 700: listed, no files; "banana" only so: a file's version is what pip reads,
            # and "foo-banana.tar.gz" has none (it is among the other files)
            versions=("3.0", "banana"),
        ),
        url_of,
    )
    assert [v.version for v in view.versions] == [
        "3.0", "2.0rc1", "1.10", "1.9", "banana", "other files"
    ]
    ten = view.versions[2]
    assert [f.filename for f in ten.files] == ["foo-1.10-py3-none-any.whl", "foo-1.10.tar.gz"]
    assert ten.files[0].url == url_of(dist("foo-1.10-py3-none-any.whl"))
    assert view.versions[0].files == () and not view.versions[0].yanked
    assert "foo-banana.tar.gz" in [f.filename for f in view.versions[-1].files]
    assert view.current is ten  # the very object listed, so the template can open it


def test_spellings_of_one_version_are_one_release() -> None:
    view = project_view(page(dist("foo-1.0.0rc1.tar.gz"), dist("foo-1.0.0RC1-py3-none-any.whl")),
                        url_of)
    assert [(v.version, len(v.files)) for v in view.versions] == [("1.0.0rc1", 2)]


@pytest.mark.parametrize(
    ("versions", "yanked", "expected"),
    [
        (("1.0", "2.0", "1.5"), (), "2.0"),
        (("1.0", "2.0b1"), (), "1.0"),  # a prerelease only if nothing else
        (("1.0", "2.0"), ("2.0",), "1.0"),
        (("1.0", "2.0b1"), ("1.0",), "2.0b1"),  # not yanked beats final
        # all yanked: the final release, as the legacy JSON API picks it (not the newest)
        (("1.0", "2.0rc1"), ("1.0", "2.0rc1"), "1.0"),
    ],
)
def test_current_is_the_legacy_json_choice(
    versions: tuple[str, ...], yanked: tuple[str, ...], expected: str
) -> None:
    view = project_view(wheels(*versions, yanked=yanked), url_of)
    assert view.current is not None and view.current.version == expected


def test_no_current_without_files() -> None:
    view = project_view(page(versions=("1.0",)), url_of)
    assert view.current is None and view.current_private is None
    assert [v.version for v in view.versions] == ["1.0"]


def test_current_private_is_the_newest_private_release() -> None:
    mine = dist("foo-1.0-py3-none-any.whl", origin=Origin.PRIVATE)
    view = project_view(page(mine, dist("foo-2.0-py3-none-any.whl")), url_of)
    assert view.current is not None and view.current.version == "2.0"
    assert view.current_private is not None and view.current_private.version == "1.0"
    assert [f.private for f in view.current_private.files] == [True]
    assert view.has_upstream_files
    assert not project_view(page(mine), url_of).has_upstream_files


def test_a_quarantined_project_shows_no_files() -> None:
    """PEP 792: no distribution of a quarantined project is offered, on the page either."""
    view = project_view(
        page(dist("foo-1.0.tar.gz"), dist("README.txt"), status="quarantined"), url_of
    )
    assert [(v.version, v.files) for v in view.versions] == [("1.0", ())]
    assert view.current is None


def test_yank_state_and_file_details() -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    view = project_view(
        page(
            dist("foo-1.0.tar.gz", yanked=True, yanked_reason="bad", size=1500, upload_time=when,
                 requires_python=">=3.8"),
            dist("foo-1.0-py3-none-any.whl", requires_python=">=3.8"),
            dist("foo-0.9.tar.gz", yanked=True),
        ),
        url_of,
    )
    one, nine = view.versions
    assert not one.yanked and nine.yanked  # a release is yanked when all its files are
    assert one.requires_python == (">=3.8",)
    sdist = one.files[1]
    assert (sdist.size, sdist.uploaded, sdist.uploaded_iso) == (
        "1.5 kB", "2024-05-01 12:30 UTC", "2024-05-01T12:30:00+00:00"
    )
    assert (sdist.yanked, sdist.yanked_reason, sdist.sha256, sdist.private) == (
        True, "bad", SHA, False
    )


def test_release_view_finds_a_release_by_any_equal_spelling() -> None:
    p = page(dist("foo-1.0.tar.gz", yanked=True, yanked_reason="no"), dist("foo-2.0+local.tar.gz"),
             dist("foo-1.0-py3-none-any.whl", yanked=True))
    found = release_view(p, "1.0", url_of)
    assert isinstance(found, ReleaseView)
    assert found.release.version == "1.0" and found.release.yanked and found.yanked_reason == "no"
    assert [f.filename for f in found.release.files] == [d.filename for d in found.files] == [
        "foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz"
    ]
    assert found.release.path == "/project/foo/1.0/"
    assert release_view(p, "1.0.0", url_of) == "1.0"  # to redirect to
    assert release_view(p, "3.0", url_of) is None
    local = release_view(p, "2.0+local", url_of)
    assert isinstance(local, ReleaseView) and not local.release.yanked
    assert local.release.path == release_path(normalize("foo"), "2.0+local")
    assert local.release.path == "/project/foo/2.0+local/"
    assert release_path(normalize("foo"), "odd version?") == "/project/foo/odd%20version%3F/"


def test_project_view_links_each_release_but_not_the_unversioned_files() -> None:
    view = project_view(page(dist("foo-1.0.tar.gz"), dist("README.txt")), url_of)
    assert [(v.version, v.path) for v in view.versions] == [
        ("1.0", "/project/foo/1.0/"), ("other files", None)
    ]


def test_project_links_are_http_only() -> None:
    links = project_links({
        "home_page": ["https://example.test/home"],
        "download_url": ["javascript:alert(1)"],
        "project_urls": ["Source, https://example.test/src", "Evil, javascript:x", "No comma"],
    })
    assert [(link.label, link.url) for link in links] == [
        ("Homepage", "https://example.test/home"), ("Source", "https://example.test/src")
    ]
