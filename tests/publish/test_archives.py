"""pyproxy.archives: structural checks and core-metadata reads on real (and broken) archives."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pyproxy.publish import archives
from pyproxy.publish.archives import InvalidArchive, InvalidWheelContents
from tests.dists import core_metadata, make_sdist, make_wheel

WHEEL = "foo-1.0-py3-none-any.whl"
BIG = 65 * 1024 * 1024  # just over the 64 MiB floor of the ratio check


def write_zip(
    path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def wheel_members(**overrides: bytes | None) -> dict[str, bytes]:
    """A minimal foo 1.0 wheel's members; None drops one."""
    members: dict[str, bytes | None] = {
        "foo/__init__.py": b"",
        "foo-1.0.dist-info/METADATA": core_metadata("foo", "1.0"),
        "foo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
        "foo-1.0.dist-info/RECORD": b"",
    }
    members.update(overrides)
    return {name: data for name, data in members.items() if data is not None}


def write_tar_gz(path: Path, infos: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return path


def regular(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


PKG_INFO = regular("foo-1.0/PKG-INFO", core_metadata("foo", "1.0"))


# --------------------------------------------------------------------------------------- wheels


def test_wheel_metadata_is_returned_byte_for_byte(tmp_path: Path) -> None:
    metadata = (
        core_metadata("foo", "1.0", requires_dist=["bar>=1"]) + "Description: ünïcode\n".encode()
    )
    wheel = make_wheel(tmp_path, "foo", "1.0", metadata=metadata)
    assert archives.read_core_metadata(wheel, wheel.name) == metadata


def test_wheel_with_entry_points_is_accepted(tmp_path: Path) -> None:
    points = b"[console_scripts]\nfoo = foo.cli:main\nfoo-x = foo:run [extra]\n\n[foo.plugins]\np = foo.p\n"
    wheel = write_zip(
        tmp_path / WHEEL, wheel_members(**{"foo-1.0.dist-info/entry_points.txt": points})
    )
    assert archives.read_core_metadata(wheel, WHEEL).startswith(b"Metadata-Version: 2.1\n")


def test_small_but_highly_compressible_wheel_is_accepted(tmp_path: Path) -> None:
    wheel = write_zip(tmp_path / WHEEL, wheel_members(**{"foo/zeros.bin": bytes(8 * 1024 * 1024)}))
    archives.check_wheel(wheel, WHEEL)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / WHEEL
    return write_zip(path, wheel_members(**{"foo/zeros.bin": bytes(BIG)}))


def test_zip_bomb_is_refused(zip_bomb: Path) -> None:
    with pytest.raises(InvalidArchive) as caught:
        archives.check_wheel(zip_bomb, WHEEL)
    assert caught.value.message == "File exceeds compression ratio of 50"


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an archive at all" * 10)
    return path


def _tar_then_zip(path: Path) -> Path:
    """An uncompressed tar with a wheel appended: both readers accept it."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info, data = PKG_INFO
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    zipped = write_zip(path.with_suffix(".tmp"), wheel_members()).read_bytes()
    path.write_bytes(tar.getvalue() + zipped)
    return path


def _bzip2(path: Path) -> Path:
    return write_zip(path, wheel_members(), compression=zipfile.ZIP_BZIP2)


def _prefixed(path: Path) -> Path:
    zipped = write_zip(path.with_suffix(".tmp"), wheel_members()).read_bytes()
    path.write_bytes(b"#!/bin/sh\nexit 0\n" + zipped)
    return path


def _symlink_member(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in wheel_members().items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("foo/link")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        archive.writestr(link, b"/etc/passwd")
    return path


def _encrypted_member(path: Path) -> Path:
    write_zip(path, wheel_members())
    data = bytearray(path.read_bytes())
    # set the "encrypted" flag bit in every central directory header
    offset = data.find(b"PK\x01\x02")
    while offset != -1:
        data[offset + 8] |= 0x01
        offset = data.find(b"PK\x01\x02", offset + 4)
    path.write_bytes(bytes(data))
    return path


def _duplicate_member(path: Path) -> Path:
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as archive:
        for name, data in wheel_members().items():
            archive.writestr(name, data)
        archive.writestr("foo-1.0.dist-info/METADATA", core_metadata("evil", "6.6.6"))
    return path


def _central_headers(
    path: Path, offset: int, change: Callable[[int], int], member: str | None = None
) -> Path:
    """Change the byte at `offset` of the central directory headers (of `member` only)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_length = int.from_bytes(data[at + 28 : at + 30], "little")
        if member is None or data[at + 46 : at + 46 + name_length] == member.encode():
            data[at + offset] = change(data[at + offset])
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def _future_zip_version(path: Path) -> Path:
    """"Version needed to extract" 6.7 (zipfile's limit is 6.3): zipfile raises
    NotImplementedError, not BadZipFile."""
    return _central_headers(write_zip(path, wheel_members()), 6, lambda _: 67)


def _truncated_wheel(keep: int) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        write_zip(path, wheel_members())
        path.write_bytes(path.read_bytes()[:keep])
        return path
    return build


def _member(name: str) -> Callable[[Path], Path]:
    return lambda path: write_zip(path, wheel_members(**{name: b"pwned"}))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_garbage, "File is not a zipfile"),
        (
            lambda p: p.write_bytes(make_sdist(p.parent / "s", "foo", "1.0").read_bytes()) and p,
            "File is not a zipfile",
        ),
        (_tar_then_zip, "File is both a zip and a tar file"),
        (_bzip2, "File does not use a supported compression type"),
        (_prefixed, "ZIP archive not accepted: Data before the first member."),
        (
            _duplicate_member,
            "ZIP archive not accepted: Duplicate member 'foo-1.0.dist-info/METADATA'.",
        ),
        (_member("../evil.py"), "ZIP archive not accepted: Unsafe member path '../evil.py'."),
        (
            _member("foo/../../evil.py"),
            "ZIP archive not accepted: Unsafe member path 'foo/../../evil.py'.",
        ),
        (
            _member("/etc/cron.d/evil"),
            "ZIP archive not accepted: Unsafe member path '/etc/cron.d/evil'.",
        ),
        (_member("C:/evil.py"), "ZIP archive not accepted: Unsafe member path 'C:/evil.py'."),
        (_member("..\\evil.py"), "ZIP archive not accepted: Unsafe member path '..\\\\evil.py'."),
        (_symlink_member, "ZIP archive not accepted: Symlink member 'foo/link'."),
        (_encrypted_member, "ZIP archive not accepted: Encrypted member 'foo/__init__.py'."),
        (
            lambda p: write_zip(p, wheel_members(**{"foo-1.0.dist-info/WHEEL": None})),
            "WHEEL not found at foo-1.0.dist-info/WHEEL",
        ),
        (
            _future_zip_version,
            "ZIP archive not accepted: zip file version 6.7 is not supported.",
        ),
        (_truncated_wheel(-30), "File is not a zipfile"),
        (_truncated_wheel(100), "File is not a zipfile"),
        (_truncated_wheel(0), "File is not a zipfile"),
    ],
)
def test_broken_wheels_are_refused(
    tmp_path: Path, build: Callable[[Path], Path], message: str
) -> None:
    path = build(tmp_path / WHEEL)
    with pytest.raises(InvalidArchive) as caught:
        archives.check_wheel(path, WHEEL)
    assert caught.value.message == message
    assert type(caught.value) is InvalidArchive  # structural: the caller prefixes it


