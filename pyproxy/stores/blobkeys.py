"""The blob cache's key scheme: what an upstream file, its `.metadata` and its provenance are
cached under. Pure: the cache, the repository and the operator commands all name entries so."""

from __future__ import annotations

import hashlib

from pyproxy.model import DistFile

__all__ = [
    "blob_key", "is_metadata_key", "is_provenance_key", "made_metadata_key", "metadata_key",
    "names_its_body", "provenance_key", "ranged_metadata_key",
]

_METADATA_PREFIX = "meta:"
_MADE_PREFIX = "made:"
_RANGED_PREFIX = "ranged:"
_PROVENANCE_PREFIX = "prov:"


def blob_key(dist: DistFile) -> str:
    """Cache key of an upstream file: its sha256 when upstream names one, else its URL."""
    if dist.sha256:
        return dist.sha256
    assert dist.upstream_url is not None
    return _url_key(dist.upstream_url)


def _url_key(url: str) -> str:
    return "url:" + hashlib.sha256(url.encode()).hexdigest()


# A body upstream lists no hash for is keyed by the URL it came from, never by its file's
# sha256: another upstream (a route) may list a file of that sha256 beside a `.metadata` or
# provenance object of its own, which would then be served for this file too.


def metadata_key(dist: DistFile) -> str:
    """Cache key of an upstream file's `.metadata`: the sha256 its page lists for it, else its
    URL; one pyproxy makes from the wheel is made_metadata_key's, also once its sha256 is
    known."""
    if dist.metadata_from_wheel:
        return made_metadata_key(dist)
    sha256 = None if isinstance(dist.core_metadata, bool) else dist.core_metadata.get("sha256")
    if sha256:
        return _METADATA_PREFIX + sha256
    assert dist.upstream_url is not None
    return _METADATA_PREFIX + _url_key(dist.upstream_url + ".metadata")


def made_metadata_key(dist: DistFile) -> str:
    """Cache key of the `.metadata` pyproxy makes from a wheel, whatever the page offers: of
    its own (a body upstream lists under `metadata_key` could be anything), after the wheel's
    key (the wheel's bytes decide it)."""
    return _MADE_PREFIX + blob_key(dist)


def ranged_metadata_key(dist: DistFile) -> str:
    """Cache key of a `.metadata` pyproxy made from ranges of a wheel not verified yet: apart
    from made_metadata_key's, because a range comes with no hash (a host may answer ranges
    with other bytes than the file it serves whole)."""
    return _RANGED_PREFIX + blob_key(dist)


def is_metadata_key(key: str) -> bool:
    return key.startswith((_METADATA_PREFIX, _MADE_PREFIX, _RANGED_PREFIX))


def provenance_key(dist: DistFile) -> str:
    """Cache key of an upstream file's PEP 740 provenance object (never listed with a hash)."""
    assert dist.provenance_url is not None
    return _PROVENANCE_PREFIX + _url_key(dist.provenance_url)


def is_provenance_key(key: str) -> bool:
    return key.startswith(_PROVENANCE_PREFIX)


def names_its_body(key: str, sha256: str) -> bool:
    """Whether `key` is the sha256 upstream listed for the body cached under it, rather than a
    stand-in for one it did not list (a URL's hash; the key of the wheel pyproxy made it from)."""
    return key.removeprefix(_METADATA_PREFIX).lower() == sha256.lower()
