"""The proof of a zip (wheels, `.zip` sdists, eggs): see stores.proof."""

from __future__ import annotations

import bz2
import itertools
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Final

from pyproxy.stores.proof.reading import CHUNK, Unproven, read_at

__all__ = ["check_zip"]

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


def _end_of_directory(file: BinaryIO, size: int) -> tuple[int, int, int, int]:
    """(entries, directory size, directory offset as recorded, where the directory must end)."""
    tail_start = max(0, size - _EOCD.size - _MAX_COMMENT)
    tail = read_at(file, tail_start, size - tail_start)
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
    locator = read_at(file, locator_at, _ZIP64_LOCATOR.size) if locator_at >= 0 else b""
    if not locator.startswith(_ZIP64_LOCATOR_SIG):
        if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
            raise Unproven("a zip64 file without its zip64 end of central directory locator")
        return entries, cd_size, cd_offset, end
    # the record sits right before its locator (where zipfile, and so pip, looks for it too)
    record_at = locator_at - _ZIP64_EOCD.size
    record = read_at(file, record_at, _ZIP64_EOCD.size) if record_at >= 0 else b""
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


def check_zip(file: BinaryIO, size: int) -> None:
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
    local = read_at(file, at, _LOCAL.size)
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
        data = file.read(min(CHUNK, count))
        if not data:
            raise Unproven("a zip file cut short")
        count -= len(data)
        yield data


def _inflated(pieces: Iterator[bytes]) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    for piece in pieces:
        data = piece
        while data and not decompressor.eof:  # output bounded: a bomb costs no memory
            yield decompressor.decompress(data, CHUNK)
            data = decompressor.unconsumed_tail
    while not decompressor.eof and (out := decompressor.decompress(b"", CHUNK)):
        yield out


def _unpacked(pieces: Iterator[bytes], decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor
              ) -> Iterator[bytes]:
    for piece in pieces:
        if decompressor.eof:
            break
        yield decompressor.decompress(piece, CHUNK)
        while not decompressor.needs_input and not decompressor.eof:
            yield decompressor.decompress(b"", CHUNK)


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