def test_member_with_an_unsupported_feature_is_refused(tmp_path: Path) -> None:
    """Flag bit 5 ("compressed patched data"): zipfile raises NotImplementedError on open."""
    path = _central_headers(
        write_zip(tmp_path / WHEEL, wheel_members()), 8, lambda flags: flags | 0x20,
        "foo-1.0.dist-info/METADATA",
    )
    archives.check_wheel(path, WHEEL)
    with pytest.raises(InvalidArchive) as caught:
        archives.wheel_core_metadata(path, WHEEL)
    assert caught.value.message == (
        "ZIP archive not accepted: Member 'foo-1.0.dist-info/METADATA' uses compressed patched"
        " data (flag bit 5), which is not supported."
    )


def test_dist_info_with_a_version_past_the_int_limit_is_not_taken(tmp_path: Path) -> None:
    """canonicalize_version raises a bare ValueError for a number of more than 4300 digits."""
    huge = "9" * 5000
    members = {name.replace("foo-1.0.dist-info", f"foo-{huge}.dist-info"): data
               for name, data in wheel_members().items()}
    path = write_zip(tmp_path / WHEEL, members)
    with pytest.raises(InvalidArchive) as caught:
        archives.check_wheel(path, WHEEL)
    assert caught.value.message == "WHEEL not found at foo-1.0.dist-info/WHEEL"


