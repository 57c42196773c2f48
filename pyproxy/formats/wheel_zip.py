"""A wheel's `*.dist-info/METADATA`, read from byte ranges of the wheel: its tail (the end of
central directory record, zip64 too), its central directory, and the one member. No I/O here:
`metadata_reads` is a generator that yields the ranges it needs and is sent their bytes, so the
same rules serve a file on disk (`metadata_from`) and ranged requests to upstream.

The member is returned byte for byte as the wheel holds it (PEP 658 asks for exactly that),
checked against the CRC-32 and size the central directory records. What pip would refuse to
install is refused here too (NotProducible): no `.dist-info` directory or more than one, one
for another project, a METADATA member missing or listed twice; and so is anything a plain zip
reader may not get right (encryption, compression other than stored or deflate, a split zip).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Final

from pyproxy.model import NormalizedName, normalize

__all__ = [
    "MAX_METADATA_BYTES",
    "TAIL_BYTES",
    "MetadataReads",
    "NotProducible",
    "Read",
    "metadata_from",
    "metadata_reads",
]

# the first read: room for the end record after the longest comment, the zip64 records before
# it, and mostly the directory too
TAIL_BYTES: Final = 66 * 1024
MAX_METADATA_BYTES: Final = 10 * 1024 * 1024  # as an upload's core metadata
MAX_DIRECTORY_BYTES: Final = 64 * 1024 * 1024  # some 500,000 members
_MEMBER_SLACK: Final = 256  # a local header's extra field may be longer than the central one's

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG: Final = b"PK\x05\x06"
_MAX_COMMENT: Final = 0xFFFF
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIG: Final = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIG: Final = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIG: Final = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIG: Final = b"PK\x03\x04"
_ZIP64_EXTRA: Final = 0x0001
_STORED: Final = 0
_DEFLATED: Final = 8
_ENCRYPTED: Final = 0x1
_UTF8: Final = 0x800


class NotProducible(Exception):
    """The wheel's METADATA cannot be had from its bytes; the message says why."""


@dataclass(frozen=True, slots=True)
class Read:
    """`length` bytes of the wheel from byte `start`, to be sent back whole."""

    start: int
    length: int


MetadataReads = Generator[Read, bytes, bytes]


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int  # of its local header, as recorded (before any prefix)


class _Known:
    """The byte ranges read so far; a range inside one of them costs no read, one that ends
    inside one costs a read of the rest only."""

    def __init__(self) -> None:
        self._pieces: list[tuple[int, bytes]] = []

    def add(self, start: int, data: bytes) -> None:
        for index, (at, piece) in enumerate(self._pieces):
            if at == start + len(data):  # joins a piece read before (the tail, mostly)
                self._pieces[index] = (start, data + piece)
                return
        self._pieces.append((start, data))

    def get(self, start: int, length: int) -> bytes | None:
        for at, data in self._pieces:
            if at <= start and start + length <= at + len(data):
                return data[start - at : start - at + length]
        return None

    def missing(self, start: int, length: int) -> int:
        """How many bytes from `start` must be read before a known piece covers the rest."""
        end = start + length
        for at, data in self._pieces:
            if start < at <= end <= at + len(data):
                return at - start
        return length


def _need(known: _Known, start: int, length: int) -> MetadataReads:
    data = known.get(start, length)
    if data is None:
        count = known.missing(start, length)
        head = yield Read(start, count)
        if len(head) != count:
            raise NotProducible(f"bytes {start}-{start + count - 1} of the wheel could not be read")
        known.add(start, head)
        data = known.get(start, length)
        assert data is not None
    return data


