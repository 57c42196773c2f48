"""Validation of a legacy (twine) upload, in the public index's order and with its messages.

Pure: no aiohttp and no store; the only I/O is reading the already-received temp file through
`archives`. The upload handler and `publish.service` call, in this order:

1. `validate_form(fields)` with every non-file multipart field (a `:action` sent in the query
   string merged in). Before it: a non-`content` field sent as a file part -> `file_part_rejected`.
2. no `content` part -> `missing_file()`.
3. stream `content` to a temp file computing sha256/blake2_256/md5, then
   `validate_file(form, filename, content_type, path, computed)`.

Policies of this private index (the public one differs): local versions (`1.0+local`), direct-URL
Requires-Dist and any platform tag are allowed; classifiers, e-mail addresses and URLs are not
checked; only `.whl` and `.tar.gz` are accepted. Every message is one line (HTTP reason phrase).
"""

from __future__ import annotations

import hmac
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from packaging.metadata import InvalidMetadata, Metadata, RawMetadata, parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from pyproxy.model import NormalizedName, normalize, valid_name
from pyproxy.publish import archives

__all__ = [
    "MAX_FORM_BYTES",
    "UploadForm",
    "UploadRejected",
    "ValidatedFile",
    "file_part_rejected",
    "form_too_large",
    "missing_file",
    "reason_phrase",
    "validate_file",
    "validate_form",
]

CORE_METADATA_HELP: Final = "https://packaging.python.org/specifications/core-metadata"
# pyproxy's own limit on the form's fields together: the long description is most of it (the
# core metadata cap in `archives` leaves room for a description this large)
MAX_FORM_BYTES: Final = 16 * 1024 * 1024
_MAX_MESSAGE: Final = 1000


def _one_line(text: str) -> str:
    """Control characters escaped (aiohttp refuses CR/LF in a reason), length bounded."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def reason_phrase(text: str) -> str:
    """`text` as an HTTP reason phrase must be: ISO-8859-1, unmappable characters as '?'."""
    return text.encode("iso-8859-1", "replace").decode("iso-8859-1")


class UploadRejected(Exception):
    """message: one line, safe for an HTTP reason phrase; status: 400 unless said otherwise;
    kind: why, as a label of metrics.UPLOAD_REJECTIONS (None: not yet known; the web handler
    counts it as "malformed"). Whoever knows the most specific kind sets it first."""

    def __init__(self, message: str, status: int = 400, *, kind: str | None = None) -> None:
        message = _one_line(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind

    @property
    def reason(self) -> str:
        return reason_phrase(self.message)


def file_part_rejected(field: str) -> UploadRejected:
    """A field other than `content`/`gpg_signature` arrived as a file part."""
    return UploadRejected(f"{field}: Should not be a tuple.")


def missing_file() -> UploadRejected:
    return UploadRejected("Upload payload does not have a file.")


def form_too_large() -> UploadRejected:
    """The fields other than the file passed MAX_FORM_BYTES."""
    return UploadRejected(
        "Metadata too large. The upload form's fields (the description included) may hold at"
        f" most {MAX_FORM_BYTES // (1024 * 1024)} MiB together.",
        kind="too_large",
    )


@dataclass(frozen=True)
class UploadForm:
    name: str  # as sent (twine's safe_name)
    project: NormalizedName
    version: str  # as sent, validated
    filetype: str  # "sdist" | "bdist_wheel"
    pyversion: str
    digests: Mapping[str, str]  # supplied: "sha256" / "blake2_256" / "md5" -> lowercase hex
    requires_python: str | None
    summary: str | None
    fields: Mapping[str, tuple[str, ...]]  # every metadata field after sanitising, form names


@dataclass(frozen=True)
class ValidatedFile:
    filename: str
    filetype: str
    version: str  # str(Version(...)) of the release
    core_metadata: bytes  # exact METADATA / PKG-INFO bytes (PEP 658)
    requires_python: str | None  # from the file's metadata, falling back to the form
    summary: str | None


# ------------------------------------------------------------------------------------------ form

_ACTION: Final = ":action"
_GONE_ACTIONS: Final = {
    "submit": "Project pre-registration is no longer required or supported, upload your files "
    "instead.",
    "submit_pkg_info": "Project pre-registration is no longer required or supported, upload "
    "your files instead.",
    "doc_upload": "Uploading documentation is no longer supported, we recommend using "
    "https://readthedocs.org/.",
}
_HEX_256: Final = re.compile(r"[A-Fa-f0-9]{64}")
_HEX_128: Final = re.compile(r"[A-Fa-f0-9]{32}")
_FILETYPES: Final = ("sdist", "bdist_wheel")
_DIGEST_FIELDS: Final = {
    "sha256": "sha256_digest",
    "blake2_256": "blake2_256_digest",
    "md5": "md5_digest",
}

# RawMetadata key -> form field name (twine renames a few), and each key's kind
_RAW_TYPES: Final = typing.get_type_hints(RawMetadata)
_FORM_RENAMES: Final = {
    "platforms": "platform",
    "supported_platforms": "supported_platform",
    "license_files": "license_file",
    "import_names": "import_name",
    "import_namespaces": "import_namespace",
}
_FORM_TO_RAW: Final = {_FORM_RENAMES.get(raw, raw): raw for raw in _RAW_TYPES}
# fields whose errors hide the others (Warehouse's order)
_ERROR_ORDER: Final = ("metadata-version", "name", "version")
_SUMMARY_LIMIT: Final = 512


def _as_lists(fields: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Every value of every field; a multidict (has `getall`) yields each key once per value."""
    getall = getattr(fields, "getall", None)
    if getall is not None:
        return {key: [str(v) for v in getall(key)] for key in dict.fromkeys(fields.keys())}
    # a lone string is one value, not a sequence of characters
    return {key: [v] if isinstance(v, str) else list(v) for key, v in fields.items()}