def test_wheel_filename_without_name_and_version(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "foo.whl", wheel_members())
    with pytest.raises(InvalidArchive) as caught:
        archives.check_wheel(path, "foo.whl")
    assert caught.value.message == "Unable to parse name and version from wheel filename"


def test_dist_info_is_found_by_canonical_name(tmp_path: Path) -> None:
    # the dist-info dir is "foo_bar-1.0", the filename says "Foo_Bar": installers accept it
    path = make_wheel(tmp_path, "Foo.Bar", "1.0")
    assert path.name == "Foo_Bar-1.0-py3-none-any.whl"
    archives.check_wheel(path, path.name)
    assert archives.wheel_core_metadata(path, path.name).startswith(b"Metadata-Version")


def test_dist_info_of_another_project_is_not_taken(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, "foo", "1.0", dist_info="bar-1.0")
    with pytest.raises(InvalidArchive) as caught:
        archives.check_wheel(path, path.name)
    assert caught.value.message == "WHEEL not found at foo-1.0.dist-info/WHEEL"


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        # a second project's metadata riding along (pip: "multiple .dist-info directories")
        (
            {
                "evil-6.6.dist-info/METADATA": core_metadata("evil", "6.6"),
                "evil-6.6.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
                "evil-6.6.dist-info/RECORD": b"",
            },
            "'evil-6.6.dist-info', 'foo-1.0.dist-info'",
        ),
        ({"foo-0.9.dist-info/METADATA": core_metadata("foo", "0.9")},
         "'foo-0.9.dist-info', 'foo-1.0.dist-info'"),
        ({"zzz.dist-info": b"a file, but pip counts it"}, "'foo-1.0.dist-info', 'zzz.dist-info'"),
    ],
)
def test_a_second_dist_info_is_refused(
    tmp_path: Path, extra: dict[str, bytes], shown: str
) -> None:
    path = write_zip(tmp_path / WHEEL, wheel_members(**extra))
    with pytest.raises(InvalidWheelContents) as caught:
        archives.check_wheel(path, WHEEL)
    assert caught.value.message == (
        f"Wheel '{WHEEL}' has more than one .dist-info directory ({shown}); installers take only"
        " wheels with exactly one."
    )


def test_dist_info_named_elsewhere_than_the_top_is_not_counted(tmp_path: Path) -> None:
    path = write_zip(tmp_path / WHEEL, wheel_members(**{"foo/vendored/x-1.0.dist-info/METADATA": b""}))
    archives.check_wheel(path, WHEEL)


@pytest.mark.parametrize(
    ("omit", "message"),
    [
        (
            "RECORD",
            f"Wheel '{WHEEL}' does not contain the required RECORD file: foo-1.0.dist-info/RECORD",
        ),
        (
            "METADATA",
            f"Wheel '{WHEEL}' does not contain the required METADATA file: foo-1.0.dist-info/METADATA",
        ),
    ],
)
def test_wheel_without_required_file(tmp_path: Path, omit: str, message: str) -> None:
    path = make_wheel(tmp_path, "foo", "1.0", omit={omit})
    archives.check_wheel(path, WHEEL)  # structurally fine
    with pytest.raises(InvalidWheelContents) as caught:
        archives.wheel_core_metadata(path, WHEEL)
    assert caught.value.message == message


@pytest.mark.parametrize(
    "points",
    [
        b"foo = foo:main\n",  # no section
        b"[console_scripts]\nfoo\n",  # no '='
        b"[console_scripts]\nfoo = not a module\n",
        b"[console_scripts]\nfoo =\n",
        b"[console_scripts]\nfoo = foo:main\n\xff\n",  # not UTF-8
    ],
)
def test_wheel_with_bad_entry_points(tmp_path: Path, points: bytes) -> None:
    path = write_zip(
        tmp_path / WHEEL, wheel_members(**{"foo-1.0.dist-info/entry_points.txt": points})
    )
    with pytest.raises(InvalidWheelContents) as caught:
        archives.wheel_core_metadata(path, WHEEL)
    assert caught.value.message == (
        f"Wheel '{WHEEL}' has invalid entry points defined in the entry_points.txt file"
    )


