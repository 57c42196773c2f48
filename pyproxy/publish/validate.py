"""Validation of a legacy (twine) upload, in the public index's order and with its messages.

Pure: no aiohttp and no store; the only I/O is reading the already-received temp file through
`archives`. The upload handler and `publish.service` call, in this order:

1. `validate_form(fields)` with every non-file multipart field (a `:action` sent in the query
   string merged in). Before it: a non-`content` field sent as a file part -> `file_part_rejected`.
2. no `content` part -> `missing_file()`.
3. stream `content` to a temp file computing sha256/blake2_256/md5, then
   `validate_file(form, filename, content_type, path, computed)` (publish/validate_file.py).

The refusals themselves are publish/rejections.py.

Policies of this private index (the public one differs): local versions (`1.0+local`), direct-URL
Requires-Dist and any platform tag are allowed; classifiers, e-mail addresses and URLs are not
checked; only `.whl` and `.tar.gz` are accepted. Every message is one line (HTTP reason phrase).
"""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from packaging.metadata import InvalidMetadata, Metadata, RawMetadata
from packaging.requirements import InvalidRequirement, Requirement

from pyproxy.model import NormalizedName, normalize, valid_name
from pyproxy.publish.rejections import UploadRejected

__all__ = ["UploadForm", "overlong_number", "validate_form"]

CORE_METADATA_HELP: Final = "https://packaging.python.org/specifications/core-metadata"


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
# fields holding version numbers: a number past int()'s digit limit (sys.get_int_max_str_digits,
# 4300 by default) makes packaging's parsers raise a bare ValueError, here or when read later
_VERSION_FIELDS: Final = ("version", "requires_python", "requires_dist", "provides_dist",
                          "obsoletes_dist")


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


def _shortened(value: str) -> str:
    """A value quoted in a message: a long one by its ends."""
    return value[:30] + "..." + value[-30:] if len(value) > 60 else value


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
        shown = _shortened(_first(fields, "name") or "")
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


def overlong_number(text: str) -> str | None:
    """Why `text` (a version or a specifier) cannot be read: a run of digits longer than Python
    converts to an int (the parsers of versions raise a bare ValueError); None if it can be."""
    limit = sys.get_int_max_str_digits()
    if limit and re.search(f"[0-9]{{{limit + 1},}}", text):
        return f"a number in it has more than {limit} digits"
    return None


def _overlong_numbers(raw: RawMetadata) -> dict[str, InvalidMetadata]:
    """RawMetadata key -> its error, for the version fields packaging cannot parse (it would
    raise a bare ValueError)."""
    errors: dict[str, InvalidMetadata] = {}
    given = typing.cast(Mapping[str, "str | list[str]"], raw)
    for key in _VERSION_FIELDS:
        value = given.get(key, ())
        for text in [value] if isinstance(value, str) else value:
            if (why := overlong_number(text)) is not None:
                field = key.replace("_", "-")  # packaging's name for it, as in its messages
                message = f"{_shortened(text)!r} is invalid for {field!r}: {why}"
                errors[key] = InvalidMetadata(field, message)
                break
    return errors


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
    # left out of the parse (which would raise a bare ValueError), then reported in its order
    overlong = _overlong_numbers(raw)
    parsed = typing.cast(RawMetadata, {k: v for k, v in raw.items() if k not in overlong})
    try:
        meta = Metadata.from_raw(parsed)
    except ExceptionGroup as group:
        found = [e for e in group.exceptions if isinstance(e, InvalidMetadata)]
        if not found:
            raise
        # without it, "'version' is a required field": the error is the dropped value's
        dropped = {error.field for error in overlong.values()}
        found = [e for e in found if e.field not in dropped] + list(overlong.values())
        raise UploadRejected(_metadata_error_message(found)) from None
    if overlong:
        raise UploadRejected(_metadata_error_message(list(overlong.values())))
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