def metadata_reads(total: int, tail: bytes, project: NormalizedName) -> MetadataReads:
    """The METADATA of `project`'s wheel of `total` bytes whose last bytes are `tail`
    (TAIL_BYTES of them, or the whole file if shorter); yields the further Reads it needs.
    Raises NotProducible."""
    known = _Known()
    known.add(total - len(tail), tail)
    if total < _EOCD.size:
        raise NotProducible("not a zip file: shorter than an end of central directory record")
    search = min(total, _EOCD.size + _MAX_COMMENT)
    window = tail
    at = window.rfind(_EOCD_SIG)
    if at < 0 and len(window) < search:  # a comment longer than the tail read: read them all
        window = yield from _need(known, total - search, search)
        at = window.rfind(_EOCD_SIG)
    if at < 0 or at + _EOCD.size > len(window):
        raise NotProducible("not a zip file: no end of central directory record")
    eocd_at = total - len(window) + at
    entries, cd_size, cd_offset, cd_end = yield from _directory_end(known, window, at, eocd_at)
    cd_start = cd_end - cd_size
    prefix = cd_start - cd_offset  # bytes before the archive (a self-extractor's stub)
    if cd_start < 0 or prefix < 0:
        raise NotProducible("a zip central directory that does not fit the file")
    if cd_size > MAX_DIRECTORY_BYTES:
        raise NotProducible(f"a zip central directory of {cd_size} bytes: too large to read")
    directory = yield from _need(known, cd_start, cd_size)
    member = _choose(_members(directory, entries), project)
    return (yield from _member_bytes(known, member, prefix, cd_start))


def _directory_end(
    known: _Known, window: bytes, at: int, eocd_at: int
) -> Generator[Read, bytes, tuple[int, int, int, int]]:
    """(entries, directory size, directory offset as recorded, where the directory ends)."""
    _sig, disk, cd_disk, _here, entries, cd_size, cd_offset, _comment = _EOCD.unpack_from(
        window, at
    )
    if disk or cd_disk:
        raise NotProducible("a zip file split over several disks")
    # as zipfile reads it: a zip64 locator right before the record means zip64
    locator_at = eocd_at - _ZIP64_LOCATOR.size
    locator = b""
    if locator_at >= 0:
        locator = yield from _need(known, locator_at, _ZIP64_LOCATOR.size)
    if not locator.startswith(_ZIP64_LOCATOR_SIG):
        if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
            raise NotProducible("a zip64 file without its zip64 end of central directory locator")
        return entries, cd_size, cd_offset, eocd_at
    record_at = locator_at - _ZIP64_EOCD.size
    if record_at < 0:
        raise NotProducible("a zip64 file without its zip64 end of central directory record")
    record = yield from _need(known, record_at, _ZIP64_EOCD.size)
    fields = _ZIP64_EOCD.unpack(record)
    if fields[0] != _ZIP64_EOCD_SIG:
        raise NotProducible("a zip64 file without its zip64 end of central directory record")
    if fields[4] or fields[5]:
        raise NotProducible("a zip file split over several disks")
    return fields[7], fields[8], fields[9], record_at


def _members(directory: bytes, entries: int) -> list[_Member]:
    members = []
    pos = 0
    for index in range(entries):
        if pos + _CENTRAL.size > len(directory):
            raise NotProducible(f"zip central directory entry {index + 1} of {entries} is cut off")
        fields = _CENTRAL.unpack_from(directory, pos)
        if fields[0] != _CENTRAL_SIG:
            raise NotProducible(f"zip central directory entry {index + 1} of {entries} is broken")
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        name_at = pos + _CENTRAL.size
        pos = name_at + name_len + extra_len + comment_len
        if pos > len(directory):
            raise NotProducible(f"zip central directory entry {index + 1} of {entries} is cut off")
        flags = fields[5]
        raw_name = directory[name_at : name_at + name_len]
        name = raw_name.decode("utf-8" if flags & _UTF8 else "cp437", "replace")
        extra = directory[name_at + name_len : name_at + name_len + extra_len]
        size, compressed, offset = _zip64_values(extra, fields[11], fields[10], fields[18])
        members.append(_Member(name, flags, fields[6], fields[9], compressed, size, offset))
    return members


