"""`pyproxy cache verify`: re-hash every cached file, re-check the kind of those cached without
a listed sha256, and remove the bad ones, on any ops.cacheops `Cache` (a data directory's, or a
cluster's shared one, whose objects are read from the bucket as they stream); and check the
private files' bodies (`verify_private`), which are never removed: the only copy of the
company's packages is reported, and on a cluster put back from this node's local copy when it
has a good one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from pyproxy.model import LocalFile, NotFound, Unavailable, normalize
from pyproxy.ops.cacheops import Cache, is_metadata
from pyproxy.stores import proof
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.blobkeys import is_provenance_key, names_its_body
from pyproxy.stores.interfaces import PrivateStoreAPI
from pyproxy.stores.private_files import NotLocal
from pyproxy.stores.private_schema import FileRecord

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


# ---------------------------------------------------------------------------- private bodies


@dataclass(frozen=True)
class DamagedPrivate:
    project: str  # as displayed
    filename: str
    reason: str
    repaired: bool  # put back from this node's local copy


@dataclass
class PrivateVerifyResult:
    checked: int = 0
    bytes: int = 0
    damaged: list[DamagedPrivate] = field(default_factory=list)
    unchecked: list[tuple[str, str]] = field(default_factory=list)  # (filename, why)


def verify_private(store: PrivateStoreAPI, progress: Callable[[FileRecord], None] | None = None
                   ) -> PrivateVerifyResult:
    """Re-hash every private file's body (and its .metadata and provenance), in the bucket on
    a cluster. Nothing is removed: a bad one is reported and, where this node holds a good
    local copy of it, put back from that."""
    result = PrivateVerifyResult()
    for record in store.file_records():
        try:
            for what, sha256, size in _bodies(store, record):
                problem = (store.files.problem(sha256, size) if sha256 is not None
                           else "missing from the data directory")
                if problem is not None and not store.has_file(
                    normalize(record.display_name), record.filename
                ):
                    break  # removed meanwhile (`pyproxy remove`), its bodies with it
                if problem is not None:
                    repaired = sha256 is not None and store.files.heal(sha256, size)
                    reason = problem if what == "file" else f"its {what}: {problem}"
                    result.damaged.append(
                        DamagedPrivate(record.display_name, record.filename, reason, repaired)
                    )
                result.bytes += size or 0
        except Unavailable as exc:  # the bucket not answering: the others are still tried
            result.unchecked.append((record.filename, str(exc)))
        result.checked += 1
        if progress:
            progress(record)
    return result


def _bodies(store: PrivateStoreAPI, record: FileRecord
            ) -> list[tuple[str, str | None, int | None]]:
    """(what, sha256, size) of the file's body and of those beside it; sha256 None: the
    record names a body this store cannot find (one box: not on disk)."""
    bodies: list[tuple[str, str | None, int | None]] = [("file", record.sha256, record.size)]
    project = normalize(record.display_name)
    for what, open_body in ((".metadata", store.open_metadata),
                            ("provenance", store.open_provenance)):
        try:
            found: LocalFile = open_body(project, record.filename)
        except NotLocal as elsewhere:  # a cluster node without a copy: the record names it
            bodies.append((what, elsewhere.sha256, None))
        except NotFound:  # it has none, or the file was removed meanwhile
            continue
        except FileNotFoundError:
            bodies.append((what, None, None))
        else:  # its size is not recorded (this may be a local copy's): the sha256 decides
            bodies.append((what, found.sha256, None))
    return bodies