def _sanitised(fields: dict[str, list[str]]) -> dict[str, list[str]]:
    """distutils wrote "UNKNOWN" for absent values: drop those; escape NUL like Warehouse."""
    clean: dict[str, list[str]] = {}
    for key, values in fields.items():
        kept = [v.replace("\x00", "\\x00") for v in values if v.strip() != "UNKNOWN"]
        if kept:
            clean[key] = kept
    return clean


def _first(fields: Mapping[str, list[str]], key: str) -> str | None:
    values = fields.get(key)
    return values[0] if values else None


def _check_action(fields: dict[str, list[str]]) -> None:
    action = _first(fields, _ACTION)
    if not action:
        raise UploadRejected("Missing ':action' field.")
    if action in _GONE_ACTIONS:
        raise UploadRejected(_GONE_ACTIONS[action], status=410)
    if action != "file_upload":
        shown = action if len(action) <= 60 else action[:60] + "..."
        raise UploadRejected(f"Unsupported ':action' field: {shown!r}.")


def _form_field_errors(fields: Mapping[str, list[str]]) -> dict[str, str]:
    """Per-field errors of Warehouse's UploadForm (wtforms: first value of each field)."""
    errors: dict[str, str] = {}
    name = _first(fields, "name")
    if not name:
        errors["name"] = "This field is required."
    elif not valid_name(name):
        errors["name"] = (
            "Start and end with a letter or numeral containing only ASCII numeric and "
            "'.', '_' and '-'."
        )
    filetype = _first(fields, "filetype")
    if not filetype:
        errors["filetype"] = "This field is required."
    elif filetype not in _FILETYPES:
        errors["filetype"] = "Use a known file type."
    # the public index leaves md5 unchecked (and fails on a non-ASCII one): checked like the rest
    for field, label, pattern in (
        ("sha256_digest", "SHA256", _HEX_256),
        ("blake2_256_digest", "BLAKE2", _HEX_256),
        ("md5_digest", "MD5", _HEX_128),
    ):
        value = (_first(fields, field) or "").strip()
        if value and not pattern.fullmatch(value):
            errors[field] = f"Use a valid, hex-encoded, {label} message digest."
    return errors


def _form_error_message(fields: Mapping[str, list[str]], errors: dict[str, str]) -> str:
    field = "name" if "name" in errors else sorted(errors)[0]
    if field == "name":  # the one field with a description: Warehouse quotes the value
        value = _first(fields, "name") or ""
        shown = value[:30] + "..." + value[-30:] if len(value) > 60 else value
        return (
            f"{shown!r} is an invalid value for Name. Error: {errors[field]} "
            f"See {CORE_METADATA_HELP} for more information."
        )
    return f"Invalid value for {field}. Error: {errors[field]}"


def _check_form(fields: dict[str, list[str]]) -> tuple[str, str, dict[str, str]]:
    """pyversion, filetype and the supplied digests, or the first form error."""
    if errors := _form_field_errors(fields):
        raise UploadRejected(_form_error_message(fields, errors))
    filetype = _first(fields, "filetype")
    pyversion = _first(fields, "pyversion") or ""
    if filetype == "bdist_wheel" and not pyversion:
        raise UploadRejected(
            "Invalid value for pyversion. Error: Python version is required for binary "
            "distribution uploads."
        )
    if filetype == "sdist":
        if not pyversion:
            pyversion = "source"
        elif pyversion != "source":
            raise UploadRejected(
                "Invalid value for pyversion. Error: Use 'source' as Python version for an sdist."
            )
    digests = {
        algorithm: value.strip().lower()
        for algorithm, field in _DIGEST_FIELDS.items()
        if (value := _first(fields, field)) and value.strip()
    }
    if not digests:
        raise UploadRejected("Error: Include at least one message digest.")
    return pyversion, filetype or "", digests


# -------------------------------------------------------------------------------------- metadata


def _project_urls(values: list[str]) -> dict[str, str] | None:
    """ "Label, URL" strings as a mapping; None when a label repeats."""
    urls: dict[str, str] = {}
    for value in values:
        label, _, url = value.partition(",")
        if label.strip() in urls:
            return None
        urls[label.strip()] = url.strip()
    return urls


