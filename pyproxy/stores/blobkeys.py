"""The blob cache's key scheme: what an upstream file, its `.metadata` and its provenance are
cached under. Pure: the cache, the repository and the operator commands all name entries so."""

from __future__ import annotations

import hashlib

from pyproxy.model import DistFile

__all__ = [
    "blob_key", "is_metadata_key", "is_provenance_key", "made_metadata_key", "metadata_key",
    "names_its_body", "provenance_key",
]

_METADATA_PREFIX = "meta:"
_PROVENANCE_PREFIX = "prov:"


def blob_key(dist: DistFile) -> str:
    """Cache key of an upstream file: its sha256 when upstream names one, else its URL."""
    if dist.sha256:
        return dist.sha256
    assert dist.upstream_url is not None
    return "url:" + hashlib.sha256(dist.upstream_url.encode()).hexdigest()


def metadata_key(dist: DistFile) -> str:
    """Cache key of an upstream file's `.metadata`: one pyproxy makes from the wheel keeps its
    wheel's key, also once its own sha256 is known."""
    if dist.metadata_from_wheel:
        return made_metadata_key(dist)
    sha256 = None if isinstance(dist.core_metadata, bool) else dist.core_metadata.get("sha256")
    return _METADATA_PREFIX + (sha256 or blob_key(dist))


def made_metadata_key(dist: DistFile) -> str:
    """Cache key of the `.metadata` pyproxy makes from a wheel, whatever the page offers."""
    return _METADATA_PREFIX + blob_key(dist)


def is_metadata_key(key: str) -> bool:
    return key.startswith(_METADATA_PREFIX)


def provenance_key(dist: DistFile) -> str:
    """Cache key of an upstream file's PEP 740 provenance object (never listed with a hash)."""
    return _PROVENANCE_PREFIX + blob_key(dist)


def is_provenance_key(key: str) -> bool:
    return key.startswith(_PROVENANCE_PREFIX)


def names_its_body(key: str, sha256: str) -> bool:
    """Whether `key` is the sha256 upstream listed for the body cached under it, rather than a
    stand-in for one it did not list (the file's URL; for a `.metadata`, its file's key)."""
    return key.removeprefix(_METADATA_PREFIX).lower() == sha256.lower()
