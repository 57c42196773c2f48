"""The version a distribution's filename carries (a leaf: model.py and the stores use it)."""

from __future__ import annotations

from functools import lru_cache

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

__all__ = ["version_of"]

_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


def version_of(filename: str) -> str | None:
    """The version a distribution filename carries, or None if it cannot be told."""
    try:
        if filename.endswith(".whl"):
            return _wheel_version(filename)
        if filename.endswith((".tar.gz", ".zip")):
            return _sdist_version(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    except ValueError:  # a number too long for int(): an upstream page's, not a version
        return None
    # legacy names (eggs, old sdists with odd suffixes): "name-version[-pyX.Y].ext"
    stem = filename
    for suffix in (*_SDIST_SUFFIXES, ".egg", ".exe", ".msi", ".rpm", ".dmg"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        return None
    parts = stem.split("-")
    if len(parts) < 2:
        return None
    # eggs carry a python tag after the version; sdists end with it
    return parts[1] if filename.endswith(".egg") else parts[-1]


def _wheel_version(filename: str) -> str:
    """parse_wheel_filename's version, what a page's wheels share (the name and the tags: parsing
    tags is most of its cost) judged once, by parse_wheel_filename itself: a page of thousands
    of wheels is on a cold install's critical path."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) != 5:  # a build tag, or invalid: the whole parse
        return str(parse_wheel_filename(filename)[1])
    name, version, *tags = parts
    canonical = _canonical_version(version)
    if canonical is None or not _valid_name_and_tags(name, "-".join(tags)):
        raise InvalidWheelFilename(f"Invalid wheel filename: {filename!r}")
    return canonical


def _sdist_version(filename: str) -> str:
    """parse_sdist_filename's version (its name part is canonicalized, never refused), the
    version parsed once per page: its sdists share their versions with its wheels."""
    stem = filename[: -len(".tar.gz")] if filename.endswith(".tar.gz") else filename[: -len(".zip")]
    _name, dash, version = stem.rpartition("-")
    canonical = _canonical_version(version) if dash else None
    if canonical is None:
        return str(parse_sdist_filename(filename)[1])  # raises its own error
    return canonical


@lru_cache(maxsize=1024)
def _valid_name_and_tags(name: str, tags: str) -> bool:
    try:
        parse_wheel_filename(f"{name}-0-{tags}.whl")  # its own checks, with a valid version
    except InvalidWheelFilename:
        return False
    return True


@lru_cache(maxsize=4096)
def _canonical_version(text: str) -> str | None:
    try:
        return str(Version(text))
    except ValueError:  # InvalidVersion, or a number too long for int()
        return None