def _raw_metadata(fields: Mapping[str, list[str]]) -> tuple[RawMetadata, list[InvalidMetadata]]:
    """Form fields as RawMetadata (Warehouse's parse_form_metadata); unparsable ones as errors."""
    raw: dict[str, object] = {}
    errors: list[InvalidMetadata] = []
    for key, values in fields.items():
        raw_key = _FORM_TO_RAW.get(key)
        if raw_key is None or values == [""]:  # not metadata, or empty meaning absent
            continue
        kind = _RAW_TYPES[raw_key]
        if kind is str and len(values) == 1:
            raw[raw_key] = values[0]
        elif raw_key == "keywords" and len(values) == 1:
            raw[raw_key] = [k.strip() for k in values[0].split(",")]
        elif raw_key == "project_urls" and (urls := _project_urls(values)) is not None:
            raw[raw_key] = urls
        elif kind == list[str] and raw_key != "keywords":
            raw[raw_key] = list(values)
        else:
            errors.append(InvalidMetadata(key, f"{key!r} has invalid data"))
    return typing.cast(RawMetadata, raw), errors


def _policy_errors(meta: Metadata) -> list[InvalidMetadata]:
    """The public index's extra rules that a private index keeps."""
    errors: list[InvalidMetadata] = []
    if meta.summary is not None and len(meta.summary) > _SUMMARY_LIMIT:
        errors.append(
            InvalidMetadata(
                "summary", f"'summary' field must be {_SUMMARY_LIMIT} characters or less."
            )
        )
    for label, url in (meta.project_urls or {}).items():
        if not label:
            errors.append(InvalidMetadata("project-url", "Must have a label"))
        elif len(label) > 32:
            errors.append(
                InvalidMetadata("project-url", f"{label!r} must be 32 characters or less.")
            )
        elif not url:
            errors.append(InvalidMetadata("project-url", "Must have a URL"))
    for field, values in (
        ("provides-dist", meta.provides_dist),
        ("obsoletes-dist", meta.obsoletes_dist),
    ):
        for value in values or ():
            try:
                Requirement(value)
            except InvalidRequirement as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else "invalid requirement"
                errors.append(InvalidMetadata(field, f"{value!r} is invalid: {first_line}"))
    if meta.license and meta.license_expression:
        errors.append(
            InvalidMetadata(
                "license",
                "License is deprecated when License-Expression is present. Only "
                "License-Expression should be present.",
            )
        )
    return errors


def _metadata_error_message(errors: Sequence[InvalidMetadata]) -> str:
    by_field: dict[str, list[InvalidMetadata]] = {}
    for error in errors:
        by_field.setdefault(error.field, []).append(error)
    field = next((f for f in _ERROR_ORDER if f in by_field), None) or sorted(by_field)[0]
    text = str(by_field[field][0])
    return (
        f"{text}{'' if text.endswith('.') else '.'} See {CORE_METADATA_HELP} for more information."
    )


def _check_metadata(fields: Mapping[str, list[str]]) -> Metadata:
    raw, errors = _raw_metadata(fields)
    if errors:
        raise UploadRejected(_metadata_error_message(errors))
    try:
        meta = Metadata.from_raw(raw)
    except ExceptionGroup as group:
        found = [e for e in group.exceptions if isinstance(e, InvalidMetadata)]
        if not found:
            raise
        raise UploadRejected(_metadata_error_message(found)) from None
    if errors := _policy_errors(meta):
        raise UploadRejected(_metadata_error_message(errors))
    return meta


def validate_form(fields: Mapping[str, Sequence[str]]) -> UploadForm:
    """Check the form fields (everything but the file) as the public index orders its checks.

    fields: a mapping of name -> values (a lone str counts as one value) or a multidict.
    """
    given = _as_lists(fields)
    _check_action(given)
    clean = _sanitised(given)
    if any(value != "1" for value in clean.get("protocol_version", ())):
        raise UploadRejected("Unknown protocol version.")
    pyversion, filetype, digests = _check_form(clean)
    meta = _check_metadata(clean)
    name = clean["name"][0]  # present: the form check requires it
    return UploadForm(
        name=name,
        project=normalize(name),
        version=clean["version"][0],  # present: the metadata check requires it
        filetype=filetype,
        pyversion=pyversion,
        digests=digests,
        requires_python=clean["requires_python"][0] if "requires_python" in clean else None,
        summary=meta.summary,
        fields={key: tuple(values) for key, values in clean.items() if key in _FORM_TO_RAW},
    )


# ------------------------------------------------------------------------------------------ file

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
    if "/" in filename or "\\" in filename:
        raise UploadRejected("Cannot upload a file with '/' or '\\' in the name.")
    if len(filename.encode("utf-8", "surrogatepass")) > _MAX_FILENAME_BYTES:
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
    for years. The version part must be the normalised release: every reader of filenames
    (`model.version_of`, installers) takes the version after the last '-'.
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
