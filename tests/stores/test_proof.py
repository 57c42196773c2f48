"""The checks for bodies without a listed sha256: real archives pass, error pages and damage
anywhere in them (truncation, a flipped byte) fail, and every check reads the file in bounded
pieces, in bounded memory."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from pyproxy.stores import proof
from tests.dists import core_metadata, make_sdist, make_wheel

ERROR_PAGE = b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n"


def check(filename: str, body: bytes) -> None:
    proof.check_file(filename, io.BytesIO(body), len(body))


def refused(filename: str, body: bytes) -> str:
    with pytest.raises(proof.Unproven) as raised:
        check(filename, body)
    return str(raised.value)


def tar_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def flipped(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("foo-1.0-py3-none-any.whl", "zip"),
        ("foo-1.0.zip", "zip"),
        ("foo-1.0-py2.7.egg", "zip"),
        ("foo-1.0.tar.gz", "tar.gz"),
        ("Foo-1.0.TGZ", "tar.gz"),
        ("foo-1.0.tar.bz2", "tar.bz2"),
        ("foo-1.0.tar", "tar"),
        ("foo-1.0-py3-none-any.whl.metadata", "metadata"),
        ("foo-1.0.tar.gz.metadata", "metadata"),
        ("foo-1.0.win32.exe", None),
        ("foo-1.0.tar.xz", None),
    ],
)
def test_kind_of_follows_the_end_of_the_name(filename: str, kind: str | None) -> None:
    assert proof.kind_of(filename) == kind


def test_real_wheels_and_sdists_pass(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "foo", "1.0")
    sdist = make_sdist(tmp_path, "foo", "1.0")
    check(wheel.name, wheel.read_bytes())
    check(sdist.name, sdist.read_bytes())
    check("foo-1.0.zip", wheel.read_bytes())  # a .zip sdist is read as a zip
    check("foo-1.0.tar", gzip.decompress(sdist.read_bytes()))
    check("foo-1.0.tar.bz2", bz2.compress(gzip.decompress(sdist.read_bytes())))
    check("foo-1.0-py3-none-any.whl.metadata", core_metadata("foo", "1.0"))
    check("foo.metadata", b"Metadata-Version: 1.0\r\nName: foo\r\nVersion: 1.0\r\n")


@pytest.mark.parametrize(
    "filename",
    ["foo-1.0-py3-none-any.whl", "foo-1.0.zip", "foo-1.0.tar.gz", "foo-1.0.tar.bz2",
     "foo-1.0.tar", "foo-1.0-py3-none-any.whl.metadata"],
)
def test_an_error_page_is_no_file_of_any_kind(filename: str) -> None:
    assert refused(filename, ERROR_PAGE)
    assert refused(filename, b"")


def test_a_compressed_error_page_is_no_sdist() -> None:
    assert "tar header" in refused("foo-1.0.tar.gz", gzip.compress(ERROR_PAGE * 20))
    assert "tar header" in refused("foo-1.0.tar.bz2", bz2.compress(ERROR_PAGE * 20))
    assert "not gzip" in refused("foo-1.0.tar.gz", bz2.compress(ERROR_PAGE))
    assert "damaged gzip" in refused("foo-1.0.tar.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 600)


def test_damaged_zips_are_refused(tmp_path: Path) -> None:
    body = make_wheel(tmp_path, "foo", "1.0").read_bytes()
    name = "foo-1.0-py3-none-any.whl"
    assert "end of central directory" in refused(name, body[: len(body) // 2])  # cut short
    directory = body.rfind(b"PK\x01\x02")
    damaged = body[:directory] + b"XX" + body[directory + 2 :]
    assert "damaged" in refused(name, damaged)
    # the members overwritten, the directory intact
    members = body.find(b"PK\x01\x02")
    page = (ERROR_PAGE * (members // len(ERROR_PAGE) + 1))[:members]
    assert "local file header" in refused(name, page + body[members:])
    assert "empty zip" in refused(name, b"PK\x05\x06" + b"\x00" * 18)


def test_zips_of_each_readable_method_with_a_stub_or_zip64_or_data_descriptors_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = make_wheel(tmp_path, "foo", "1.0").read_bytes()
    check("foo-1.0.zip", b"#!/bin/sh\nexec python -m foo\n" + body)  # zipfile reads these too

    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # a zip64 end record for 3 members
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(3):
            archive.writestr(f"m{n}.txt", b"x" * n)
    zip64 = buffer.getvalue()
    assert b"PK\x06\x06" in zip64
    check("foo-1.0-py3-none-any.whl", zip64)
    assert "zip64" in refused("foo-1.0-py3-none-any.whl", zip64.replace(b"PK\x06\x06", b"XX\x06\x06"))

    # zip64 sizes in the local headers, and a zip streamed (sizes in data descriptors)
    monkeypatch.undo()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("big.txt", "w", force_zip64=True) as member:
            member.write(b"zip64 " * 1000)
        archive.writestr("empty.txt", b"")
    check("foo-1.0-py3-none-any.whl", buffer.getvalue())
    assert b"\x01\x00\x10\x00" in buffer.getvalue()  # a zip64 extra field
    streamed = Unseekable()
    with zipfile.ZipFile(streamed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", b"streamed " * 100)
        archive.writestr("empty/", b"")
    assert zipfile.ZipFile(io.BytesIO(streamed.getvalue())).infolist()[0].flag_bits & 0x08
    check("foo-1.0-py3-none-any.whl", streamed.getvalue())

    # empty members too (a zero-length deflate stream: zipfile reads it)
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        body = zip_of({"a.txt": os.urandom(100) + b"a" * 200_000, "e.txt": b"", "d/": b""},
                      method)
        check("foo-1.0-py3-none-any.whl", body)


class Unseekable(io.BytesIO):
    """zipfile writes to it as to a pipe: data descriptors after each member's data."""

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")


