"""pyproxy.formats.legacy_json: the legacy JSON document from hand-built pages, the release
choice, and metadata from upload forms and core metadata files. Pure calls, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import orjson
import pytest

from pyproxy.formats import legacy_json
from pyproxy.formats.legacy_json import ReleaseMetadata
from pyproxy.formats.releases import choose_version, group_releases
from pyproxy.model import DistFile, Origin, ProjectPage, ProjectStatus, normalize
from tests.dists import core_metadata, form_fields_for, make_sdist, make_wheel

BASE = "http://127.0.0.1:8080"
SHA = "a" * 64
MD5 = "c" * 32
BLAKE = "b" * 64
UPLOADED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def file_url(dist: DistFile) -> str:
    return f"{BASE}/files/foo/{quote(dist.filename)}"


def dist(filename: str, **fields: object) -> DistFile:
    fields.setdefault("hashes", {"sha256": SHA})
    return DistFile(filename=filename, **fields)  # type: ignore[arg-type]


def page(*files: DistFile, versions: tuple[str, ...] = (), status: ProjectStatus | None = None) -> ProjectPage:
    return ProjectPage.build(normalize("foo"), tuple(files), extra_versions=versions, status=status)


def document(p: ProjectPage, version: str | None = None, **kwargs: object) -> dict:
    releases = group_releases(p)
    chosen = version or choose_version(releases)
    assert chosen is not None
    kwargs.setdefault("metadata", ReleaseMetadata())
    kwargs.setdefault("all_releases", True)
    doc = legacy_json.build_document(
        p, releases, chosen, base=BASE, file_url=file_url, last_serial=7, **kwargs  # type: ignore[arg-type]
    )
    return orjson.loads(legacy_json.dumps(doc))  # exactly what a client reads


# ---------------------------------------------------------------------------- metadata file


def test_metadata_file_prefers_a_wheel() -> None:
    sdist = dist("foo-1.0.tar.gz", core_metadata=True)
    plain = dist("foo-1.0-py2-none-any.whl")
    wheel = dist("foo-1.0-py3-none-any.whl", core_metadata={"sha256": SHA})
    assert legacy_json.metadata_file([sdist, plain, wheel]) is wheel
    assert legacy_json.metadata_file([sdist, plain]) is sdist
    assert legacy_json.metadata_file([plain]) is None


# ---------------------------------------------------------------------------- document shape

INFO_TYPES: dict[str, tuple[type, ...]] = {
    "author": (str, type(None)),
    "author_email": (str, type(None)),
    "bugtrack_url": (type(None),),
    "classifiers": (list,),
    "description": (str, type(None)),
    "description_content_type": (str, type(None)),
    "docs_url": (type(None),),
    "download_url": (str, type(None)),
    "downloads": (dict,),
    "dynamic": (list, type(None)),
    "home_page": (str, type(None)),
    "keywords": (str, type(None)),
    "license": (str, type(None)),
    "license_expression": (str, type(None)),
    "license_files": (list, type(None)),
    "maintainer": (str, type(None)),
    "maintainer_email": (str, type(None)),
    "name": (str,),
    "package_url": (str,),
    "platform": (str, type(None)),
    "project_url": (str,),
    "project_urls": (dict, type(None)),
    "provides_extra": (list, type(None)),
    "release_url": (str,),
    "requires_dist": (list, type(None)),
    "requires_python": (str, type(None)),
    "summary": (str, type(None)),
    "version": (str,),
    "yanked": (bool,),
    "yanked_reason": (str, type(None)),
}
FILE_TYPES: dict[str, tuple[type, ...]] = {
    "comment_text": (str,),
    "digests": (dict,),
    "downloads": (int,),
    "filename": (str,),
    "has_sig": (bool,),
    "md5_digest": (str, type(None)),
    "packagetype": (str,),
    "python_version": (str,),
    "requires_python": (str, type(None)),
    "size": (int, type(None)),
    "upload_time": (str, type(None)),
    "upload_time_iso_8601": (str, type(None)),
    "url": (str,),
    "yanked": (bool,),
    "yanked_reason": (str, type(None)),
}


def check_shape(doc: dict, *, all_releases: bool) -> None:
    """Every key the public index's answer has, with its types (shared with the HTTP tests)."""
    expected = {"info", "last_serial", "urls", "vulnerabilities"} | ({"releases"} if all_releases else set())
    assert set(doc) == expected
    assert isinstance(doc["last_serial"], int) and doc["vulnerabilities"] == []
    assert set(doc["info"]) == set(INFO_TYPES)
    for key, types in INFO_TYPES.items():
        assert isinstance(doc["info"][key], types), (key, doc["info"][key])
    assert doc["info"]["downloads"] == {"last_day": -1, "last_month": -1, "last_week": -1}
    entries = list(doc["urls"])
    if all_releases:
        assert isinstance(doc["releases"], dict)
        assert doc["info"]["version"] in doc["releases"]
        entries += [entry for files in doc["releases"].values() for entry in files]
    for entry in entries:
        assert set(entry) == set(FILE_TYPES)
        for key, types in FILE_TYPES.items():
            assert isinstance(entry[key], types), (key, entry[key])
        assert entry["packagetype"] in ("bdist_wheel", "sdist")
        assert set(entry["digests"]) <= {"md5", "sha256", "blake2b_256"} and "sha256" in entry["digests"]
        assert entry["md5_digest"] == entry["digests"].get("md5")
        assert entry["has_sig"] is False and entry["comment_text"] == "" and entry["downloads"] == -1


