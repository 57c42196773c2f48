"""Is a body the kind of file its name says? The proof for files upstream lists without a sha256.

Without a hash, anything that came back with a 200 (an error page, a login form, a redirect's
target) would be cached as the file for good. So such a body must at least be a well-formed
archive of its kind: a zip whose central directory parses member by member (wheels, `.zip`
sdists, eggs), a tar whose first header is sound under its compression (sdists), core
metadata with a Metadata-Version and a Name (`.metadata`), or a PEP 740 provenance object
(`.provenance`). A zip's directory sits at its end, which also shows the download is complete.

Every check reads an open file in bounded pieces; nothing reads the whole file into memory.
Pure: no I/O beyond the file object it is given, no knowledge of the cache.
"""

from __future__ import annotations

import bz2
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Callable
from typing import BinaryIO, Final

from packaging.metadata import parse_email
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

__all__ = [
    "INTEGRITY_TYPE", "Unproven", "check_any_archive", "check_file", "check_kind", "kind_of",
]

INTEGRITY_TYPE: Final = "application/vnd.pypi.integrity.v1+json"  # a provenance object's
MAX_METADATA_BYTES: Final = 10 * 1024 * 1024  # as an upload's core metadata
_TAR_BLOCK: Final = 512
_CHUNK: Final = 64 * 1024
_HEAD_INPUT: Final = 1024 * 1024  # compressed bytes read at most to reach the first tar header

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD_SIG: Final = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIG: Final = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIG: Final = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header
_CENTRAL_SIG: Final = b"PK\x01\x02"
_LOCAL_SIG: Final = b"PK\x03\x04"
_MAX_COMMENT: Final = 0xFFFF
_METADATA_VERSION = re.compile(r"\d+\.\d+")

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


class Unproven(Exception):
    """The body is not a well-formed file of its kind; the message says what is wrong."""


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
        _check_metadata_names(filename.removesuffix(".metadata"), file)


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


# ------------------------------------------------------------------------------------------ zip


def _read_at(file: BinaryIO, offset: int, count: int) -> bytes:
    file.seek(offset)
    return file.read(count)


def _end_of_directory(file: BinaryIO, size: int) -> tuple[int, int, int, int]:
    """(entries, directory size, directory offset as recorded, where the directory must end)."""
    tail_start = max(0, size - _EOCD.size - _MAX_COMMENT)
    tail = _read_at(file, tail_start, size - tail_start)
    at = tail.rfind(_EOCD_SIG)
    if at < 0 or at + _EOCD.size > len(tail):
        raise Unproven("not a zip file: no end of central directory record")
    _sig, disk, cd_disk, _here, entries, cd_size, cd_offset, _comment = _EOCD.unpack_from(tail, at)
    end = tail_start + at
    if disk or cd_disk:
        raise Unproven("a zip file split over several disks")
    # as zipfile reads it: a zip64 locator right before the record means zip64, whatever the
    # record's own fields say
    locator_at = end - _ZIP64_LOCATOR.size
    locator = _read_at(file, locator_at, _ZIP64_LOCATOR.size) if locator_at >= 0 else b""
    if not locator.startswith(_ZIP64_LOCATOR_SIG):
        if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
            raise Unproven("a zip64 file without its zip64 end of central directory locator")
        return entries, cd_size, cd_offset, end
    # the record sits right before its locator (where zipfile, and so pip, looks for it too)
    record_at = locator_at - _ZIP64_EOCD.size
    record = _read_at(file, record_at, _ZIP64_EOCD.size) if record_at >= 0 else b""
    if len(record) != _ZIP64_EOCD.size or not record.startswith(_ZIP64_EOCD_SIG):
        raise Unproven("a zip64 file without its zip64 end of central directory record")
    fields = _ZIP64_EOCD.unpack(record)
    if fields[4] or fields[5]:
        raise Unproven("a zip file split over several disks")
    return fields[7], fields[8], fields[9], record_at


def _check_zip(file: BinaryIO, size: int) -> None:
    entries, cd_size, cd_offset, cd_end = _end_of_directory(file, size)
    cd_start = cd_end - cd_size
    prefix = cd_start - cd_offset  # bytes before the archive (a self-extractor's stub)
    if cd_start < 0 or prefix < 0:
        raise Unproven("a zip central directory that does not fit the file")
    if entries == 0:
        raise Unproven("an empty zip file")
    file.seek(cd_start)
    first_member: int | None = None
    for index in range(entries):
        header = file.read(_CENTRAL.size)
        if len(header) != _CENTRAL.size or not header.startswith(_CENTRAL_SIG):
            raise Unproven(f"zip central directory entry {index + 1} of {entries} is damaged")
        fields = _CENTRAL.unpack(header)
        variable = fields[12] + fields[13] + fields[14]  # name, extra field, comment
        offset = fields[18]  # of the member's local header
        if len(file.read(variable)) != variable:
            raise Unproven(f"zip central directory entry {index + 1} of {entries} is cut short")
        if offset != 0xFFFFFFFF:  # else the offset is in a zip64 extra field
            if prefix + offset >= cd_start:
                raise Unproven(f"zip member {index + 1} starts after the central directory")
            first_member = offset if first_member is None else min(first_member, offset)
        if file.tell() > cd_end:
            raise Unproven("the zip central directory overruns its recorded size")
    if file.tell() != cd_end:
        raise Unproven("the zip central directory does not end where recorded")
    if first_member is not None and _read_at(file, prefix + first_member, 4) != _LOCAL_SIG:
        raise Unproven("the first zip member has no local file header")


