"""Read distribution archives safely: sanity checks and the core metadata, nothing extracted.

A wheel is a zip whose `{name}-{version}.dist-info/` (taken literally from the filename, as the
upload endpoint of the public index does) holds WHEEL, RECORD and METADATA. An sdist is a
gzip-compressed tar with one top-level directory holding PKG-INFO.

Only the core metadata file (and a wheel's entry_points.txt) is ever read into memory, and only up
to a cap; tar archives are streamed once, member by member, with a decompression-ratio guard.
"""

from __future__ import annotations

import configparser
import gzip
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Final

from packaging.utils import canonicalize_name, canonicalize_version

__all__ = [
    "MAX_CORE_METADATA_BYTES",
    "InvalidArchive",
    "InvalidWheelContents",
    "check_wheel",
    "read_core_metadata",
    "sdist_core_metadata",
    "wheel_core_metadata",
]

MIB: Final = 1024 * 1024
# above the upload form's limit (validate.MAX_FORM_BYTES): a description the form takes fits
# in the file's own metadata too, with room for many short header lines
MAX_CORE_METADATA_BYTES: Final = 24 * MIB
MAX_ENTRY_POINTS_BYTES: Final = 1 * MIB
MAX_MEMBERS: Final = 100_000
# As the public index: a high ratio only counts once the content is big enough to hurt.
COMPRESSION_RATIO_MIN_SIZE: Final = 64 * MIB
COMPRESSION_RATIO_THRESHOLD: Final = 50

_GZIP_MAGIC: Final = b"\x1f\x8b"
_CHUNK: Final = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# importlib.metadata.EntryPoint.pattern: "module[.sub][:attr[.sub]] [extras]"
_ENTRY_POINT_VALUE = re.compile(r"[\w.]+\s*(:\s*[\w.]+\s*)?(\[.*\]\s*)?", re.ASCII)
# what the standard library's readers raise on a truncated or corrupt archive (besides
# zipfile.BadZipFile / tarfile.TarError): gzip's EOFError, zlib.error, struct.error, OSError,
# ValueError (e.g. a negative seek)
_CORRUPT: Final = (EOFError, zlib.error, struct.error, OSError, ValueError)


class InvalidArchive(Exception):
    """The file is not a usable archive; `message` completes "Invalid distribution file. ..."."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidWheelContents(InvalidArchive):
    """A sound zip that lacks what a wheel needs; `message` is a complete sentence on its own."""


def _shown(name: str) -> str:
    """A member name fit for a one-line message: repr escapes control characters."""
    return repr(name if len(name) <= 200 else name[:200] + "...")


def _is_unsafe(name: str) -> bool:
    """Absolute, drive-qualified or escaping paths: extraction would leave the target directory."""
    path = name.replace("\\", "/")
    return path.startswith("/") or bool(_DRIVE.match(path)) or ".." in path.split("/")


def _read_capped(stream: IO[bytes], limit: int, member: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InvalidArchive(f"{member} is larger than {limit // MIB} MiB")
    return data


def _canonical_version(version: str) -> str:
    """canonicalize_version, and a version with a number past int()'s digit limit
    (sys.get_int_max_str_digits) left as it is, like any other invalid version."""
    try:
        return canonicalize_version(version)
    except ValueError:
        return version


def _is_tarfile(path: Path) -> bool:
    """tarfile.is_tarfile, False for a file it cannot even read a header of (a truncated or
    corrupt gzip stream raises rather than answers)."""
    try:
        return tarfile.is_tarfile(path)
    except (tarfile.TarError, *_CORRUPT):
        return False


def _exceeds_ratio(decompressed: int, compressed: int) -> bool:
    return (
        decompressed > COMPRESSION_RATIO_MIN_SIZE
        and decompressed / max(compressed, 1) > COMPRESSION_RATIO_THRESHOLD
    )


# ---------------------------------------------------------------------------------------- wheels


def _dist_info(filename: str, archive: zipfile.ZipFile) -> str:
    """The wheel's .dist-info directory: spelled as in the filename, or (older build tools
    wrote "Foo_Bar-1.0.dist-info" in "foo_bar-…whl" and vice versa) the one whose name and
    version are canonically equal to the filename's, as installers find it."""
    try:
        name, version, _rest = filename.split("-", 2)
    except ValueError:
        raise InvalidArchive("Unable to parse name and version from wheel filename") from None
    literal = f"{name}-{version}.dist-info"
    if f"{literal}/WHEEL" in archive.NameToInfo:
        return literal
    wanted = (canonicalize_name(name), _canonical_version(version))
    for member in archive.NameToInfo:
        top = member.split("/", 1)[0]
        stem = top.removesuffix(".dist-info")
        if stem != top and stem.count("-") == 1:
            dir_name, dir_version = stem.split("-")
            if (canonicalize_name(dir_name), _canonical_version(dir_version)) == wanted:
                return top
    return literal


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):
        raise InvalidArchive("File is not a zipfile")
    if _is_tarfile(path):
        raise InvalidArchive("File is both a zip and a tar file")
    try:
        return zipfile.ZipFile(path)
    except NotImplementedError as exc:  # e.g. "zip file version 6.7"
        raise InvalidArchive(f"ZIP archive not accepted: {exc} is not supported.") from None
    except (zipfile.BadZipFile, *_CORRUPT):
        raise InvalidArchive("File is not a zipfile") from None


