"""formats/wheel_zip.py: a wheel's METADATA from byte ranges, checked against zipfile's view."""

from __future__ import annotations

import contextlib
import io
import random
import struct
import zipfile
from pathlib import Path

import pytest

from pyproxy.formats import wheel_zip
from pyproxy.formats.wheel_zip import NotProducible, metadata_from, metadata_reads
from pyproxy.model import normalize
from tests.dists import core_metadata, make_wheel

PROJECT = normalize("demo-pkg")
META = core_metadata("demo-pkg", "1.0", requires_dist=["attrs>=22"], summary="Demo ü")
INFO = "demo_pkg-1.0.dist-info"


def _read(body: bytes, *, tail: int = wheel_zip.TAIL_BYTES) -> tuple[bytes, list[wheel_zip.Read]]:
    """METADATA as the ranged path reads it, with a first read of `tail` bytes; and the reads."""
    first = body[max(0, len(body) - tail):]
    reads = metadata_reads(len(body), first, PROJECT)
    asked: list[wheel_zip.Read] = []
    try:
        wanted = next(reads)
        while True:
            asked.append(wanted)
            assert wanted.start >= 0 and wanted.start + wanted.length <= len(body), wanted
            wanted = reads.send(body[wanted.start : wanted.start + wanted.length])
    except StopIteration as done:
        return done.value, asked


def _from_bytes(body: bytes) -> bytes:
    return metadata_from(lambda start, n: body[start : start + n], len(body), PROJECT)


def _zip(members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED,
         comment: bytes = b"", stream: bool = False) -> bytes:
    """A zip of `members` in order; `stream`: written unseekably, so with data descriptors."""
    buffer = io.BytesIO()

    class Unseekable:
        def write(self, data: bytes) -> int:
            return buffer.write(data)

        def flush(self) -> None:
            pass

    with zipfile.ZipFile(Unseekable() if stream else buffer, "w", method) as archive:  # type: ignore[arg-type]
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=method)
        archive.comment = comment
    return buffer.getvalue()


def _wheel_members(*extra: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    return [("demo_pkg/__init__.py", b"VERSION = '1.0'\n"), *extra, (f"{INFO}/METADATA", META),
            (f"{INFO}/WHEEL", b"Wheel-Version: 1.0\n"), (f"{INFO}/RECORD", b"")]


def _zip64(body: bytes) -> bytes:
    """`body` with its central directory rewritten the zip64 way: every entry's sizes and offset
    in a zip64 extra field, and a zip64 end record and locator before the end record."""
    archive = zipfile.ZipFile(io.BytesIO(body))
    infos = archive.infolist()
    cd_start = archive.start_dir
    central = b""
    for info in infos:
        name = info.filename.encode()
        extra = struct.pack("<2H3Q", 1, 24, info.file_size, info.compress_size, info.header_offset)
        y, mo, d, h, mi, s = info.date_time
        central += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 45, 3, 45, 0, info.flag_bits, info.compress_type,
            (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d, info.CRC,
            0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, info.external_attr,
            0xFFFFFFFF,
        ) + name + extra
    record_at = cd_start + len(central)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, len(infos), len(infos),
                         len(central), cd_start)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body[:cd_start] + central + record + locator + end


def test_a_real_wheel_byte_exact_in_one_read(tmp_path: Path) -> None:
    body = make_wheel(tmp_path, "demo-pkg", "1.0", metadata=META).read_bytes()
    data, reads = _read(body)
    assert data == META
    assert reads == []  # a small wheel is all tail
    assert _from_bytes(body) == META


def test_a_big_wheel_takes_one_read_for_the_member() -> None:
    # METADATA first, then 1 MB of incompressible modules: the tail holds only the directory
    noise = random.Random(1).randbytes(1024 * 1024)
    members = [(f"{INFO}/METADATA", META), ("demo_pkg/blob.bin", noise), (f"{INFO}/RECORD", b"")]
    body = _zip(members)
    data, reads = _read(body)
    assert data == META
    assert len(reads) == 1 and reads[0].start == 0 and reads[0].length < 4096


def test_a_directory_larger_than_the_tail_read() -> None:
    modules = [(f"demo_pkg/module_{n:05d}_with_a_long_name.py", b"") for n in range(2000)]
    body = _zip(_wheel_members(*modules))
    data, reads = _read(body)
    assert data == META
    # the rest of the directory, then the member (just before it: RECORD comes after METADATA)
    directory, member = reads
    assert directory.start + directory.length == len(body) - wheel_zip.TAIL_BYTES
    assert member.length < 1000
    assert _read(body, tail=100)[0] == META  # also when even the end record is not all there


