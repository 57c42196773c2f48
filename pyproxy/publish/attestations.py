"""PEP 740 attestations sent with an upload (`twine upload --attestations`, `uv publish`): the
`attestations` form field, a JSON list of attestation objects.

Each must have the PEP 740 shape (version 1, verification material with a certificate and
transparency log entries, an envelope with a signature) and its in-toto statement must name
exactly this file: one subject whose filename is the upload's and whose sha256 is the uploaded
bytes', with a predicate type that is an absolute https URI, at most one of each type. That
binds the attestations to the file. What pyproxy cannot check is the signature's identity: private
uploads have no Trusted Publisher to verify against, and Sigstore's trust root is not to be had
offline, so the attestations are kept and served as uploaded (installers do not verify them
yet either). The result is the file's provenance object, served at /integrity/…/provenance.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import orjson
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from pyproxy.publish.rejections import UploadRejected
from pyproxy.stores.proof import MAX_PROVENANCE_BYTES

__all__ = ["PUBLISHER", "provenance_for"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# Predicate types are URIs naming a schema (PEP 740 lists the ones publishers use today); any
# absolute https URI is accepted, so no index's own names are written here and a new type needs
# no release. The binding to the file is what is checked.
_PREDICATE_TYPE = re.compile(r"https://[^\s/?#]+/\S*")
# the bundle's publisher: a private upload has no Trusted Publisher; the kind says who kept it
PUBLISHER: dict[str, Any] = {"kind": "pyproxy", "claims": None}


def _invalid(why: str) -> UploadRejected:
    return UploadRejected(
        f"Invalid attestations supplied during upload: {why}", kind="invalid_file"
    )


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not an object")
    return value


def _base64(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where} is not valid base64") from None


def _identity(filename: str) -> tuple[object, ...]:
    """What a distribution filename names (as pypi-attestations compares subjects): name,
    version and, for a wheel, build and tags; the filename itself when it does not parse."""
    try:
        if filename.endswith(".whl"):
            return tuple(parse_wheel_filename(filename))
        if filename.endswith((".tar.gz", ".zip")):
            return tuple(parse_sdist_filename(filename))
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return (canonicalize_name(filename),)


def _check(attestation: object, index: int, filename: str, sha256: str) -> str:
    """The predicate type of one well-formed attestation of this file."""
    where = f"attestation {index}"
    item = _object(attestation, where)
    if item.get("version") != 1:
        raise _invalid(f"{where}: version is not 1")
    material = _object(item.get("verification_material"), f"{where}: verification_material")
    _base64(material.get("certificate"), f"{where}: the certificate")
    entries = material.get("transparency_entries")
    if not (isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries)):
        raise _invalid(f"{where}: transparency_entries is not a list of log entries")
    envelope = _object(item.get("envelope"), f"{where}: envelope")
    _base64(envelope.get("signature"), f"{where}: the signature")
    try:
        statement = orjson.loads(_base64(envelope.get("statement"), f"{where}: the statement"))
    except orjson.JSONDecodeError:
        raise _invalid(f"{where}: the statement is not JSON") from None
    statement = _object(statement, f"{where}: the statement")
    if statement.get("_type") != STATEMENT_TYPE:
        raise _invalid(f"{where}: the statement is not an in-toto v1 statement")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise _invalid(f"{where}: the statement must have exactly one subject")
    subject = _object(subjects[0], f"{where}: the subject")
    name = subject.get("name")
    if not isinstance(name, str) or _identity(name) != _identity(filename):
        raise _invalid(f"{where}: its subject {name!r} is not the uploaded file {filename!r}")
    digest = _object(subject.get("digest"), f"{where}: the subject's digest")
    if not isinstance(digest.get("sha256"), str) or digest["sha256"].lower() != sha256:
        raise _invalid(f"{where}: its subject's sha256 is not the uploaded file's")
    predicate_type = statement.get("predicateType")
    if not isinstance(predicate_type, str) or not _PREDICATE_TYPE.fullmatch(predicate_type):
        raise _invalid(f"{where}: attestation type {predicate_type!r} is not an https URI")
    return str(predicate_type)


def provenance_for(values: Sequence[str], filename: str, sha256: str) -> bytes | None:
    """The provenance object (JSON) of the attestations in the form field's `values`; None
    when the upload sent none. UploadRejected (400) for anything malformed or not this file's."""
    if not values:
        return None
    if len(values) > 1:
        raise _invalid("the field was sent more than once")
    try:
        attestations = orjson.loads(values[0])
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"not JSON ({exc})") from None
    if not isinstance(attestations, list) or not attestations:
        raise _invalid("expected a non-empty JSON list of attestation objects")
    seen: set[str] = set()
    for index, attestation in enumerate(attestations):
        predicate_type = _check(attestation, index, filename, sha256.lower())
        if predicate_type in seen:
            raise _invalid(f"more than one attestation of type {predicate_type!r}")
        seen.add(predicate_type)
    provenance = orjson.dumps({
        "version": 1,
        "attestation_bundles": [{"publisher": PUBLISHER, "attestations": attestations}],
    })
    if len(provenance) > MAX_PROVENANCE_BYTES:
        raise _invalid(f"larger than {MAX_PROVENANCE_BYTES // 1024} KiB")
    return provenance