def _check_zip_members(archive: zipfile.ZipFile, compressed_size: int) -> None:
    infos = archive.infolist()
    if _exceeds_ratio(sum(info.file_size for info in infos), compressed_size):
        raise InvalidArchive(f"File exceeds compression ratio of {COMPRESSION_RATIO_THRESHOLD}")
    if any(i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for i in infos):
        raise InvalidArchive("File does not use a supported compression type")
    if len(infos) > MAX_MEMBERS:
        raise InvalidArchive(f"ZIP archive not accepted: More than {MAX_MEMBERS} members.")
    # bytes before the first member make a polyglot possible (another format's header first)
    if infos and min(info.header_offset for info in infos) != 0:
        raise InvalidArchive("ZIP archive not accepted: Data before the first member.")
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            # readers disagree on which copy wins
            raise InvalidArchive(
                f"ZIP archive not accepted: Duplicate member {_shown(info.filename)}."
            )
        seen.add(info.filename)
        if _is_unsafe(info.filename):
            raise InvalidArchive(
                f"ZIP archive not accepted: Unsafe member path {_shown(info.filename)}."
            )
        if info.flag_bits & 0x1:
            raise InvalidArchive(
                f"ZIP archive not accepted: Encrypted member {_shown(info.filename)}."
            )
        if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidArchive(
                f"ZIP archive not accepted: Symlink member {_shown(info.filename)}."
            )


def _check_one_dist_info(archive: zipfile.ZipFile, filename: str) -> None:
    """pip refuses a wheel with two .dist-info directories (one for another project would also
    claim that project's installed files), so it is never stored. Read as pip reads it: any
    top-level name ending in .dist-info counts."""
    tops = {member.split("/", 1)[0] for member in archive.NameToInfo}
    found = sorted(top for top in tops if top.endswith(".dist-info"))
    if len(found) > 1:
        shown = ", ".join(_shown(top) for top in found[:5]) + (", ..." if len(found) > 5 else "")
        raise InvalidWheelContents(
            f"Wheel '{filename}' has more than one .dist-info directory ({shown}); installers "
            "take only wheels with exactly one."
        )


def check_wheel(path: Path, filename: str) -> None:
    """Structural checks of a wheel: a sound zip, sane members, one .dist-info, a WHEEL file."""
    with _open_zip(path) as archive:
        _check_zip_members(archive, path.stat().st_size)
        _check_one_dist_info(archive, filename)
        target = f"{_dist_info(filename, archive)}/WHEEL"
        if target not in archive.NameToInfo:
            raise InvalidArchive(f"WHEEL not found at {target}")


def _read_zip_member(archive: zipfile.ZipFile, member: str, limit: int) -> bytes:
    info = archive.getinfo(member)
    if info.file_size > limit:
        raise InvalidArchive(f"{member} is larger than {limit // MIB} MiB")
    try:
        with archive.open(info) as stream:
            return _read_capped(stream, limit, member)
    except NotImplementedError as exc:  # e.g. "compressed patched data (flag bit 5)"
        raise InvalidArchive(
            f"ZIP archive not accepted: Member {_shown(member)} uses {exc}, which is not"
            " supported."
        ) from None
    except (zipfile.BadZipFile, *_CORRUPT):
        raise InvalidArchive(
            f"ZIP archive not accepted: Corrupt member {_shown(member)}."
        ) from None


def _check_entry_points(text: str) -> bool:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
    try:
        parser.read_string(text)
    except configparser.Error:
        return False
    return all(
        _ENTRY_POINT_VALUE.fullmatch(value.strip())
        for section in parser.sections()
        for value in parser[section].values()
    )


def wheel_core_metadata(path: Path, filename: str) -> bytes:
    """RECORD present, entry points sound, and the exact METADATA bytes (call check_wheel first)."""
    with _open_zip(path) as archive:
        dist_info = _dist_info(filename, archive)
        names = archive.NameToInfo
        record = f"{dist_info}/RECORD"
        if record not in names:
            raise InvalidWheelContents(
                f"Wheel '{filename}' does not contain the required RECORD file: {record}"
            )
        entry_points = f"{dist_info}/entry_points.txt"
        if entry_points in names:
            try:
                raw = _read_zip_member(archive, entry_points, MAX_ENTRY_POINTS_BYTES)
                sound = _check_entry_points(raw.decode("utf-8"))
            except (InvalidArchive, UnicodeDecodeError):
                sound = False
            if not sound:
                raise InvalidWheelContents(
                    f"Wheel '{filename}' has invalid entry points defined in the "
                    "entry_points.txt file"
                )
        metadata = f"{dist_info}/METADATA"
        if metadata not in names:
            raise InvalidWheelContents(
                f"Wheel '{filename}' does not contain the required METADATA file: {metadata}"
            )
        return _read_zip_member(archive, metadata, MAX_CORE_METADATA_BYTES)


