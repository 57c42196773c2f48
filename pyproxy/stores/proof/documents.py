"""The proof of core metadata (`.metadata`) and of a PEP 740 provenance object: see
stores.proof."""

from __future__ import annotations

import json
import re
from typing import BinaryIO, Final

from packaging.metadata import parse_email
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pyproxy.stores.proof.reading import Unproven

__all__ = [
    "MAX_METADATA_BYTES", "MAX_PROVENANCE_BYTES", "check_metadata", "check_metadata_names",
    "check_provenance",
]

MAX_METADATA_BYTES: Final = 10 * 1024 * 1024  # as an upload's core metadata
_METADATA_VERSION = re.compile(r"\d+\.\d+")


def check_metadata(file: BinaryIO, size: int) -> None:
    file.seek(0)
    data = file.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise Unproven(f"core metadata larger than {MAX_METADATA_BYTES // (1024 * 1024)} MiB")
    try:
        raw, _unparsed = parse_email(data)
    except ValueError as exc:
        raise Unproven(f"not core metadata: {exc}") from None
    version = raw.get("metadata_version")
    if not version or not _METADATA_VERSION.fullmatch(version):
        raise Unproven("not core metadata: no Metadata-Version")
    if not raw.get("name"):
        raise Unproven("not core metadata: no Name")


def check_metadata_names(wheel: str, file: BinaryIO) -> None:
    """pip and uv refuse metadata of another project or version than the wheel's: kept, such a
    body would stop every install of it until it is removed by hand."""
    try:
        name, version, _build, _tags = parse_wheel_filename(wheel)
    except (InvalidWheelFilename, InvalidVersion):
        return  # not a wheel's name: nothing to compare with
    file.seek(0)
    raw, _unparsed = parse_email(file.read(MAX_METADATA_BYTES))
    said_name, said_version = str(raw.get("name", "")), str(raw.get("version", ""))
    if canonicalize_name(said_name) != name:
        raise Unproven(f"the core metadata of project {said_name!r}, not of {name!r}")
    try:
        same = Version(said_version) == version
    except InvalidVersion:
        same = False
    if not same:
        raise Unproven(f"the core metadata of version {said_version!r}, not of {str(version)!r}")


MAX_PROVENANCE_BYTES: Final = 1024 * 1024  # a few attestations are some kilobytes


def check_provenance(file: BinaryIO, size: int) -> None:
    """A PEP 740 provenance object: JSON, version 1, with a list of attestation bundles."""
    file.seek(0)
    data = file.read(MAX_PROVENANCE_BYTES + 1)
    if len(data) > MAX_PROVENANCE_BYTES:
        raise Unproven(f"a provenance object larger than {MAX_PROVENANCE_BYTES // 1024} KiB")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise Unproven(f"not a provenance object: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("version") != 1:
        raise Unproven("not a provenance object: no \"version\": 1")
    if not isinstance(document.get("attestation_bundles"), list):
        raise Unproven("not a provenance object: no \"attestation_bundles\" list")
