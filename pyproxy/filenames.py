"""The version a distribution's filename carries (a leaf: model.py and the stores use it)."""

from __future__ import annotations

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

__all__ = ["version_of"]

_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


def version_of(filename: str) -> str | None:
    """The version a distribution filename carries, or None if it cannot be told."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
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
