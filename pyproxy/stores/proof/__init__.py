"""Is a body the kind of file its name says? The proof for files upstream lists without a sha256.

Without a hash, anything that came back with a 200 (an error page, a login form, a redirect's
target, a body cut short or damaged on the way) would be cached as the file for good. So such a
body must be a whole, well-formed archive of its kind, as an installer will read it:

- a zip (wheels, `.zip` sdists, eggs): its central directory parses member by member; each
  member's local header agrees with its directory entry (name, method, and CRC-32 and sizes
  unless they are in a data descriptor); each member's data, stored, deflate, bzip2 or LZMA
  (what zipfile, so pip, reads), decompresses to its recorded size and CRC-32;
- a tar, plain or under gzip or bzip2 (sdists): every compressed stream the tar is in is read to
  its end, where zlib or bz2 checks its CRC and length; every header is sound and every
  member's data there, up to the end-of-archive marker. What follows the stream where the tar
  ends tarfile never reads, so neither does the check (nor does it refuse it);
- core metadata with a Metadata-Version and a Name (`.metadata`), or a PEP 740 provenance
  object (`.provenance`).

So a check reads the whole file once (and decompresses it): linear in its size, run in a thread
once per download without a hash and by `pyproxy cache verify`. It reads in bounded pieces and
decompresses with bounded output, so memory does not grow with the file's size (nor with what a
member decompresses to). Pure: no I/O beyond the file object it is given, no knowledge of the
cache. One module per kind: zips, tars, documents (core metadata, provenance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Final

from pyproxy.stores.proof.documents import (
    MAX_METADATA_BYTES,
    MAX_PROVENANCE_BYTES,
    check_metadata,
    check_metadata_names,
    check_provenance,
)
from pyproxy.stores.proof.reading import Unproven
from pyproxy.stores.proof.tars import check_tar, check_tar_bz2, check_tar_gz
from pyproxy.stores.proof.zips import check_zip

__all__ = [
    "INTEGRITY_TYPE", "MAX_METADATA_BYTES", "MAX_PROVENANCE_BYTES", "Unproven",
    "check_any_archive", "check_file", "check_kind", "kind_of",
]

INTEGRITY_TYPE: Final = "application/vnd.pypi.integrity.v1+json"  # a provenance object's

# by the end of the name, as installers tell an archive's format
_KINDS: Final = (
    (".whl", "zip"),
    (".zip", "zip"),
    (".egg", "zip"),
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar.bz2", "tar.bz2"),
    (".tbz", "tar.bz2"),
    (".tar", "tar"),
    (".metadata", "metadata"),
    (".provenance", "provenance"),  # PEP 740's provenance object, as pyproxy names it
)


def kind_of(filename: str) -> str | None:
    """"zip", "tar.gz", "tar.bz2", "tar" or "metadata"; None for kinds with no check."""
    lowered = filename.lower()
    for suffix, kind in _KINDS:
        if lowered.endswith(suffix):
            return kind
    return None


def check_file(filename: str, file: BinaryIO, size: int) -> None:
    """Raise Unproven unless `file` (`size` bytes) is a well-formed file of `filename`'s kind;
    a wheel's `.metadata` must also name the wheel's project and version."""
    kind = kind_of(filename)
    if kind is None:
        raise Unproven(f"there is no check for a file like {filename!r} without a sha256")
    check_kind(kind, file, size)
    if kind == "metadata":
        check_metadata_names(filename.removesuffix(".metadata"), file)


def check_kind(kind: str, file: BinaryIO, size: int) -> None:
    _CHECKS[kind](file, size)


def check_any_archive(file: BinaryIO, size: int) -> None:
    """For a body whose name is not known: well-formed as any of the archive kinds."""
    problems = []
    for kind in ("zip", "tar.gz", "tar.bz2", "tar"):
        try:
            check_kind(kind, file, size)
            return
        except Unproven as exc:
            problems.append(f"{kind}: {exc}")
    raise Unproven("not an archive of any kind (" + "; ".join(problems) + ")")


_CHECKS: Final[dict[str, Callable[[BinaryIO, int], None]]] = {
    "zip": check_zip,
    "tar.gz": check_tar_gz,
    "tar.bz2": check_tar_bz2,
    "tar": check_tar,
    "metadata": check_metadata,
    "provenance": check_provenance,
}