# ------------------------------------------------------------------------------------------ tar


def _check_tar_header(block: bytes) -> None:
    if len(block) < _TAR_BLOCK:
        raise Unproven("shorter than one tar header")
    try:
        tarfile.TarInfo.frombuf(block[:_TAR_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise Unproven(f"no valid tar header at the start: {exc}") from None


def _check_tar(file: BinaryIO, size: int) -> None:
    _check_tar_header(_read_at(file, 0, _TAR_BLOCK))


def _check_tar_gz(file: BinaryIO, size: int) -> None:
    head = _read_at(file, 0, 10)
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        raise Unproven("not gzip-compressed")
    if head[3] & 0xE0:
        raise Unproven("a gzip header with reserved flags set")
    file.seek(0)
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # parses the gzip header
    out = b""
    data = b""
    consumed = 0
    try:
        while len(out) < _TAR_BLOCK and not decompressor.eof:
            if not data:
                if consumed >= _HEAD_INPUT or not (data := file.read(_CHUNK)):
                    break
                consumed += len(data)
            out += decompressor.decompress(data, _TAR_BLOCK - len(out))
            data = decompressor.unconsumed_tail
    except zlib.error as exc:
        raise Unproven(f"a damaged gzip stream: {exc}") from None
    _check_tar_header(out)


def _check_tar_bz2(file: BinaryIO, size: int) -> None:
    if _read_at(file, 0, 3) != b"BZh":
        raise Unproven("not bzip2-compressed")
    file.seek(0)
    decompressor = bz2.BZ2Decompressor()
    out = b""
    consumed = 0
    try:
        while len(out) < _TAR_BLOCK and not decompressor.eof:
            data = b""
            if decompressor.needs_input:
                if consumed >= _HEAD_INPUT or not (data := file.read(_CHUNK)):
                    break
                consumed += len(data)
            out += decompressor.decompress(data, _TAR_BLOCK - len(out))
    except (OSError, EOFError) as exc:
        raise Unproven(f"a damaged bzip2 stream: {exc}") from None
    _check_tar_header(out)


# ------------------------------------------------------------------------------------- metadata


def _check_metadata(file: BinaryIO, size: int) -> None:
    file.seek(0)
    data = file.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise Unproven(f"core metadata larger than {MAX_METADATA_BYTES // (1024 * 1024)} MiB")
    try:
        raw, _unparsed = parse_email(data)
    except ValueError as exc:
        raise Unproven(f"not core metadata: {exc}") from None
    version = raw.get("metadata_version")
    if not version or not _METADATA_VERSION.fullmatch(version):
        raise Unproven("not core metadata: no Metadata-Version")
    if not raw.get("name"):
        raise Unproven("not core metadata: no Name")


def _check_metadata_names(wheel: str, file: BinaryIO) -> None:
    """pip and uv refuse metadata of another project or version than the wheel's: kept, such a
    body would stop every install of it until it is removed by hand."""
    try:
        name, version, _build, _tags = parse_wheel_filename(wheel)
    except (InvalidWheelFilename, InvalidVersion):
        return  # not a wheel's name: nothing to compare with
    file.seek(0)
    raw, _unparsed = parse_email(file.read(MAX_METADATA_BYTES))
    said_name, said_version = str(raw.get("name", "")), str(raw.get("version", ""))
    if canonicalize_name(said_name) != name:
        raise Unproven(f"the core metadata of project {said_name!r}, not of {name!r}")
    try:
        same = Version(said_version) == version
    except InvalidVersion:
        same = False
    if not same:
        raise Unproven(f"the core metadata of version {said_version!r}, not of {str(version)!r}")


MAX_PROVENANCE_BYTES: Final = 1024 * 1024  # a few attestations are some kilobytes


def _check_provenance(file: BinaryIO, size: int) -> None:
    """A PEP 740 provenance object: JSON, version 1, with a list of attestation bundles."""
    file.seek(0)
    data = file.read(MAX_PROVENANCE_BYTES + 1)
    if len(data) > MAX_PROVENANCE_BYTES:
        raise Unproven(f"a provenance object larger than {MAX_PROVENANCE_BYTES // 1024} KiB")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise Unproven(f"not a provenance object: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("version") != 1:
        raise Unproven("not a provenance object: no \"version\": 1")
    if not isinstance(document.get("attestation_bundles"), list):
        raise Unproven("not a provenance object: no \"attestation_bundles\" list")


_CHECKS: Final[dict[str, Callable[[BinaryIO, int], None]]] = {
    "zip": _check_zip,
    "tar.gz": _check_tar_gz,
    "tar.bz2": _check_tar_bz2,
    "tar": _check_tar,
    "metadata": _check_metadata,
    "provenance": _check_provenance,
}