def test_oversize_wheel_metadata(tmp_path: Path) -> None:
    metadata = (
        core_metadata("foo", "1.0") + b"Description: " + b"a" * archives.MAX_CORE_METADATA_BYTES
    )
    path = make_wheel(tmp_path, "foo", "1.0", metadata=metadata)
    archives.check_wheel(path, WHEEL)
    with pytest.raises(InvalidArchive) as caught:
        archives.wheel_core_metadata(path, WHEEL)
    assert caught.value.message == "foo-1.0.dist-info/METADATA is larger than 24 MiB"
    assert not isinstance(caught.value, InvalidWheelContents)


def test_metadata_exactly_at_the_cap_is_read(tmp_path: Path) -> None:
    head = core_metadata("foo", "1.0") + b"Description: "
    metadata = head + b"a" * (archives.MAX_CORE_METADATA_BYTES - len(head))
    path = make_wheel(tmp_path, "foo", "1.0", metadata=metadata)
    assert archives.wheel_core_metadata(path, WHEEL) == metadata


# --------------------------------------------------------------------------------------- sdists


def test_sdist_pkg_info_is_returned_byte_for_byte(tmp_path: Path) -> None:
    pkg_info = core_metadata("foo", "1.0", requires_python=">=3.9")
    path = make_sdist(tmp_path, "foo", "1.0", pkg_info=pkg_info)
    assert archives.read_core_metadata(path, path.name) == pkg_info


def test_sdist_with_dot_slash_names_is_accepted(tmp_path: Path) -> None:
    data = PKG_INFO[1]
    path = write_tar_gz(
        tmp_path / "foo-1.0.tar.gz",
        [
            special("./", tarfile.DIRTYPE),
            regular("./foo-1.0/PKG-INFO", data),
            regular("./foo-1.0/setup.py"),
        ],
    )
    assert archives.sdist_core_metadata(path) == data


@pytest.fixture(scope="module")
def tar_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "foo-1.0.tar.gz"
    return write_tar_gz(path, [PKG_INFO, regular("foo-1.0/zeros.bin", bytes(BIG))])


def test_tar_bomb_is_refused(tar_bomb: Path) -> None:
    with pytest.raises(InvalidArchive) as caught:
        archives.sdist_core_metadata(tar_bomb)
    assert caught.value.message == "File exceeds compression ratio of 50"


def _plain_tar(path: Path) -> Path:
    write_tar_gz(path, [PKG_INFO])
    path.write_bytes(gzip.decompress(path.read_bytes()))
    return path


def _truncated(path: Path) -> Path:
    write_tar_gz(path, [PKG_INFO, regular("foo-1.0/data.bin", bytes(range(256)) * 400)])
    path.write_bytes(path.read_bytes()[:-200])
    return path


def _cut_at(keep: int) -> Callable[[Path], Path]:
    """Cut inside the first tar header: tarfile.is_tarfile raises EOFError, not False."""
    def build(path: Path) -> Path:
        write_tar_gz(path, [PKG_INFO, regular("foo-1.0/setup.py")])
        path.write_bytes(path.read_bytes()[:keep])
        return path
    return build


def _gzip_then_zip(path: Path) -> Path:
    write_tar_gz(path, [PKG_INFO])
    zipped = write_zip(path.with_suffix(".tmp"), wheel_members()).read_bytes()
    path.write_bytes(path.read_bytes() + zipped)
    return path


def _tar(*infos: tuple[tarfile.TarInfo, bytes | None]) -> Callable[[Path], Path]:
    return lambda path: write_tar_gz(path, list(infos))


