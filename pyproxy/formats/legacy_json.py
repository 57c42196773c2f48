"""The public index's legacy JSON API (`/pypi/<project>/json`), built from the model. No I/O.

Renovate, Dependabot and bandersnatch-like tools read it: `info` (metadata of one release),
`urls` (that release's files), `releases` (every version's files; project endpoint only),
`last_serial` and `vulnerabilities`. Field names, types and nulls follow the public index, so a
client that parses its answers parses ours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.errors import MessageError
from urllib.parse import quote

import orjson
from packaging.metadata import RawMetadata, parse_email

from pyproxy.formats.releases import Releases, release_yanked
from pyproxy.formats.render import format_upload_time
from pyproxy.model import DistFile, Origin, ProjectPage

__all__ = [
    "ReleaseMetadata",
    "build_document",
    "dumps",
    "file_entry",
    "metadata_file",
    "metadata_from_core",
    "metadata_from_fields",
]

FileURL = Callable[[DistFile], str]

# digest names as the public index writes them, from what pyproxy's stores call them
_DIGEST_NAMES = {
    "md5": "md5", "sha256": "sha256", "blake2b_256": "blake2b_256", "blake2_256": "blake2b_256"
}
_PACKAGE_TYPES = (
    (".whl", "bdist_wheel"),
    (".tar.gz", "sdist"), (".zip", "sdist"), (".tar.bz2", "sdist"), (".tar.xz", "sdist"),
    (".tgz", "sdist"), (".tar", "sdist"),
    (".egg", "bdist_egg"), (".exe", "bdist_wininst"), (".msi", "bdist_msi"),
    (".rpm", "bdist_rpm"), (".dmg", "bdist_dmg"),
)  # fmt: skip


# ---------------------------------------------------------------------------------- metadata


@dataclass(frozen=True, slots=True)
class ReleaseMetadata:
    """What `info` says about a release beyond its files; None/() when unknown."""

    name: str | None = None
    summary: str | None = None
    description: str | None = None
    description_content_type: str | None = None
    keywords: str | None = None
    license: str | None = None
    license_expression: str | None = None
    license_files: tuple[str, ...] = ()
    classifiers: tuple[str, ...] = ()
    author: str | None = None
    author_email: str | None = None
    maintainer: str | None = None
    maintainer_email: str | None = None
    home_page: str | None = None
    download_url: str | None = None
    platform: str | None = None
    requires_python: str | None = None
    requires_dist: tuple[str, ...] = ()
    provides_extra: tuple[str, ...] = ()
    dynamic: tuple[str, ...] = ()
    project_urls: Mapping[str, str] = field(default_factory=dict)


_TEXT_FIELDS = (
    "name", "summary", "description", "description_content_type", "license",
    "license_expression", "author", "author_email", "maintainer", "maintainer_email",
    "home_page", "download_url", "requires_python",
)  # fmt: skip
_LIST_FIELDS = ("license_files", "classifiers", "requires_dist", "provides_extra", "dynamic")
# upload form field -> core metadata key, where twine renames them
_FORM_RENAMES = {"license_file": "license_files", "platform": "platforms"}


def _from_raw(raw: Mapping[str, object], keywords: str | None) -> ReleaseMetadata:
    values: dict[str, object] = {}
    for key in _TEXT_FIELDS:
        value = raw.get(key)
        if isinstance(value, str) and value.strip():
            values[key] = value
    for key in _LIST_FIELDS:
        value = raw.get(key)
        if isinstance(value, list):
            values[key] = tuple(str(item) for item in value if str(item).strip())
    platforms = raw.get("platforms")
    if isinstance(platforms, list) and platforms:
        values["platform"] = ", ".join(str(p) for p in platforms)
    urls = raw.get("project_urls")
    if isinstance(urls, Mapping):
        values["project_urls"] = {str(label): str(url) for label, url in urls.items()}
    return ReleaseMetadata(keywords=keywords or None, **values)  # type: ignore[arg-type]


def metadata_from_core(data: bytes) -> ReleaseMetadata:
    """A METADATA / PKG-INFO file (PEP 658 `.metadata`), read leniently: what cannot be parsed
    is left out rather than failing the whole answer."""
    try:
        raw: RawMetadata = parse_email(data)[0]
    except (ValueError, MessageError):
        return ReleaseMetadata()
    keywords = raw.get("keywords")
    return _from_raw(raw, ", ".join(keywords) if keywords else None)


def metadata_from_fields(fields: Mapping[str, Sequence[str]]) -> ReleaseMetadata:
    """The metadata fields of an upload form (as the private store keeps them, form names)."""
    raw: dict[str, object] = {}
    for key, values in fields.items():
        values = [v for v in values if v != ""]
        if not values:
            continue
        key = _FORM_RENAMES.get(key, key)
        if key == "project_urls":
            urls: dict[str, str] = {}
            for value in values:
                label, _, url = value.partition(",")
                urls.setdefault(label.strip(), url.strip())
            raw[key] = urls
        elif key in _LIST_FIELDS or key == "platforms":
            raw[key] = list(values)
        else:
            raw[key] = values[0]
    keywords = raw.get("keywords")
    return _from_raw(raw, keywords if isinstance(keywords, str) else None)


def _urls(meta: ReleaseMetadata) -> dict[str, str] | None:
    """Home-page and Download-URL first, then the Project-URLs not already there (as the
    public index shows them)."""
    urls: dict[str, str] = {}
    if meta.home_page:
        urls["Homepage"] = meta.home_page
    if meta.download_url:
        urls["Download"] = meta.download_url
    for label, url in meta.project_urls.items():
        if url not in urls.values():
            urls.setdefault(label, url)
    return urls or None


# ---------------------------------------------------------------------------------- releases


def metadata_file(files: Sequence[DistFile]) -> DistFile | None:
    """The file of a release whose PEP 658 metadata describes it best: a wheel (an sdist's may
    leave fields dynamic), else any file that offers metadata."""
    offering = [dist for dist in files if dist.core_metadata]
    wheels = [dist for dist in offering if dist.filename.endswith(".whl")]
    chosen = wheels or offering
    return chosen[0] if chosen else None


# ---------------------------------------------------------------------------------- document


def _package_type(filename: str) -> str:
    for suffix, kind in _PACKAGE_TYPES:
        if filename.endswith(suffix):
            return kind
    return "unknown"


def _python_version(filename: str, package_type: str) -> str:
    """What twine sends as `pyversion`: the wheel's python tag, "source" for an sdist."""
    if package_type == "sdist":
        return "source"
    parts = filename.rsplit(".", 1)[0].split("-")
    if package_type == "bdist_wheel" and len(parts) >= 5:
        return parts[-3]
    if package_type == "bdist_egg" and len(parts) >= 3:
        return parts[2].removeprefix("py")
    return "any"