def test_metadata_needs_a_version_and_a_name_and_a_bound() -> None:
    assert "Metadata-Version" in refused("x.metadata", b"Name: foo\n")
    assert "Name" in refused("x.metadata", b"Metadata-Version: 2.1\nVersion: 1.0\n")
    assert "Metadata-Version" in refused("x.metadata", b'{"message": "not found"}')
    too_big = core_metadata("foo", "1.0") + b"\n" + b"x" * proof.MAX_METADATA_BYTES
    assert "larger than" in refused("x.metadata", too_big)


def test_a_wheels_metadata_must_name_its_project_and_version() -> None:
    wheel = "Foo_Bar-1.0-py3-none-any.whl.metadata"
    check(wheel, core_metadata("foo.bar", "1.0.0"))  # the same, as normalized
    assert "of project 'otherproj', not of 'foo-bar'" in refused(wheel, core_metadata("otherproj", "1.0"))
    assert "of version '2.0', not of '1.0'" in refused(wheel, core_metadata("foo-bar", "2.0"))
    assert "of version 'one'" in refused(wheel, core_metadata("foo-bar", "one"))
    check("not a wheel name.metadata", core_metadata("anything", "1.0"))


def test_an_unknown_kind_is_never_proven() -> None:
    assert "no check" in refused("foo-1.0.win32.exe", b"MZ" + b"\x00" * 100)


def test_any_archive_accepts_each_kind_and_refuses_a_page(tmp_path: Path) -> None:
    for path in (make_wheel(tmp_path, "foo", "1.0"), make_sdist(tmp_path, "foo", "1.0")):
        proof.check_any_archive(io.BytesIO(path.read_bytes()), path.stat().st_size)
    with pytest.raises(proof.Unproven):
        proof.check_any_archive(io.BytesIO(ERROR_PAGE), len(ERROR_PAGE))