def _sparse(path: Path) -> Path:
    # a GNU sparse member: a type-'S' header with an empty map, then the real size
    header = bytearray(tarfile.TarInfo("foo-1.0/sparse").tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[148:156] = b" " * 8
    checksum = sum(header[:512])
    header[148:156] = b"%06o\x00 " % checksum
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info, data = PKG_INFO
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    body = tar.getvalue()
    end = body.rstrip(b"\x00")
    end_at = (len(end) + 511) // 512 * 512
    path.write_bytes(gzip.compress(body[:end_at] + bytes(header[:512]) + bytes(10240), mtime=0))
    return path


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_garbage, "File is not a tarfile"),
        (lambda p: write_zip(p, wheel_members()), "File is not a tarfile"),
        (_plain_tar, "tar archive not accepted: The archive is not gzip-compressed."),
        (_gzip_then_zip, "File is both a zip and a tar file"),
        (_truncated, "tar archive not accepted: The archive is truncated or corrupt."),
        (_cut_at(60), "tar archive not accepted: The archive is truncated or corrupt."),
        (_cut_at(11), "tar archive not accepted: The archive is truncated or corrupt."),
        (
            _tar(PKG_INFO, regular("../evil.py")),
            "tar archive not accepted: Unsafe member path '../evil.py'.",
        ),
        (
            _tar(PKG_INFO, regular("foo-1.0/../../evil")),
            "tar archive not accepted: Unsafe member path 'foo-1.0/../../evil'.",
        ),
        (
            _tar(PKG_INFO, regular("/etc/passwd")),
            "tar archive not accepted: Unsafe member path '/etc/passwd'.",
        ),
        (
            _tar(PKG_INFO, special("foo-1.0/link", tarfile.SYMTYPE, "/etc/passwd")),
            "tar archive not accepted: Link member 'foo-1.0/link' is not allowed.",
        ),
        (
            _tar(special("foo-1.0/PKG-INFO", tarfile.SYMTYPE, "../../etc/passwd")),
            "tar archive not accepted: Link member 'foo-1.0/PKG-INFO' is not allowed.",
        ),
        (
            _tar(PKG_INFO, special("foo-1.0/hard", tarfile.LNKTYPE, "foo-1.0/PKG-INFO")),
            "tar archive not accepted: Link member 'foo-1.0/hard' is not allowed.",
        ),
        (
            _tar(PKG_INFO, special("foo-1.0/null", tarfile.CHRTYPE)),
            "tar archive not accepted: Special member 'foo-1.0/null' is not allowed.",
        ),
        (
            _tar(PKG_INFO, special("foo-1.0/fifo", tarfile.FIFOTYPE)),
            "tar archive not accepted: Special member 'foo-1.0/fifo' is not allowed.",
        ),
        (_sparse, "tar archive not accepted: Sparse members are not allowed."),
        (
            _tar(PKG_INFO, regular("foo-1.0/PKG-INFO", core_metadata("evil", "6.6.6"))),
            "tar archive not accepted: Duplicate member 'foo-1.0/PKG-INFO'.",
        ),
        (
            _tar(PKG_INFO, regular("bar-1.0/setup.py")),
            "Incorrect number of top-level directories in sdist",
        ),
        (
            _tar(regular("PKG-INFO", PKG_INFO[1])),
            "Incorrect number of top-level directories in sdist",
        ),
        (_tar(), "Incorrect number of top-level directories in sdist"),
        (_tar(regular("foo-1.0/setup.py")), "PKG-INFO not found at foo-1.0/PKG-INFO"),
        (_tar(regular("foo-1.0/sub/PKG-INFO")), "PKG-INFO not found at foo-1.0/PKG-INFO"),
    ],
)
def test_broken_sdists_are_refused(
    tmp_path: Path, build: Callable[[Path], Path], message: str
) -> None:
    path = build(tmp_path / "foo-1.0.tar.gz")
    with pytest.raises(InvalidArchive) as caught:
        archives.sdist_core_metadata(path)
    assert caught.value.message == message


def test_oversize_pkg_info(tmp_path: Path) -> None:
    pkg_info = (
        core_metadata("foo", "1.0") + b"Description: " + b"a" * archives.MAX_CORE_METADATA_BYTES
    )
    path = make_sdist(tmp_path, "foo", "1.0", pkg_info=pkg_info)
    with pytest.raises(InvalidArchive) as caught:
        archives.sdist_core_metadata(path)
    assert caught.value.message == "foo-1.0/PKG-INFO is larger than 24 MiB"


def test_sdist_without_pkg_info_from_dists_helper(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, "foo", "1.0", omit_pkg_info=True)
    with pytest.raises(InvalidArchive) as caught:
        archives.read_core_metadata(path, path.name)
    assert caught.value.message == "PKG-INFO not found at foo-1.0/PKG-INFO"


def test_other_extensions_are_not_read(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "foo-1.0.zip", {"foo-1.0/PKG-INFO": b""})
    with pytest.raises(InvalidArchive) as caught:
        archives.read_core_metadata(path, path.name)
    assert caught.value.message == "Only .whl and .tar.gz files are read"
