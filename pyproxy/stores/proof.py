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
cache.
"""

from __future__ import annotations

import bz2
import itertools
import json
import lzma
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
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
_ZERO_BLOCK: Final = bytes(_TAR_BLOCK)  # a tar's end-of-archive marker
# the member types whose header tarfile reads no data after, whatever their size field says
_TAR_NO_DATA: Final = frozenset({tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE,
                                 tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE})

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD_SIG: Final = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIG: Final = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIG: Final = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header
_CENTRAL_SIG: Final = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # local file header
_LOCAL_SIG: Final = b"PK\x03\x04"
# the compression methods zipfile (pip's reader) can decompress
_ZIP_METHODS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                 zipfile.ZIP_LZMA})
_METHOD_NAMES: Final = {0: "stored", 1: "shrink", 6: "implode", 8: "deflate", 9: "deflate64",
                        12: "bzip2", 14: "lzma", 93: "zstandard", 95: "xz", 98: "ppmd"}
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


def _zip64_values(extra: bytes, fields: tuple[int, ...], what: str) -> list[int]:
    """`fields` with each 0xFFFFFFFF replaced from the zip64 extra field, in order, as zipfile
    reads them."""
    values = list(fields)
    if 0xFFFFFFFF not in values:
        return values
    data = b""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 0x0001:
            data = extra[at + 4 : at + 4 + length]
            break
        at += 4 + length
    for index, value in enumerate(values):
        if value == 0xFFFFFFFF:
            if len(data) < 8:
                raise Unproven(f"{what}: a zip64 size or offset without its zip64 extra field")
            values[index] = int.from_bytes(data[:8], "little")
            data = data[8:]
    return values


def _check_zip(file: BinaryIO, size: int) -> None:
    entries, cd_size, cd_offset, cd_end = _end_of_directory(file, size)
    cd_start = cd_end - cd_size
    prefix = cd_start - cd_offset  # bytes before the archive (a self-extractor's stub)
    if cd_start < 0 or prefix < 0:
        raise Unproven("a zip central directory that does not fit the file")
    if entries == 0:
        raise Unproven("an empty zip file")
    file.seek(cd_start)
    for index in range(entries):
        header = file.read(_CENTRAL.size)
        if len(header) != _CENTRAL.size or not header.startswith(_CENTRAL_SIG):
            raise Unproven(f"zip central directory entry {index + 1} of {entries} is damaged")
        fields = _CENTRAL.unpack(header)
        name_length, extra_length, comment_length = fields[12:15]
        name = file.read(name_length)
        extra = file.read(extra_length)
        if len(name) + len(extra) + len(file.read(comment_length)) != (
            name_length + extra_length + comment_length
        ):
            raise Unproven(f"zip central directory entry {index + 1} of {entries} is cut short")
        if file.tell() > cd_end:
            raise Unproven("the zip central directory overruns its recorded size")
        member = _Member(index, entries, name, fields, extra)
        here = file.tell()
        _check_member(file, member, prefix, cd_start)  # reads elsewhere: come back after
        file.seek(here)
    if file.tell() != cd_end:
        raise Unproven("the zip central directory does not end where recorded")


class _Member:
    """A zip member as its central directory entry describes it."""

    def __init__(self, index: int, entries: int, name: bytes, fields: tuple[int, ...],
                 extra: bytes) -> None:
        self.name = name
        self.label = f"zip member {index + 1} of {entries} ({name.decode('utf-8', 'replace')!r})"
        self.flags, self.method, self.crc = fields[5], fields[6], fields[9]
        self.size, self.compressed, self.offset = _zip64_values(
            extra, (fields[11], fields[10], fields[18]), self.label)


def _check_member(file: BinaryIO, member: _Member, prefix: int, cd_start: int) -> None:
    """The member's local header agrees with its central directory entry, and its data
    decompresses to its recorded size and CRC-32 (what zipfile, so pip, checks on install)."""
    label = member.label
    if member.flags & 0x41:  # traditional or strong encryption: no installer has the password
        raise Unproven(f"{label} is encrypted")
    if member.flags & 0x20:
        raise Unproven(f"{label} is compressed patch data, which zipfile cannot read")
    if member.method not in _ZIP_METHODS:
        method = _METHOD_NAMES.get(member.method, "unknown")
        raise Unproven(f"{label} is compressed with method {member.method} ({method}), which"
                       " zipfile, and so pip, cannot read")
    at = prefix + member.offset
    local = _read_at(file, at, _LOCAL.size)
    if len(local) != _LOCAL.size or not local.startswith(_LOCAL_SIG):
        raise Unproven(f"{label} has no local file header")
    _sig, _version, _system, flags, method, _time, _date, crc, compressed, size, name_length, \
        extra_length = _LOCAL.unpack(local)
    if file.read(name_length) != member.name:  # zipfile refuses that too
        raise Unproven(f"the local file header of {label} names another file")
    if method != member.method:
        raise Unproven(f"the local file header of {label} gives compression method {method},"
                       f" its central directory entry {member.method}")
    if not flags & 0x08:  # else these are in a data descriptor after the data, not here
        # (a reader that streams the archive, not seeking its directory, goes by these)
        size, compressed = _zip64_values(file.read(extra_length), (size, compressed), label)
        if (crc, compressed, size) != (member.crc, member.compressed, member.size):
            raise Unproven(f"the local file header of {label} disagrees with its central"
                           " directory entry on its CRC-32 or sizes")
    start = at + _LOCAL.size + name_length + extra_length
    if start + member.compressed > cd_start:
        raise Unproven(f"{label} overruns the zip central directory")
    _check_member_data(file, member, start)


def _member_pieces(file: BinaryIO, start: int, count: int) -> Iterator[bytes]:
    file.seek(start)
    while count:
        data = file.read(min(_CHUNK, count))
        if not data:
            raise Unproven("a zip file cut short")
        count -= len(data)
        yield data


def _inflated(pieces: Iterator[bytes]) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    for piece in pieces:
        data = piece
        while data and not decompressor.eof:  # output bounded: a bomb costs no memory
            yield decompressor.decompress(data, _CHUNK)
            data = decompressor.unconsumed_tail
    while not decompressor.eof and (out := decompressor.decompress(b"", _CHUNK)):
        yield out


def _unpacked(pieces: Iterator[bytes], decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor
              ) -> Iterator[bytes]:
    for piece in pieces:
        if decompressor.eof:
            break
        yield decompressor.decompress(piece, _CHUNK)
        while not decompressor.needs_input and not decompressor.eof:
            yield decompressor.decompress(b"", _CHUNK)


def _lzma_member(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """zipfile's LZMA: a version, the size of the properties, LZMA1 properties, raw LZMA1."""
    head = b""
    for piece in pieces:
        head += piece
        if len(head) >= 4 and len(head) >= 4 + int.from_bytes(head[2:4], "little"):
            break
    if len(head) < 9 or head[2:4] != b"\x05\x00" or head[4] >= 9 * 5 * 5:
        raise lzma.LZMAError("no valid LZMA properties")
    lc, rest = head[4] % 9, head[4] // 9
    lzma1 = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": rest % 5, "pb": rest // 5,
             "dict_size": int.from_bytes(head[5:9], "little")}
    decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])
    yield from _unpacked(itertools.chain([head[9:]], pieces), decompressor)


