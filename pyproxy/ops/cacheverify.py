"""`pyproxy cache verify`: re-hash every cached file, re-check the kind of those cached without
a listed sha256, and remove the bad ones, on any ops.cacheops `Cache` (a data directory's, or a
cluster's shared one, whose objects are read from the bucket as they stream)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from pyproxy.ops.cacheops import Cache, is_metadata
from pyproxy.stores import proof
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.blobkeys import is_provenance_key, names_its_body

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Damaged:
    entry: BlobEntry
    reason: str


@dataclass
class VerifyResult:
    checked: int = 0
    bytes: int = 0
    damaged: list[Damaged] = field(default_factory=list)


def _sha256_of(body: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := body.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _hash_in_key(entry: BlobEntry) -> bool:
    """Whether upstream listed the body's sha256 (the key then names it). Other entries (keyed
    by their URL, or a `.metadata` by its file's sha256) were cached on proof of their kind."""
    return names_its_body(entry.key, entry.sha256)


def _kind_problem(entry: BlobEntry, body: BinaryIO, label: str | None) -> str | None:
    """Why a body cached without a listed sha256 is not a well-formed file of its kind."""
    filename = label.rpartition("/")[2] if label else None
    try:
        if filename is not None:
            proof.check_file(filename, body, entry.size)
        elif is_metadata(entry):
            proof.check_kind("metadata", body, entry.size)
        elif is_provenance_key(entry.key):
            proof.check_kind("provenance", body, entry.size)
        else:  # its page is no longer cached: any archive will do
            proof.check_any_archive(body, entry.size)
    except proof.Unproven as exc:
        return f"upstream lists no sha256, and it is not a well-formed file of its kind: {exc}"
    return None


def _problem(cache: Cache, entry: BlobEntry, label: str | None, unproven: bool
             ) -> tuple[str | None, int]:
    """(why the body is damaged or None, its size); FileNotFoundError if it is gone."""
    with cache.open_body(entry) as body:
        actual, size = _sha256_of(body)
        if size != entry.size:
            return f"{size} bytes {cache.where}, {entry.size} when cached", size
        if actual != entry.sha256:
            return f"sha256 {actual}, {entry.sha256} when cached", size
        return (_kind_problem(entry, body, label) if unproven else None), size


def verify(cache: Cache, progress: Callable[[BlobEntry], None] | None = None) -> VerifyResult:
    """Re-hash every cached file, and re-check the kind of those cached without a listed sha256
    (named from the cached pages); remove (and report) the bad ones."""
    result = VerifyResult()
    entries = cache.entries()
    unproven = {entry.key for entry in entries if not _hash_in_key(entry)}
    names = cache.describe(unproven)
    for entry in entries:
        try:
            reason, size = _problem(cache, entry, names.get(entry.key), entry.key in unproven)
        except FileNotFoundError:
            if not cache.lost(entry):
                if progress:
                    progress(entry)
                continue  # evicted or replaced by the server meanwhile
            reason, size = "listed in the cache, but its body is gone", 0
        if reason is not None:
            cache.delete(entry.key)
            result.damaged.append(Damaged(entry, reason))
        result.checked += 1
        result.bytes += size
        if progress:
            progress(entry)
    return result
