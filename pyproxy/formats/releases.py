"""Files grouped by release, releases ordered, the current release chosen. Pure, no I/O.

For every answer that groups a project's files by release: the legacy JSON API and the human
pages.
"""

from __future__ import annotations

from collections.abc import Sequence

from packaging.utils import canonicalize_version
from packaging.version import Version

from pyproxy.model import DistFile, ProjectPage

__all__ = [
    "Releases",
    "choose_version",
    "find_version",
    "group_files",
    "group_releases",
    "release_yanked",
]

Releases = dict[str, list[DistFile]]  # version -> its files, oldest version first

# Versions come from URLs and upstream pages, so any text: packaging raises InvalidVersion (a
# ValueError) for one it cannot read, and a plain ValueError for one it reads but whose number
# Python will not convert (more than 4300 digits, sys.get_int_max_str_digits). Both are "not a
# valid version" here.


def _release_key(version: str) -> str:
    """The spelling a release is known by: packaging's normal form ("1.0.0rc1" for
    "1.0.0-RC1"), or the string itself when it is not a valid version."""
    try:
        return str(Version(version))
    except ValueError:  # InvalidVersion, or a number too long to convert
        return version


def _sort_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except ValueError:  # InvalidVersion, or a number too long to convert
        return (0, version)  # legacy versions sort before every valid one


def _canonical(version: str) -> str | None:
    """canonicalize_version, or None for a version it cannot read."""
    try:
        return canonicalize_version(version)
    except ValueError:  # InvalidVersion, or a number too long to convert
        return None


def group_releases(page: ProjectPage) -> Releases:
    """Every version the page names, oldest first (by packaging's order: 1.9 before 1.10; the
    invalid ones before all others), each with its files sorted by filename. Versions listed
    without files (PEP 700) are releases with no files, and so are all of a quarantined
    project's (PEP 792)."""
    return group_files(page)[0]


def group_files(page: ProjectPage) -> tuple[Releases, list[DistFile]]:
    """`group_releases`, and the files whose version cannot be told from their name (so in no
    release), by filename; each file's name is parsed once."""
    keys: dict[str, str] = {}  # each spelling parsed once: projects have thousands of files

    def key_of(version: str) -> str:
        return keys.get(version) or keys.setdefault(version, _release_key(version))

    releases: dict[str, list[DistFile]] = {}
    unversioned: list[DistFile] = []
    for version in page.versions:
        releases.setdefault(key_of(version), [])
    for dist in page.files if page.status.offers_files else ():
        file_version = dist.version
        if file_version is None:
            unversioned.append(dist)
        else:
            releases.setdefault(key_of(file_version), []).append(dist)
    ordered = {
        version: sorted(releases[version], key=lambda d: d.filename)
        for version in sorted(releases, key=_sort_key)
    }
    return ordered, sorted(unversioned, key=lambda d: d.filename)


def release_yanked(files: Sequence[DistFile]) -> tuple[bool, str | None]:
    """A release is yanked when all its files are (PEP 592 yanks files; the index, releases)."""
    if not files or not all(dist.yanked for dist in files):
        return False, None
    return True, next((d.yanked_reason for d in files if d.yanked_reason), None)


def choose_version(releases: Releases) -> str | None:
    """The release `/pypi/<project>/json` describes, as the public index picks it: the highest
    one that is not yanked and not a prerelease; failing that a prerelease, then a yanked one.
    Only releases with files count, unless none has any."""
    candidates = [v for v, files in releases.items() if files] or list(releases)
    if not candidates:
        return None

    def rank(version: str) -> tuple[bool, int, tuple[int, Version | str]]:
        order = _sort_key(version)
        stage = 2 if isinstance(order[1], str) else int(order[1].is_prerelease)
        return (not release_yanked(releases[version])[0], -stage, order)

    return max(candidates, key=rank)


def find_version(releases: Releases, requested: str) -> str | None:
    """The release a `/pypi/<project>/<version>/json` URL names: the exact spelling, else the
    one equal after normalisation ("1.0.0" finds "1.0"), when that is unambiguous."""
    if requested in releases:
        return requested
    key = _release_key(requested)
    if key in releases:
        return key
    wanted = _canonical(requested)
    if wanted is None:
        return None
    matches = [v for v in releases if _canonical(v) == wanted]
    return matches[0] if len(matches) == 1 else None