# ---------------------------------------------------------------------------------------- sdists


class _RatioExceeded(Exception):
    pass


class _GuardedGzip:
    """A decompressing reader that stops once the output is a bomb relative to the input size."""

    def __init__(self, raw: IO[bytes], compressed_size: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._compressed_size = compressed_size
        self.decompressed = 0

    def read(self, size: int = -1) -> bytes:
        data = self._gzip.read(size if size >= 0 else _CHUNK)
        self.decompressed += len(data)
        if _exceeds_ratio(self.decompressed, self._compressed_size):
            raise _RatioExceeded
        return data

    def drain(self) -> None:
        """Read to the end so a bad CRC, truncation or a late bomb is noticed."""
        while self.read(_CHUNK):
            pass


def _tar_member_problem(info: tarfile.TarInfo) -> str | None:
    if _is_unsafe(info.name):
        return f"Unsafe member path {_shown(info.name)}."
    if info.issparse():
        return "Sparse members are not allowed."
    if info.issym() or info.islnk():
        return f"Link member {_shown(info.name)} is not allowed."
    if not (info.isreg() or info.isdir()):
        return f"Special member {_shown(info.name)} is not allowed."
    return None


_TRUNCATED_TAR: Final = "tar archive not accepted: The archive is truncated or corrupt."


def _first_header_problem(path: Path) -> str | None:
    with path.open("rb") as raw:
        magic = raw.read(2)
    try:
        is_tar = tarfile.is_tarfile(path)
    except (tarfile.TarError, *_CORRUPT):  # it reads the first header: a cut gzip stream raises
        return _TRUNCATED_TAR
    if not is_tar:
        return "File is not a tarfile"
    if magic != _GZIP_MAGIC:
        return "tar archive not accepted: The archive is not gzip-compressed."
    if zipfile.is_zipfile(path):
        return "File is both a zip and a tar file"
    return None


def sdist_core_metadata(path: Path) -> bytes:
    """Check a .tar.gz sdist in one streaming pass and return its `{top}/PKG-INFO` bytes."""
    if (problem := _first_header_problem(path)) is not None:
        raise InvalidArchive(problem)
    top_levels: set[str] = set()
    nested_tops: set[str] = set()  # top-level names that are directories (have members below)
    seen: set[str] = set()
    pkg_info: dict[str, bytes] = {}  # top -> PKG-INFO bytes
    with path.open("rb") as raw:
        stream = _GuardedGzip(raw, path.stat().st_size)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
                for count, info in enumerate(archive, start=1):
                    if count > MAX_MEMBERS:
                        raise InvalidArchive(
                            f"tar archive not accepted: More than {MAX_MEMBERS} members."
                        )
                    if (problem := _tar_member_problem(info)) is not None:
                        raise InvalidArchive(f"tar archive not accepted: {problem}")
                    name = info.name.removeprefix("./").rstrip("/")
                    if name in ("", "."):
                        continue
                    if name in seen and not info.isdir():
                        raise InvalidArchive(
                            f"tar archive not accepted: Duplicate member {_shown(info.name)}."
                        )
                    seen.add(name)
                    top, sep, rest = name.partition("/")
                    top_levels.add(top)
                    if sep or info.isdir():
                        nested_tops.add(top)
                    if rest == "PKG-INFO" and info.isreg():
                        extracted = archive.extractfile(info)
                        assert extracted is not None  # regular members always extract
                        pkg_info[top] = _read_capped(extracted, MAX_CORE_METADATA_BYTES, name)
                stream.drain()
        except _RatioExceeded:
            raise InvalidArchive(
                f"File exceeds compression ratio of {COMPRESSION_RATIO_THRESHOLD}"
            ) from None
        except (tarfile.TarError, *_CORRUPT):
            raise InvalidArchive(_TRUNCATED_TAR) from None
    if len(top_levels) != 1 or not nested_tops:
        raise InvalidArchive("Incorrect number of top-level directories in sdist")
    (top,) = top_levels
    if top not in pkg_info:
        raise InvalidArchive(f"PKG-INFO not found at {top}/PKG-INFO")
    return pkg_info[top]


def read_core_metadata(path: Path, filename: str) -> bytes:
    """All checks for `filename` (a .whl or .tar.gz) and its core metadata bytes."""
    if filename.endswith(".whl"):
        check_wheel(path, filename)
        return wheel_core_metadata(path, filename)
    if filename.endswith(".tar.gz"):
        return sdist_core_metadata(path)
    raise InvalidArchive("Only .whl and .tar.gz files are read")