def test_document_shape_and_file_entries() -> None:
    wheel = dist(
        "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", size=123, upload_time=UPLOADED,
        requires_python=">=3.11", origin=Origin.PRIVATE,
    )
    sdist = dist("foo-1.0.tar.gz", size=45, yanked=True, yanked_reason="")
    older = dist("foo-0.9.tar.gz", size=40)
    doc = document(
        page(wheel, sdist, older),
        private_digests={wheel.filename: {"md5": MD5, "blake2_256": BLAKE, "sha256": SHA}},
    )
    check_shape(doc, all_releases=True)
    assert list(doc["releases"]) == ["0.9", "1.0"]
    assert doc["releases"]["1.0"] == doc["urls"]
    assert doc["last_serial"] == 7
    whl, tgz = doc["urls"]
    assert whl == {
        "comment_text": "",
        "digests": {"sha256": SHA, "md5": MD5, "blake2b_256": BLAKE},
        "downloads": -1,
        "filename": wheel.filename,
        "has_sig": False,
        "md5_digest": MD5,
        "packagetype": "bdist_wheel",
        "python_version": "cp311",
        "requires_python": ">=3.11",
        "size": 123,
        "upload_time": "2024-05-06T07:08:09",
        "upload_time_iso_8601": "2024-05-06T07:08:09.123456Z",
        "url": f"{BASE}/files/foo/{wheel.filename}",
        "yanked": False,
        "yanked_reason": None,
    }
    assert tgz["packagetype"] == "sdist" and tgz["python_version"] == "source"
    assert tgz["digests"] == {"sha256": SHA} and tgz["md5_digest"] is None  # upstream: as listed
    assert tgz["upload_time"] is None and tgz["upload_time_iso_8601"] is None
    assert tgz["yanked"] is True and tgz["yanked_reason"] is None  # "" reads as no reason


def test_private_digests_apply_to_private_files_only() -> None:
    upstream = dist("foo-1.0.tar.gz", origin=Origin.UPSTREAM, hashes={"sha256": SHA, "blake2b_256": BLAKE})
    doc = document(page(upstream), private_digests={upstream.filename: {"md5": MD5}})
    assert doc["urls"][0]["digests"] == {"sha256": SHA, "blake2b_256": BLAKE}


def test_version_document_has_no_releases_and_describes_that_version() -> None:
    p = page(dist("foo-1.0.tar.gz"), dist("foo-2.0.tar.gz", yanked=True, yanked_reason="bad"))
    doc = document(p, "2.0", all_releases=False)
    check_shape(doc, all_releases=False)
    info = doc["info"]
    assert info["version"] == "2.0" and info["yanked"] is True and info["yanked_reason"] == "bad"
    assert [f["filename"] for f in doc["urls"]] == ["foo-2.0.tar.gz"]
    assert info["package_url"] == info["project_url"] == f"{BASE}/project/foo/"
    assert info["release_url"] == f"{BASE}/project/foo/2.0/"


def test_info_without_metadata_is_name_version_requires_python_and_nulls() -> None:
    p = page(dist("foo-1.0-py3-none-any.whl", requires_python=">=3.9"))
    info = document(p)["info"]
    assert info["name"] == "foo" and info["version"] == "1.0" and info["requires_python"] == ">=3.9"
    for key in ("summary", "description", "author", "license", "home_page", "keywords",
                "requires_dist", "project_urls", "yanked_reason"):
        assert info[key] is None, key
    assert info["classifiers"] == []


