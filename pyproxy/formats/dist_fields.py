"""The fields of one distribution file in an upstream page, HTML or JSON alike: its file name,
digests, provenance link, core-metadata attribute and the project's status."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pyproxy.formats.answers import UpstreamFormatError
from pyproxy.formats.links import Links, filename_from_url
from pyproxy.model import ProjectStatus

__all__ = [
    "FRAGMENT_HASH_ALGORITHMS",
    "checked_digest",
    "core_metadata_from_attribute",
    "hashes_from_fragment",
    "is_safe_filename",
    "provenance_url",
    "safe_filename_from_url",
    "status_of",
]

# Hash names a URL fragment may carry (pip's and uv's sets plus hashlib's common names); any other
# fragment (`#egg=`, `#subdirectory=`) says nothing about the file's bytes and is ignored.
FRAGMENT_HASH_ALGORITHMS = frozenset(
    {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b_256", "sha3_256", "sha3_512"}
)

_HEX = re.compile(r"[0-9a-f]+")


def safe_filename_from_url(url: str) -> str:
    """The last path segment, percent-decoded, as pip and uv take it; "" when unusable."""
    filename = filename_from_url(url)
    return filename if is_safe_filename(filename) else ""


def is_safe_filename(filename: str) -> bool:
    # the filename becomes a path on pyproxy's own URL and in its cache: no separators, no dots-only
    return (
        bool(filename)
        and filename not in (".", "..")
        and "/" not in filename
        and "\\" not in filename
        and filename.isprintable()
    )


def checked_digest(algorithm: str, value: str, filename: str) -> tuple[str, str]:
    algorithm, value = algorithm.strip().lower(), value.strip().lower()
    # a digest nobody can match must not silently become "no hash" (an unverified download)
    if not algorithm or not _HEX.fullmatch(value):
        raise UpstreamFormatError(f"{filename}: {algorithm or 'hash'} digest is not hex: {value!r}")
    return algorithm, value


def hashes_from_fragment(fragment: str, filename: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for part in fragment.split("&"):  # pip also reads `#sha256=...&egg=...`
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() in FRAGMENT_HASH_ALGORITHMS:
            algorithm, hexdigest = checked_digest(key, value, filename)
            hashes.setdefault(algorithm, hexdigest)
    return hashes


def provenance_url(links: Links, value: str | None) -> str | None:
    """PEP 740's `provenance` / `data-provenance`: the provenance object's absolute URL; an
    empty or non-http(s) value is dropped (it is optional and only fetched on request)."""
    if not value or not value.strip():
        return None
    resolved = links.resolve(value)
    return None if resolved is None else resolved[0]


def core_metadata_from_attribute(value: str | None, filename: str) -> Mapping[str, str] | bool:
    """PEP 658/714 HTML attribute value -> DistFile.core_metadata."""
    if value is None:
        return False
    value = value.strip()
    # "false" is not in the spec; its author plainly means "no metadata", and advertising a
    # .metadata that upstream does not serve would break pip (which reads any value as "offered")
    if value.lower() == "false":
        return False
    algorithm, sep, digest = value.partition("=")
    if sep:
        return dict([checked_digest(algorithm, digest, f"{filename} metadata")])
    # "true", "" or anything else: offered, hash unknown (what pip and uv make of it too)
    return True


def status_of(status: str | None, reason: str | None) -> ProjectStatus:
    # an unknown status is kept verbatim so it is forwarded; only "quarantined" changes behaviour
    status = (status or "").strip().lower() or "active"
    return ProjectStatus(status=status, reason=reason or None)