def _zip64_values(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """The sizes and offset, from the zip64 extra field where the entry records 0xFFFFFFFF."""
    if 0xFFFFFFFF not in (size, compressed, offset):
        return size, compressed, offset
    pos = 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if kind != _ZIP64_EXTRA:
            continue
        values = [size, compressed, offset]
        at = 0
        for index, value in enumerate(values):
            if value == 0xFFFFFFFF:
                if at + 8 > len(body):
                    raise NotProducible("a zip64 extra field that is cut short")
                values[index] = struct.unpack_from("<Q", body, at)[0]
                at += 8
        return values[0], values[1], values[2]
    raise NotProducible("a zip64 entry without its zip64 extra field")


def _choose(members: list[_Member], project: NormalizedName) -> _Member:
    """The METADATA member of the wheel's one `.dist-info` directory, as pip finds it."""
    dist_info = sorted(
        {
            top
            for member in members
            if "/" in member.name
            and (top := member.name.split("/", 1)[0]).endswith(".dist-info")
        }
    )
    if not dist_info:
        raise NotProducible("the wheel has no .dist-info directory")
    if len(dist_info) > 1:
        raise NotProducible(f"the wheel has more than one .dist-info directory: {dist_info}")
    if normalize(dist_info[0].split("-", 1)[0].removesuffix(".dist-info")) != project:
        raise NotProducible(f"the wheel's {dist_info[0]} is not of project {project!r}")
    wanted = f"{dist_info[0]}/METADATA"
    found = [member for member in members if member.name == wanted]
    if not found:
        raise NotProducible(f"the wheel has no {wanted}")
    if len(found) > 1:
        raise NotProducible(f"the wheel lists {wanted} {len(found)} times")
    member = found[0]
    if member.flags & _ENCRYPTED:
        raise NotProducible(f"the wheel's {wanted} is encrypted")
    if member.method not in (_STORED, _DEFLATED):
        raise NotProducible(f"the wheel's {wanted} uses compression method {member.method}")
    if member.size > MAX_METADATA_BYTES:
        raise NotProducible(f"the wheel's {wanted} has {member.size} bytes: too large")
    return member


def _member_bytes(known: _Known, member: _Member, prefix: int, cd_start: int) -> MetadataReads:
    start = prefix + member.offset
    room = cd_start - start  # a member lies before the central directory
    if start < 0 or room < _LOCAL.size:
        raise NotProducible(f"{member.name} starts outside the zip's members")
    guess = _LOCAL.size + len(member.name.encode()) + member.compressed + _MEMBER_SLACK
    head = yield from _need(known, start, min(guess, room))
    fields = _LOCAL.unpack_from(head)
    if fields[0] != _LOCAL_SIG:
        raise NotProducible(f"{member.name} has no local file header")
    data_at = start + _LOCAL.size + fields[10] + fields[11]
    if data_at + member.compressed > cd_start:
        raise NotProducible(f"{member.name} overruns the zip's central directory")
    local_name = head[_LOCAL.size : _LOCAL.size + fields[10]]
    if local_name and local_name.decode(
        "utf-8" if fields[3] & _UTF8 else "cp437", "replace"
    ) != member.name:
        raise NotProducible(f"{member.name} has another name in its local file header")
    data = yield from _need(known, data_at, member.compressed)
    return _inflate(member, data)


def _inflate(member: _Member, data: bytes) -> bytes:
    if member.method == _STORED:
        body = data
    else:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(data, member.size + 1)
        except zlib.error as exc:
            raise NotProducible(f"{member.name} does not inflate: {exc}") from None
    if len(body) != member.size:
        raise NotProducible(f"{member.name} has {len(body)} bytes, not the {member.size} recorded")
    if zlib.crc32(body) != member.crc:
        raise NotProducible(f"{member.name} does not match its recorded CRC-32")
    return body


def metadata_from(
    read_at: Callable[[int, int], bytes], total: int, project: NormalizedName
) -> bytes:
    """The METADATA of a wheel of `total` bytes that `read_at(start, length)` reads (blocking,
    e.g. os.pread on a cached file). Raises NotProducible."""
    tail_length = min(total, TAIL_BYTES)
    reads = metadata_reads(total, read_at(total - tail_length, tail_length), project)
    try:
        wanted = next(reads)
        while True:
            wanted = reads.send(read_at(wanted.start, wanted.length))
    except StopIteration as done:
        result: bytes = done.value
        return result
