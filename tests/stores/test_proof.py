"""The checks for bodies without a listed sha256: real archives pass, error pages and damage fail,
and no check reads the whole file."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import tarfile
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


def test_a_zip_with_a_stub_before_it_and_a_zip64_directory_pass(
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


def test_checks_read_big_files_in_bounded_pieces(tmp_path: Path) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    wheel = tmp_path / "big-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # stored: the file is as big as its data
        for n in range(8):
            archive.writestr(f"big/part{n}.bin", payload[n << 20 : (n + 1) << 20])
    sdist = tmp_path / "big-1.0.tar.gz"
    sdist.write_bytes(gzip.compress(tar_of({"big-1.0/data.bin": payload}), compresslevel=1))
    for path in (wheel, sdist):
        with Counting(path) as raw, io.BufferedReader(raw) as body:
            proof.check_file(path.name, body, path.stat().st_size)  # type: ignore[arg-type]
            assert raw.largest <= 256 * 1024, path.name
            assert raw.total <= 2 * 1024 * 1024, path.name


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
