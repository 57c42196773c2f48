"""The version a distribution's filename carries (a leaf: model.py and the stores use it)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

__all__ = ["reader_of", "version_of"]

_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")
_LEGACY_SUFFIXES = (".egg", ".exe", ".msi", ".rpm", ".dmg")
# what pip installs besides wheels (pip's ARCHIVE_EXTENSIONS), then the legacy names
_PROJECT_SUFFIXES = (
    ".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz",
    ".tar.lzma", *_LEGACY_SUFFIXES,
)


def version_of(filename: str, project: str | None = None) -> str | None:
    """The version a distribution filename of `project` carries, or None if it cannot be told.

    With `project`, read as pip reads it: the stem must start with a spelling of the project's
    name ("Foo_Bar" for foo-bar) and a '-', the rest is the version ("foo-2.0-1.tar.gz" of foo
    is 2.0.post1); a file of another name, or a rest that is no valid version, is None. A
    wheel of another name is None too (pip skips it).

    Without it, an sdist's version follows its last '-': only right for a name checked to be so
    (private uploads, publish/validate_file.py); "foo-2.0-1.tar.gz" reads as "1".
    """
    if project is not None:
        return reader_of(project)(filename)
    try:
        if filename.endswith(".whl"):
            return _wheel_version(filename)[1]
        if filename.endswith((".tar.gz", ".zip")):
            return _sdist_version(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    except ValueError:  # a number too long for int(): an upstream page's, not a version
        return None
    # legacy names (eggs, old sdists with odd suffixes): "name-version[-pyX.Y].ext"
    stem = filename
    for suffix in (*_SDIST_SUFFIXES, *_LEGACY_SUFFIXES):
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


@lru_cache(maxsize=256)
def reader_of(project: str) -> Callable[[str], str | None]:
    """`version_of(filename, project)` as a function of the filename: for a page's thousands of
    files, the project's spellings made once."""
    canonical = canonicalize_name(project)
    spellings = (canonical, canonical.replace("-", "_"))  # as normalized, and as PEP 625 spells it
    size = len(canonical)

    def read(filename: str) -> str | None:
        if filename.endswith(".whl"):
            try:
                name, version = _wheel_version(filename)
            except ValueError:  # InvalidWheelFilename, or a number too long for int()
                return None
            # pip skips a wheel of another name, so its version is none of this project's
            if name.lower() in spellings or _canonical_name(name) == canonical:
                return version
            return None
        if filename.endswith(".tar.gz"):  # most sdists: the loop below, without the loop
            suffix = ".tar.gz"
        else:
            for suffix in _PROJECT_SUFFIXES:  # the one found is read below
                if filename.endswith(suffix):
                    break
            else:
                return None
        stem = filename[: -len(suffix)]
        # the usual spellings at once ("foo_bar-", "Foo-Bar-"): no earlier '-' ends a spelling
        # of the name then; else pip's _find_name_version_sep, the first '-' after one
        rest: str | None
        if stem[size : size + 1] == "-" and stem[:size].lower() in spellings:
            rest = stem[size + 1 :]
        elif (rest := _after_name(stem, canonical)) is None:
            return None
        if suffix == ".egg":  # "name-version[-pyX.Y[-platform]]": an egg's version has no '-'
            rest = rest.partition("-")[0]
        return _canonical_version(rest)

    return read


def _after_name(stem: str, canonical: str) -> str | None:
    """The stem after the first '-' whose prefix normalizes to the name, as pip finds it."""
    dash = stem.find("-")
    while dash > 0:
        if _canonical_name(stem[:dash]) == canonical:
            return stem[dash + 1 :]
        dash = stem.find("-", dash + 1)
    return None


@lru_cache(maxsize=4096)
def _canonical_name(name: str) -> str:
    return canonicalize_name(name)


def _wheel_version(filename: str) -> tuple[str, str]:
    """parse_wheel_filename's name part (as spelled) and version, what a page's wheels share
    (the name and the tags: parsing tags is most of its cost) judged once, by
    parse_wheel_filename itself: a page of thousands of wheels is on a cold install's path."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) != 5:  # a build tag, or invalid: the whole parse
        parsed = parse_wheel_filename(filename)
        return parsed[0], str(parsed[1])
    name, version, *tags = parts
    canonical = _canonical_version(version)
    if canonical is None or not _valid_name_and_tags(name, "-".join(tags)):
        raise InvalidWheelFilename(f"Invalid wheel filename: {filename!r}")
    return name, canonical


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
