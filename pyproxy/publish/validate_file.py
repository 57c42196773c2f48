"""Validation of an uploaded file against its validated form, in the public index's order and
with its messages: its name, content type and digests, then the archive itself (`archives`), then
its own metadata against the form. Pure but for reading the received temp file."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from packaging.metadata import InvalidMetadata, Metadata, parse_email
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from pyproxy.model import valid_name
from pyproxy.publish import archives
from pyproxy.publish.rejections import UploadRejected
from pyproxy.publish.validate import UploadForm, overlong_number

__all__ = ["ValidatedFile", "validate_file"]


@dataclass(frozen=True)
class ValidatedFile:
    filename: str
    filetype: str
    version: str  # str(Version(...)) of the release
    core_metadata: bytes  # exact METADATA / PKG-INFO bytes (PEP 658)
    requires_python: str | None  # from the file's metadata, falling back to the form
    summary: str | None


_DIST_FILE: Final = re.compile(
    r".+?(?P<extension>\.(tar\.gz|zip|whl))\Z", re.IGNORECASE | re.DOTALL
)
_EXTENSIONS: Final = {"sdist": ".tar.gz", "bdist_wheel": ".whl"}
_PEP_527: Final = "https://www.python.org/dev/peps/pep-0527"
_MAX_FILENAME_BYTES: Final = 255  # what common filesystems allow for one path component


def _check_filename(filename: str, filetype: str) -> None:
    if re.search(r"[\x00-\x1f\x7f]", filename):
        raise UploadRejected(
            "Cannot upload a file with non-printable characters (ordinals 0-31) or the DEL "
            "character (ordinal 127) in the name."
        )
    try:
        encoded = filename.encode("utf-8")
    except UnicodeEncodeError:  # aiohttp keeps a byte that is not UTF-8 as a lone surrogate
        raise UploadRejected("Cannot upload a file whose name is not valid UTF-8.") from None
    if "/" in filename or "\\" in filename:
        raise UploadRejected("Cannot upload a file with '/' or '\\' in the name.")
    if len(encoded) > _MAX_FILENAME_BYTES:
        raise UploadRejected(f"Filename is too long: '{filename}'")
    match = _DIST_FILE.match(filename)
    if match is None:
        raise UploadRejected(
            f"Invalid file extension: Use .tar.gz or .whl extension. See {_PEP_527} and "
            "https://peps.python.org/pep-0715/ for more information"
        )
    extension = match.group("extension")
    if extension.lower() == ".zip":
        raise UploadRejected(
            "Invalid file extension: pyproxy accepts sdists only as .tar.gz, not .zip. See "
            "https://peps.python.org/pep-0625/ for more information."
        )
    if extension != _EXTENSIONS[filetype]:
        raise UploadRejected(
            f"Invalid file extension: Extension {extension} is invalid for filetype "
            f"{filetype}. See {_PEP_527} for more information."
        )


def _check_content_type(content_type: str | None) -> None:
    # uv publish sends the file part with no Content-Type (multipart then means text/plain,
    # which the public index accepts too); only image/* is a sign of the wrong file
    if content_type and content_type.strip().lower().startswith("image/"):
        raise UploadRejected("Invalid distribution file.")


def _check_digests(supplied: Mapping[str, str], computed: Mapping[str, str]) -> None:
    """computed must hold every algorithm of `_DIGEST_FIELDS` (the handler hashes all three)."""
    for algorithm, value in supplied.items():
        if not hmac.compare_digest(value.lower(), computed[algorithm].lower()):
            raise UploadRejected(
                "The digest supplied does not match a digest calculated from the uploaded file."
            )


def _check_wheel_name(form: UploadForm, filename: str) -> None:
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise UploadRejected(str(exc)) from None
    normalized = form.project.replace("-", "_")
    if name != form.project:
        raise UploadRejected(f"Start filename for {form.name!r} with {normalized!r}.")
    # Unlike the public index, a name part that is not yet normalised ("Foo_Bar-1.0-…",
    # as setuptools wrote before 75.8) is accepted: installers compare canonical names, and a
    # private index must take a company's existing wheels.
    if Version(form.version) != version:
        raise UploadRejected(
            f"Version in filename should be {str(Version(form.version))!r} not {str(version)!r}."
        )


def _check_sdist_name(form: UploadForm, filename: str) -> None:
    """The name part must normalise to the project, the version part must be the release.

    Unlike the public index today, a name part not spelled as PEP 625 wants ("my-pkg-1.0.tar.gz",
    "My.Pkg-1.0.tar.gz", as setuptools wrote before 69.3) is accepted and kept, as that index did
    for years. The version part must be the normalised release (which has no '-'), so every
    reader of filenames agrees on it: installers and `model.version_of` take what follows the
    name and its '-', older readers what follows the last '-'.
    """
    try:
        parse_sdist_filename(filename)
    except InvalidSdistFilename:
        raise UploadRejected(f"Invalid source distribution filename: {filename}") from None
    release = Version(form.version)
    normalized = form.project.replace("-", "_")
    expected = f"{normalized}-{release}.tar.gz"
    name_part, _, version_part = filename.removesuffix(".tar.gz").rpartition("-")
    # "foo-1.0-1.tar.gz" (a post release spelled with '-') names foo, wrongly spelled
    if release.is_postrelease and canonicalize_name(name_part) != form.project:
        candidate = name_part.rpartition("-")[0]
        if canonicalize_name(candidate) == form.project:
            name_part = candidate
    if canonicalize_name(name_part) != form.project:
        raise UploadRejected(f"Start filename for {form.name!r} with {normalized!r}.")
    # ASCII only: canonicalize_name lower-cases, so "\u212aelvin" (Kelvin sign) would pass
    if not valid_name(name_part) or version_part != str(release):
        raise UploadRejected(f"Filename {filename!r} is invalid, should be {expected!r}.")


def _read_archive(form: UploadForm, filename: str, path: Path) -> bytes:
    """Archive checks and filename checks interleaved as the public index runs them."""
    try:
        if form.filetype == "bdist_wheel":
            archives.check_wheel(path, filename)
            _check_wheel_name(form, filename)
            return archives.wheel_core_metadata(path, filename)
        core_metadata = archives.sdist_core_metadata(path)
        _check_sdist_name(form, filename)
        return core_metadata
    except archives.InvalidWheelContents as exc:
        raise UploadRejected(exc.message) from None
    except archives.InvalidArchive as exc:
        raise UploadRejected(f"Invalid distribution file. {exc.message}") from None


@dataclass(frozen=True)
class _FileFacts:
    requires_python: str | None
    summary: str | None


def _file_metadata(form: UploadForm, filename: str, core_metadata: bytes) -> _FileFacts:
    """The file's own name and version must be the form's: pip refuses a mismatch at install."""
    raw, _unparsed = parse_email(core_metadata)
    meta = Metadata.from_raw(raw, validate=False)  # only the fields used here are validated
    # packaging would raise a bare ValueError for these
    for field, value in (("version", raw.get("version")),
                         ("requires-python", raw.get("requires_python"))):
        if value is not None and (why := overlong_number(value)) is not None:
            raise UploadRejected(
                f"The metadata in {filename!r} is invalid: its {field!r} cannot be read ({why})."
            )
    try:
        name, version = meta.name, meta.version
        meta.requires_python  # noqa: B018  # validates; it is served as data-requires-python
    except InvalidMetadata as exc:
        raise UploadRejected(f"The metadata in {filename!r} is invalid: {exc}.") from None
    if canonicalize_name(name) != form.project or version != Version(form.version):
        raise UploadRejected(
            f"The metadata in {filename!r} names {name!r} {raw.get('version')}, but the upload "
            f"form says {form.name!r} {form.version}."
        )
    try:
        summary = meta.summary
    except InvalidMetadata:  # only displayed: the form's validated one will do
        summary = None
    return _FileFacts(requires_python=raw.get("requires_python"), summary=summary)


def validate_file(
    form: UploadForm,
    filename: str,
    content_type: str | None,
    path: Path,
    computed: Mapping[str, str],
) -> ValidatedFile:
    """Check the received file against the validated form.

    computed: hex digests the handler took while streaming, keys "sha256", "blake2_256", "md5".
    """
    _check_filename(filename, form.filetype)
    _check_content_type(content_type)
    _check_digests(form.digests, computed)
    core_metadata = _read_archive(form, filename, path)
    facts = _file_metadata(form, filename, core_metadata)
    return ValidatedFile(
        filename=filename,
        filetype=form.filetype,
        version=str(Version(form.version)),
        core_metadata=core_metadata,
        requires_python=facts.requires_python or form.requires_python,
        summary=facts.summary or form.summary,
    )