def _check_member_data(file: BinaryIO, member: _Member, start: int) -> None:
    label = member.label
    pieces = _member_pieces(file, start, member.compressed)
    if member.method == zipfile.ZIP_STORED and member.compressed != member.size:
        raise Unproven(f"{label} is stored, but its sizes differ")
    outputs = {
        zipfile.ZIP_STORED: lambda: pieces,
        zipfile.ZIP_DEFLATED: lambda: _inflated(pieces),
        zipfile.ZIP_BZIP2: lambda: _unpacked(pieces, bz2.BZ2Decompressor()),
        zipfile.ZIP_LZMA: lambda: _lzma_member(pieces),
    }
    crc = produced = 0
    try:
        for out in outputs[member.method]():
            produced += len(out)
            if produced > member.size:
                raise Unproven(f"{label} decompresses to more than its {member.size} bytes")
            crc = zlib.crc32(out, crc)
    except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
        method = _METHOD_NAMES[member.method]
        raise Unproven(f"{label} has damaged {method} data: {exc}") from None
    if produced != member.size:
        raise Unproven(f"{label} decompresses to {produced} bytes, not its {member.size}")
    if crc != member.crc:
        raise Unproven(f"{label} fails its CRC-32 check: its data is damaged")


# ------------------------------------------------------------------------------------------ tar