class Counting(io.FileIO):
    """A file that records how much each read asked for and got."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.largest = 0
        self.total = 0

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        got = super().readinto(buffer) or 0
        self.largest = max(self.largest, got)
        self.total += got
        return got


def test_checks_read_big_files_in_bounded_pieces_in_bounded_memory(tmp_path: Path) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    wheel = tmp_path / "big-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # stored: the file is as big as its data
        for n in range(8):
            archive.writestr(f"big/part{n}.bin", payload[n << 20 : (n + 1) << 20])
    sdist = tmp_path / "big-1.0.tar.gz"
    sdist.write_bytes(gzip.compress(tar_of({"big-1.0/data.bin": payload}), compresslevel=1))
    deflated = tmp_path / "deflated-1.0-py3-none-any.whl"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big/zeros.bin", bytes(64 * 1024 * 1024))  # 64 MiB in 64 KiB: a bomb
        archive.writestr("big/data.bin", payload)
    for path in (wheel, sdist, deflated):
        size = path.stat().st_size
        tracemalloc.start()
        try:
            with Counting(path) as raw, io.BufferedReader(raw) as body:
                proof.check_file(path.name, body, size)  # type: ignore[arg-type]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert raw.largest <= 256 * 1024, path.name
        # all of it, every byte once or so: damage anywhere is found
        assert size <= raw.total <= size + 512 * 1024, path.name
        assert peak < 1024 * 1024, path.name  # whatever the file's (and its contents') size


# ---- damage anywhere in an archive: truncation and corruption ----


def big_sdist(tmp_path: Path) -> bytes:
    """A .tar.gz with more than its first tar header to damage: a real sdist and some data."""
    body = io.BytesIO(make_sdist(tmp_path, "foo", "1.0").read_bytes())
    with tarfile.open(fileobj=body) as sdist:
        members = {m.name: sdist.extractfile(m).read() for m in sdist if m.isfile()}  # type: ignore[union-attr]
    members["foo-1.0/data.bin"] = os.urandom(300_000)
    return gzip.compress(tar_of(members))


@pytest.mark.parametrize("short", [100, 8, 4, 1])  # 100: the reviewer's repro; then the trailer
def test_a_cut_short_tar_gz_is_refused(tmp_path: Path, short: int) -> None:
    body = big_sdist(tmp_path)
    assert "gzip stream cut short" in refused("foo-1.0.tar.gz", body[:-short])


@pytest.mark.parametrize(
    ("where", "why"),
    [(0.5, "damaged gzip stream"), (-8, "incorrect data check"), (-4, "incorrect length check")],
)
def test_a_flipped_byte_in_a_tar_gz_is_refused(tmp_path: Path, where: float, why: str) -> None:
    body = big_sdist(tmp_path)
    at = int(len(body) * where) if where > 0 else len(body) + int(where)
    assert why in refused("foo-1.0.tar.gz", flipped(body, at))


def test_a_damaged_tar_bz2_is_refused(tmp_path: Path) -> None:
    body = bz2.compress(gzip.decompress(big_sdist(tmp_path)))
    check("foo-1.0.tar.bz2", body)
    assert "bzip2 stream cut short" in refused("foo-1.0.tar.bz2", body[:-100])
    # bzip2 checks a block's CRC at its end: the scrambled output may fail the tar walk first
    problem = refused("foo-1.0.tar.bz2", flipped(body, len(body) // 2))
    assert "damaged bzip2 stream" in problem or "tar header" in problem, problem


def test_a_tar_must_hold_all_its_members_and_its_end(tmp_path: Path) -> None:
    tar = tar_of({"foo-1.0/PKG-INFO": b"x" * 3000, "foo-1.0/setup.py": b"y" * 700})
    check("foo-1.0.tar", tar)
    # cut inside the second member's data; after it, before the end-of-archive marker
    assert "bytes of 'foo-1.0/setup.py' missing" in refused("foo-1.0.tar", tar[:4500])
    assert "no end-of-archive marker" in refused("foo-1.0.tar", tar[: 512 + 3072 + 512 + 1024])
    # a sound gzip stream round a tar that was cut short before it was compressed
    assert "missing" in refused("foo-1.0.tar.gz", gzip.compress(tar[:4500]))
    assert "missing" in refused("foo-1.0.tar.bz2", bz2.compress(tar[:4500]))
    damaged = tar[:3584] + b"\xff" * 8 + tar[3592:]  # the second header's name
    assert "damaged tar header at byte 3584" in refused("foo-1.0.tar", damaged)


def test_a_tar_gz_is_read_as_tarfile_reads_it(tmp_path: Path) -> None:
    tar = tar_of({"foo-1.0/PKG-INFO": os.urandom(3000)})
    # several gzip members with zero bytes between them, as GzipFile reads them
    split = gzip.compress(tar[:1000]) + bytes(10) + gzip.compress(tar[1000:])
    check("foo-1.0.tar.gz", split)
    # what follows the member where the tar ends tarfile never reads: neither do the checks
    check("foo-1.0.tar.gz", gzip.compress(tar) + b"trailing garbage")
    # but the tar must end in a sound member
    assert "gzip stream cut short" in refused("foo-1.0.tar.gz", split[:-20])
    assert "damaged gzip" in refused("foo-1.0.tar.gz", gzip.compress(tar[:1000]) + b"garbage")


def member_data(body: bytes, name: str) -> int:
    """Where a zip member's data starts."""
    info = zipfile.ZipFile(io.BytesIO(body)).getinfo(name)
    name_length, extra_length = struct.unpack_from("<HH", body, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length


@pytest.mark.parametrize(
    ("method", "why"),
    [
        (zipfile.ZIP_STORED, "fails its CRC-32 check"),
        (zipfile.ZIP_DEFLATED, "damaged deflate data"),
        (zipfile.ZIP_BZIP2, "damaged bzip2 data"),
        (zipfile.ZIP_LZMA, "damaged lzma data"),
    ],
)
def test_a_flipped_byte_in_a_zip_member_is_refused(method: int, why: str) -> None:
    body = zip_of({"foo/__init__.py": b"", "foo/data.txt": os.urandom(20_000)}, method)
    check("foo-1.0-py3-none-any.whl", body)
    at = member_data(body, "foo/data.txt") + 5_000
    problem = refused("foo-1.0-py3-none-any.whl", flipped(body, at))
    assert "zip member 2 of 2 ('foo/data.txt')" in problem
    assert why in problem or "CRC-32" in problem or "decompresses to" in problem, problem


def test_a_deflated_member_that_inflates_to_wrong_bytes_is_refused() -> None:
    buffer = io.BytesIO()  # level 0: deflate's stored blocks, so a flipped byte still inflates
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=0) as archive:
        archive.writestr("foo/data.txt", b"data " * 1000)
    body = buffer.getvalue()
    problem = refused("foo-1.0-py3-none-any.whl", flipped(body, member_data(body, "foo/data.txt") + 100))
    assert "('foo/data.txt') fails its CRC-32 check" in problem


