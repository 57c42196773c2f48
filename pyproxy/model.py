"""The shared vocabulary: projects, files, repository errors. No I/O here."""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

__all__ = [
    "DistFile",
    "FileSource",
    "Forbidden",
    "HeldBack",
    "LocalFile",
    "NormalizedName",
    "NotFound",
    "Origin",
    "PrivateCatalog",
    "ProjectList",
    "ProjectPage",
    "ProjectStatus",
    "Repository",
    "RepositoryError",
    "StreamedFile",
    "Unavailable",
    "normalize",
    "valid_name",
    "version_of",
]


# PEP 508 project names. re.ASCII: with IGNORECASE alone, [A-Z] also matches the long s "ſ"
# and the Kelvin sign, which case-fold to ASCII letters
_VALID_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE | re.ASCII)


def valid_name(name: str) -> bool:
    """A PEP 508 project name; anything else cannot exist, here or upstream (and is refused
    for upload)."""
    return _VALID_NAME.fullmatch(name) is not None


def normalize(name: str) -> NormalizedName:
    """PEP 503 normalisation; the only way a raw name becomes a NormalizedName."""
    return canonicalize_name(name)


class Origin(enum.Enum):
    PRIVATE = "private"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class DistFile:
    filename: str
    hashes: Mapping[str, str]  # lowercase algorithm -> lowercase hex
    size: int | None = None
    upload_time: datetime | None = None  # timezone-aware UTC
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str = ""
    # False: no .metadata offered; True: offered, hash unknown; mapping: offered with these hashes
    core_metadata: Mapping[str, str] | bool = False
    # an upstream wheel whose index offers no `.metadata`: pyproxy makes one from the wheel's
    # own METADATA (`core_metadata` True, its sha256 once made; False if the wheel has none)
    metadata_from_wheel: bool = False
    origin: Origin = Origin.PRIVATE
    upstream_url: str | None = None  # only for upstream files: where pyproxy fetches the body
    # PEP 740: a provenance object (the file's attestations) is offered; for an upstream file,
    # `provenance_url` is where pyproxy fetches it
    provenance: bool = False
    provenance_url: str | None = None

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    @property
    def version(self) -> str | None:
        return version_of(self.filename)


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    """PEP 792 project status markers."""

    status: str = "active"  # active | archived | quarantined | deprecated
    reason: str | None = None

    @property
    def offers_files(self) -> bool:
        return self.status != "quarantined"


@dataclass(frozen=True, slots=True)
class ProjectPage:
    name: NormalizedName
    files: tuple[DistFile, ...]
    versions: tuple[str, ...] = ()
    status: ProjectStatus = field(default_factory=ProjectStatus)
    # changes whenever anything a client can see changes; used for rendered-page caching
    revision: str = ""
    # filename -> file, built once: every file request looks its file up on the page
    _by_filename: Mapping[str, DistFile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_filename", {dist.filename: dist for dist in self.files})

    @classmethod
    def build(
        cls,
        name: NormalizedName,
        files: tuple[DistFile, ...],
        *,
        extra_versions: tuple[str, ...] = (),
        status: ProjectStatus | None = None,
        revision: str = "",
    ) -> ProjectPage:
        """A page whose `versions` are those of its files plus any given, without duplicates."""
        seen: dict[str, None] = {}
        for version in (*extra_versions, *(f.version for f in files)):
            if version is not None:
                seen.setdefault(version, None)
        return cls(
            name=name,
            files=files,
            versions=tuple(seen),
            status=status or ProjectStatus(),
            revision=revision,
        )

    def file(self, filename: str) -> DistFile | None:
        return self._by_filename.get(filename)


@dataclass(frozen=True, slots=True)
class ProjectList:
    names: tuple[str, ...]  # display names; clients normalise them
    revision: str = ""


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A complete file on local disk, safe to send with sendfile."""

    path: Path
    size: int
    sha256: str
    # how it was had, for the access log and metrics: "private", "hit" (in the upstream cache)
    cache: str = field(default="-", compare=False)


@dataclass(frozen=True, slots=True)
class StreamedFile:
    """A body that is still arriving (e.g. streamed from upstream while it is cached)."""

    chunks: AsyncIterator[bytes]
    size: int | None
    sha256: str | None
    # "miss" (this request started the download) or "coalesced" (joined one in progress)
    cache: str = field(default="-", compare=False)


FileSource = LocalFile | StreamedFile


class RepositoryError(Exception):
    """Base of the errors a repository raises; the web layer maps each to a status."""


class NotFound(RepositoryError):
    """The project or file does not exist here (HTTP 404)."""


class Unavailable(RepositoryError):
    """It may exist, but cannot be had right now, e.g. upstream is down (HTTP 503)."""


class Forbidden(RepositoryError):
    """It exists, and this repository refuses to serve it (HTTP 403); the message says why."""


class HeldBack(Forbidden):
    """An upstream file that `[policy]` holds back; the message names the rule and when the
    file becomes available."""


class Repository(Protocol):
    async def list_projects(self) -> ProjectList: ...

    async def project_page(self, name: NormalizedName) -> ProjectPage: ...

    async def open_file(self, project: NormalizedName, filename: str) -> FileSource: ...

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource: ...

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        """The PEP 740 provenance object of a file the page offers one for (JSON)."""
        ...


class PrivateCatalog(Protocol):
    """What the web layer reads of the private store beyond the Repository: its names, a
    file's upload form, a project's serial and digests, and who may read the restricted
    projects (rows that access.ReadRestrictions judges: the vocabulary holds no policy)."""

    def list_projects(self) -> ProjectList: ...

    def has_project(self, name: NormalizedName) -> bool: ...

    def file_fields(self, filename: str) -> Mapping[str, Sequence[str]] | None: ...

    def project_serial(self, name: NormalizedName) -> int | None: ...

    def file_digests(self, project: NormalizedName) -> Mapping[str, Mapping[str, str]]: ...

    def restricted_readers(self) -> Mapping[NormalizedName, frozenset[str]]: ...


_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


def version_of(filename: str) -> str | None:
    """The version a distribution filename carries, or None if it cannot be told."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    # legacy names (eggs, old sdists with odd suffixes): "name-version[-pyX.Y].ext"
    stem = filename
    for suffix in (*_SDIST_SUFFIXES, ".egg", ".exe", ".msi", ".rpm", ".dmg"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        return None
    parts = stem.split("-")
    if len(parts) < 2:
        return None
    # eggs carry a python tag after the version; sdists end with it
    return parts[1] if filename.endswith(".egg") else parts[-1]