def _check_tar_header(block: bytes) -> tarfile.TarInfo:
    if len(block) < _TAR_BLOCK:
        raise Unproven("shorter than one tar header")
    try:
        return tarfile.TarInfo.frombuf(block[:_TAR_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise Unproven(f"no valid tar header at the start: {exc}") from None


class _TarWalk:
    """Follows a tar fed to it in order, in pieces of any size, holding one block at most: each
    header must be sound and each member's data there, up to the end-of-archive marker (the
    zero block where tarfile stops reading; what follows it tarfile never reads)."""

    def __init__(self) -> None:
        self.ended = False
        self._block = bytearray()
        self._at = 0  # offset of the block being gathered
        self._skip = 0  # data bytes of the last member still to come
        self._member = ""
        self._data = 0  # the last member's data, in whole blocks
        self._extended = False  # an old GNU sparse header's extension blocks follow

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.ended:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                self._at += taken
                view = view[taken:]
                continue
            wanted = _TAR_BLOCK - len(self._block)
            self._block += view[:wanted]
            view = view[wanted:]
            if len(self._block) == _TAR_BLOCK:
                block = bytes(self._block)
                self._block.clear()
                self._header(block)
                self._at += _TAR_BLOCK

    def _header(self, block: bytes) -> None:
        if self._extended:
            self._extended = bool(block[504])
            if not self._extended:
                self._skip = self._data
            return
        if self._at and block == _ZERO_BLOCK:
            self.ended = True
            return
        if not self._at:
            info = _check_tar_header(block)
        else:
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise Unproven(f"a damaged tar header at byte {self._at}: {exc}") from None
        # as tarfile: every type but these has `size` bytes of data after its header
        self._data = 0 if info.type in _TAR_NO_DATA else -(-info.size // _TAR_BLOCK) * _TAR_BLOCK
        self._member = info.name
        if info.type == tarfile.GNUTYPE_SPARSE and block[482]:
            self._extended = True
        else:
            self._skip = self._data

    def finish(self) -> None:
        """At the end of the data: raise Unproven unless the archive ended."""
        if self.ended:
            return
        if not self._at:
            raise Unproven("shorter than one tar header")
        if self._skip:
            raise Unproven(f"a tar cut short: {self._skip} bytes of {self._member!r} missing")
        raise Unproven("a tar cut short: no end-of-archive marker after its last member")


def _check_tar(file: BinaryIO, size: int) -> None:
    file.seek(0)
    walk = _TarWalk()
    while not walk.ended and (data := file.read(_CHUNK)):
        walk.feed(data)
    walk.finish()


def _check_tar_gz(file: BinaryIO, size: int) -> None:
    head = _read_at(file, 0, 10)
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        raise Unproven("not gzip-compressed")
    if head[3] & 0xE0:
        raise Unproven("a gzip header with reserved flags set")
    file.seek(0)
    walk = _TarWalk()
    data = b""
    try:
        # member by member (gzip allows several, and zero bytes between them, as GzipFile
        # reads them): each to its end, where zlib checks its CRC-32 and length, until the tar
        # in them ends; what follows that member tarfile never reads
        while True:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header too
            while not decompressor.eof:
                if not data and not (data := file.read(_CHUNK)):
                    # some output may be pending inside zlib still
                    if not (out := decompressor.decompress(b"", _CHUNK)):
                        raise Unproven("a gzip stream cut short: no end-of-stream marker")
                    walk.feed(out)
                    continue
                walk.feed(decompressor.decompress(data, _CHUNK))  # bounded: a bomb costs no memory
                data = decompressor.unconsumed_tail
            if walk.ended:
                return
            data = decompressor.unused_data
            while not (data := data.lstrip(b"\x00")):
                if not (data := file.read(_CHUNK)):
                    walk.finish()  # the stream ends before the tar does: raises
    except zlib.error as exc:
        raise Unproven(f"a damaged gzip stream: {exc}") from None


def _check_tar_bz2(file: BinaryIO, size: int) -> None:
    if _read_at(file, 0, 3) != b"BZh":
        raise Unproven("not bzip2-compressed")
    file.seek(0)
    walk = _TarWalk()
    data = b""
    try:
        # stream by stream, each to its end (where bz2 checks its CRCs), until the tar ends
        while True:
            decompressor = bz2.BZ2Decompressor()
            while not decompressor.eof:
                if decompressor.needs_input and not data and not (data := file.read(_CHUNK)):
                    raise Unproven("a bzip2 stream cut short: no end-of-stream marker")
                walk.feed(decompressor.decompress(data, _CHUNK))
                data = b""
            if walk.ended:
                return
            if not (data := decompressor.unused_data) and not (data := file.read(_CHUNK)):
                walk.finish()  # raises
    except (OSError, EOFError) as exc:
        raise Unproven(f"a damaged bzip2 stream: {exc}") from None


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