@pytest.mark.parametrize(
    ("offset", "value", "why"),
    [
        (8, b"\x00\x00", "compression method 0"),  # stored, its directory says deflated
        (14, b"\x00\x00\x00\x00", "CRC-32 or sizes"),
        (22, b"\xff\x00\x00\x00", "CRC-32 or sizes"),  # uncompressed size
        (30, b"x", "names another file"),
    ],
)
def test_a_local_header_that_disagrees_with_the_directory_is_refused(
    offset: int, value: bytes, why: str
) -> None:
    body = zip_of({"foo/__init__.py": b"", "foo/data.txt": b"data " * 1000})
    at = zipfile.ZipFile(io.BytesIO(body)).getinfo("foo/data.txt").header_offset + offset
    damaged = body[:at] + value + body[at + len(value) :]
    assert why in refused("foo-1.0-py3-none-any.whl", damaged)


def test_a_member_no_installer_can_read_is_refused() -> None:
    body = zip_of({"foo/data.txt": b"data " * 1000})
    local, central = body.find(b"PK\x03\x04"), body.find(b"PK\x01\x02")
    deflate64 = bytearray(body)  # Deflate64: zipfile (so pip) has no decompressor for it
    deflate64[local + 8 : local + 10] = deflate64[central + 10 : central + 12] = b"\x09\x00"
    assert "method 9 (deflate64), which zipfile, and so pip, cannot read" in refused(
        "foo-1.0-py3-none-any.whl", bytes(deflate64))
    encrypted = bytearray(body)
    encrypted[local + 6] |= 1
    encrypted[central + 8] |= 1
    assert "is encrypted" in refused("foo-1.0-py3-none-any.whl", bytes(encrypted))


# ---- PEP 740 provenance objects ----


@pytest.mark.parametrize(
    "body",
    [
        b'{"version": 1, "attestation_bundles": []}',
        b'{"version": 1, "attestation_bundles": [{"publisher": {"kind": "x"}, "attestations": []}]}',
    ],
)
def test_a_provenance_object_is_proven(body: bytes) -> None:
    proof.check_file("foo-1.0.tar.gz.provenance", io.BytesIO(body), len(body))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>sign in</html>", "not JSON"),
        (b"[]", '"version": 1'),
        (b'{"version": 2, "attestation_bundles": []}', '"version": 1'),
        (b'{"version": 1}', "attestation_bundles"),
        (b'{"version": 1, "attestation_bundles": {}}', "attestation_bundles"),
        (b" " * (1024 * 1024 + 1), "larger than"),
    ],
)
def test_anything_else_is_no_provenance_object(body: bytes, why: str) -> None:
    with pytest.raises(proof.Unproven, match=why):
        proof.check_file("foo-1.0.tar.gz.provenance", io.BytesIO(body), len(body))