def test_info_from_metadata() -> None:
    meta = ReleaseMetadata(
        name="Foo", summary="S", home_page="https://example.org/home",
        project_urls={"Source": "https://example.org/src", "Home": "https://example.org/home"},
        requires_dist=("bar>=1",), classifiers=("License :: OSI Approved",), requires_python=">=3.10",
    )
    info = document(page(dist("foo-1.0.tar.gz", requires_python=">=3.8")), metadata=meta)["info"]
    assert info["name"] == "Foo" and info["summary"] == "S"
    assert info["requires_python"] == ">=3.10"  # the release's metadata before its files
    assert info["requires_dist"] == ["bar>=1"] and info["classifiers"] == ["License :: OSI Approved"]
    # Home-page first, a Project-URL with the same address not repeated
    assert info["project_urls"] == {"Homepage": "https://example.org/home", "Source": "https://example.org/src"}


# ---------------------------------------------------------------------------- metadata sources

EXTRA = (
    "Author: Ann Author\n"
    "Author-email: ann@example.org\n"
    "License: MIT\n"
    "Keywords: alpha,beta\n"
    "Classifier: Programming Language :: Python :: 3\n"
    "Classifier: License :: OSI Approved :: MIT License\n"
    "Project-URL: Source, https://example.org/src\n"
    "Project-URL: Docs, https://example.org/docs\n"
    "Provides-Extra: fast\n"
    "Description-Content-Type: text/markdown\n"
    "\n"
    "# Foo\n\nLong *description*.\n"
)


def test_metadata_from_core_file() -> None:
    data = core_metadata("Foo", "1.0", requires_dist=["bar>=1", 'baz; extra == "fast"'],
                         requires_python=">=3.9", extra_metadata=EXTRA)
    meta = legacy_json.metadata_from_core(data)
    assert meta.name == "Foo" and meta.summary == "A test package"
    assert meta.author == "Ann Author" and meta.author_email == "ann@example.org"
    assert meta.license == "MIT" and meta.keywords == "alpha, beta"
    assert meta.classifiers == ("Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License")
    assert meta.requires_dist == ("bar>=1", 'baz; extra == "fast"')
    assert meta.requires_python == ">=3.9" and meta.provides_extra == ("fast",)
    assert meta.project_urls == {"Source": "https://example.org/src", "Docs": "https://example.org/docs"}
    assert meta.description_content_type == "text/markdown"
    assert meta.description == "# Foo\n\nLong *description*.\n"


@pytest.mark.parametrize("data", [b"", b"\xff\xfe garbage", b"Name: x\nVersion: 1\n", b"\x00" * 10])
def test_metadata_from_broken_core_file_is_lenient(data: bytes) -> None:
    meta = legacy_json.metadata_from_core(data)
    assert isinstance(meta, ReleaseMetadata)


def test_metadata_from_upload_form_matches_the_core_file(tmp_path) -> None:
    """What twine sends for a file says the same as the file's own METADATA."""
    for path in (
        make_wheel(tmp_path, "Foo", "1.0", requires_dist=["bar>=1"], requires_python=">=3.9", extra_metadata=EXTRA),
        make_sdist(tmp_path, "Foo", "1.0", requires_python=">=3.9", extra_metadata=EXTRA),
    ):
        fields = form_fields_for(path)
        from_form = legacy_json.metadata_from_fields(fields)
        from_file = legacy_json.metadata_from_core(core_metadata(
            "Foo", "1.0", requires_dist=["bar>=1"] if path.suffix == ".whl" else [],
            requires_python=">=3.9", extra_metadata=EXTRA,
        ))
        assert from_form == from_file


def test_metadata_from_fields_edge_cases() -> None:
    meta = legacy_json.metadata_from_fields({
        "summary": [""], "home_page": ["https://example.org"], "license_file": ["LICENSE", "NOTICE"],
        "platform": ["linux", "macos"], "project_urls": ["Repo,https://example.org/r", "No comma"],
        "unknown_field": ["x"], "dynamic": ["Requires-Dist"],
    })
    assert meta.summary is None  # an empty field means absent
    assert meta.license_files == ("LICENSE", "NOTICE") and meta.platform == "linux, macos"
    assert meta.project_urls == {"Repo": "https://example.org/r", "No comma": ""}
    assert meta.dynamic == ("Requires-Dist",)
    assert legacy_json.metadata_from_fields({}) == ReleaseMetadata()