def _digests(dist: DistFile, extra: Mapping[str, str]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for source in (dist.hashes, extra):
        for name, value in source.items():
            if name in _DIGEST_NAMES:
                digests.setdefault(_DIGEST_NAMES[name], value)
    return digests


def file_entry(dist: DistFile, url: str, extra_digests: Mapping[str, str]) -> dict[str, object]:
    kind = _package_type(dist.filename)
    digests = _digests(dist, extra_digests)
    uploaded = dist.upload_time
    return {
        "comment_text": "",
        "digests": digests,
        "downloads": -1,
        "filename": dist.filename,
        "has_sig": False,
        "md5_digest": digests.get("md5"),
        "packagetype": kind,
        "python_version": _python_version(dist.filename, kind),
        "requires_python": dist.requires_python or None,
        "size": dist.size,
        "upload_time": uploaded.strftime("%Y-%m-%dT%H:%M:%S") if uploaded else None,
        "upload_time_iso_8601": format_upload_time(uploaded) if uploaded else None,
        "url": url,
        "yanked": dist.yanked,
        "yanked_reason": (dist.yanked_reason or None) if dist.yanked else None,
    }


def _info(
    page: ProjectPage, version: str, files: Sequence[DistFile], meta: ReleaseMetadata, base: str
) -> dict[str, object]:
    yanked, reason = release_yanked(files)
    requires_python = meta.requires_python or next(
        (d.requires_python for d in files if d.requires_python), None
    )
    project_url = f"{base}/project/{page.name}/"
    return {
        "author": meta.author,
        "author_email": meta.author_email,
        "bugtrack_url": None,
        "classifiers": list(meta.classifiers),
        "description": meta.description,
        "description_content_type": meta.description_content_type,
        "docs_url": None,
        "download_url": meta.download_url,
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": list(meta.dynamic) or None,
        "home_page": meta.home_page,
        "keywords": meta.keywords,
        "license": meta.license,
        "license_expression": meta.license_expression,
        "license_files": list(meta.license_files) or None,
        "maintainer": meta.maintainer,
        "maintainer_email": meta.maintainer_email,
        "name": meta.name or page.name,
        "package_url": project_url,
        "platform": meta.platform,
        "project_url": project_url,
        "project_urls": _urls(meta),
        "provides_extra": list(meta.provides_extra) or None,
        "release_url": f"{project_url}{quote(version, safe='+!')}/",  # the release's page
        "requires_dist": list(meta.requires_dist) or None,
        "requires_python": requires_python,
        "summary": meta.summary,
        "version": version,
        "yanked": yanked,
        "yanked_reason": reason,
    }


def build_document(
    page: ProjectPage,
    releases: Releases,
    version: str,
    *,
    metadata: ReleaseMetadata,
    base: str,
    file_url: FileURL,
    last_serial: int,
    private_digests: Mapping[str, Mapping[str, str]] | None = None,
    all_releases: bool,
) -> dict[str, object]:
    """The whole answer for `version` (a key of `releases`); `releases` only if `all_releases`.

    `private_digests`: more digests (md5, blake2_256) of private files, by filename.
    """
    extra = private_digests or {}

    def entries(files: Sequence[DistFile]) -> list[dict[str, object]]:
        return [
            file_entry(
                d, file_url(d), extra.get(d.filename, {}) if d.origin is Origin.PRIVATE else {}
            )
            for d in files
        ]

    document: dict[str, object] = {
        "info": _info(page, version, releases[version], metadata, base),
        "last_serial": last_serial,
        "urls": entries(releases[version]),
        "vulnerabilities": [],
    }
    if all_releases:
        document["releases"] = {v: entries(files) for v, files in releases.items()}
    return document


def dumps(document: Mapping[str, object]) -> bytes:
    return orjson.dumps(document)