def test_zip64_end_records_and_extra_fields() -> None:
    body = _zip64(_zip(_wheel_members()))
    with zipfile.ZipFile(io.BytesIO(body)) as archive:  # zipfile agrees it is a sound zip64
        assert archive.read(f"{INFO}/METADATA") == META
    assert _read(body)[0] == META
    assert _read(body, tail=30)[0] == META  # locator and zip64 record read separately
    assert _from_bytes(body) == META


def test_data_descriptors_and_stored_members() -> None:
    streamed = _zip(_wheel_members(), stream=True)
    with zipfile.ZipFile(io.BytesIO(streamed)) as archive:
        assert archive.getinfo(f"{INFO}/METADATA").flag_bits & 0x08  # sizes after the data
    assert _read(streamed)[0] == META
    assert _read(_zip(_wheel_members(), method=zipfile.ZIP_STORED))[0] == META


def test_a_comment_after_the_end_record() -> None:
    short = _zip(_wheel_members(), comment=b"built by hand")
    assert _read(short)[0] == META
    longest = _zip(_wheel_members(), comment=b"PK" + b"c" * 65533)  # the longest a zip allows
    assert _read(longest, tail=1000)[0] == META


def test_a_prefix_before_the_archive() -> None:
    body = b"#!/bin/sh\nexit 0\n" + _zip(_wheel_members())  # offsets recorded from the zip's start
    assert _read(body)[0] == META


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([("demo_pkg/__init__.py", b""), (f"{INFO}/WHEEL", b"")], "has no demo_pkg-1.0.dist-info/METADATA"),
        ([("demo_pkg/__init__.py", b"")], "no .dist-info directory"),
        ([(f"{INFO}/METADATA", META), (f"{INFO}/METADATA", META)], "lists demo_pkg-1.0.dist-info/METADATA 2 times"),
        ([(f"{INFO}/METADATA", META), ("other-1.0.dist-info/METADATA", META)], "more than one .dist-info"),
        ([("other-1.0.dist-info/METADATA", META)], "is not of project 'demo-pkg'"),
        ([("nested/demo_pkg-1.0.dist-info/METADATA", META)], "no .dist-info directory"),
    ],
)
def test_what_pip_would_refuse(members: list[tuple[str, bytes]], problem: str) -> None:
    duplicates = len({name for name, _ in members}) < len(members)
    with pytest.warns(UserWarning) if duplicates else contextlib.nullcontext():
        body = _zip(members)
    with pytest.raises(NotProducible, match=problem.replace(".", r"\.")):
        _read(body)
    with pytest.raises(NotProducible, match=problem.replace(".", r"\.")):
        _from_bytes(body)


def test_a_damaged_member_is_refused() -> None:
    body = bytearray(_zip(_wheel_members(), method=zipfile.ZIP_STORED))
    at = bytes(body).index(META)
    body[at + 5] ^= 0xFF  # same length, other bytes
    with pytest.raises(NotProducible, match="CRC-32"):
        _read(bytes(body))


def test_other_compression_is_refused() -> None:
    body = _zip(_wheel_members(), method=zipfile.ZIP_BZIP2)
    with pytest.raises(NotProducible, match="compression method 12"):
        _read(body)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "shorter than an end of central directory record"),
        (b"<html>Access denied</html>" * 10, "no end of central directory record"),
    ],
)
def test_not_a_zip(body: bytes, problem: str) -> None:
    with pytest.raises(NotProducible, match=problem):
        _read(body)


def test_a_cut_directory_is_refused() -> None:
    body = _zip(_wheel_members())
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        start = archive.start_dir
    damaged = body[:start] + b"XXXX" + body[start + 4 :]
    with pytest.raises(NotProducible, match="entry 1 of 4 is broken"):
        _read(damaged)


def test_a_short_answer_is_refused() -> None:
    body = _zip(_wheel_members(*[(f"m{n:04d}_padding_padding.py", b"") for n in range(2000)]))
    reads = metadata_reads(len(body), body[-1000:], PROJECT)
    wanted = next(reads)
    with pytest.raises(NotProducible, match="could not be read"):
        reads.send(body[wanted.start : wanted.start + wanted.length - 1])
