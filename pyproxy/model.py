"""The shared vocabulary: projects, files, repository errors. No I/O here."""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from packaging.utils import NormalizedName, canonicalize_name

from pyproxy.filenames import reader_of, version_of

__all__ = [
    "DistFile",
    "Download",
    "FileBacked",
    "FileSource",
    "Forbidden",
    "HeldBack",
    "Listed",
    "LocalFile",
    "NameSource",
    "NormalizedName",
    "NotFound",
    "OpenedFile",
    "Origin",
    "PrivateCatalog",
    "ProjectList",
    "ProjectPage",
    "ProjectStatus",
    "RemoteFile",
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
    # (the project it was read with, the version) from the filename, read once and kept: a
    # page's files are asked for it again and again (the page, the policy, the first-seen
    # record, the warm-up's pick). The page the file is on reads it with its project's name
    # (ProjectPage): only so does "foo-2.0-1.tar.gz" read as pip reads it (2.0.post1, not "1")
    _read: tuple[str | None, str | None] | None = field(
        init=False, default=None, repr=False, compare=False
    )

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    @property
    def version(self) -> str | None:
        """The version as pip reads it, for a file on a page (of its project); for one on
        none, as version_of reads a name without its project."""
        read = self._read
        if read is None:
            read = (None, version_of(self.filename))
            object.__setattr__(self, "_read", read)
        return read[1]

    def offering(self, core_metadata: Mapping[str, str] | bool, *, from_wheel: bool) -> DistFile:
        """This file with `core_metadata` and `metadata_from_wheel` set, its version kept if
        read: what marking a page of thousands of wheels does to each, where
        dataclasses.replace costs twice the time and reads every version again."""
        copy = DistFile(
            filename=self.filename,
            hashes=self.hashes,
            size=self.size,
            upload_time=self.upload_time,
            requires_python=self.requires_python,
            yanked=self.yanked,
            yanked_reason=self.yanked_reason,
            core_metadata=core_metadata,
            metadata_from_wheel=from_wheel,
            origin=self.origin,
            upstream_url=self.upstream_url,
            provenance=self.provenance,
            provenance_url=self.provenance_url,
        )
        object.__setattr__(copy, "_read", self._read)
        return copy


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
        files = _read_with(self.name, self.files)
        if files is not self.files:
            object.__setattr__(self, "files", files)
        object.__setattr__(self, "_by_filename", {dist.filename: dist for dist in files})

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
        files = _read_with(name, files)  # the versions as pip reads them, before they are listed
        # each file's version from its slot, read just now (not one property call per file)
        read = (r[1] for f in files if (r := f._read) is not None)
        seen: dict[str, None] = {}
        for version in (*extra_versions, *read):
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


# the slot's own setter (DistFile is frozen): a third less than object.__setattr__, on each
# of a page's thousands of files
_set_read = DistFile.__dict__["_read"].__set__


def _read_with(project: NormalizedName, files: tuple[DistFile, ...]) -> tuple[DistFile, ...]:
    """`files` with their versions read with `project`'s name, each once (a page of thousands
    of files is built on a cold install's path, and again for each filtered copy of it). One
    read with another project's (it is on that project's page too) is copied and the copy
    read, not changed under the other page; the same tuple if none was."""
    foreign, version = False, reader_of(project)
    for dist in files:
        read = dist._read
        if read is None or read[0] is None:
            _set_read(dist, (project, version(dist.filename)))
        elif read[0] != project:
            foreign = True
    if not foreign:
        return files
    return tuple(_copy_for(dist, project) for dist in files)


def _copy_for(dist: DistFile, project: NormalizedName) -> DistFile:
    read = dist._read
    if read is not None and read[0] == project:
        return dist
    copy = dist.offering(dist.core_metadata, from_wheel=dist.metadata_from_wheel)
    _set_read(copy, (project, version_of(dist.filename, project)))
    return copy


Listed = tuple[NormalizedName, str]  # a project in a list: (normalised name, display name)


class NameSource(Protocol):
    """The names of a list too long for memory (an upstream index's, about a million), read
    from disk: every call blocks, so make it in a thread."""

    def entries(self) -> Iterator[Listed]:
        """Ordered by normalised name, each name once."""
        ...

    def has(self, name: NormalizedName) -> bool: ...


class ProjectList:
    """Project names and the revision they were listed at. A short list (the private names)
    holds its display names in memory; a long one reads them from its `source` off the loop."""

    __slots__ = ("_entries", "_names", "_normalized", "revision", "source")

    def __init__(
        self, names: tuple[str, ...] = (), revision: str = "", *, source: NameSource | None = None
    ) -> None:
        self._names = names
        self.revision = revision
        self.source = source
        self._entries: tuple[Listed, ...] | None = None
        self._normalized: frozenset[NormalizedName] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The display names in their given order; only for a list held in memory."""
        if self.source is not None:
            raise TypeError("a project list on disk is read with entries(), off the event loop")
        return self._names

    def entries(self) -> Iterator[Listed]:
        """Every project by normalised name, each once (in its first spelling); blocks when the
        list is on disk."""
        if self.source is not None:
            return self.source.entries()
        if self._entries is None:
            first: dict[NormalizedName, str] = {}
            for display in self._names:
                first.setdefault(normalize(display), display)
            self._entries = tuple(sorted(first.items()))
        return iter(self._entries)

    def has(self, name: NormalizedName) -> bool:
        """Whether the list has the project; blocks when the list is on disk."""
        if self.source is not None:
            return self.source.has(name)
        if self._normalized is None:
            self._normalized = frozenset(map(normalize, self._names))
        return name in self._normalized

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProjectList):
            return NotImplemented
        return (self._names, self.revision, self.source) == (
            other._names, other.revision, other.source
        )

    __hash__ = None  # type: ignore[assignment]  # equal lists may be different objects

    def __repr__(self) -> str:
        held = "on disk" if self.source is not None else f"{len(self._names)} names"
        return f"ProjectList({held}, revision={self.revision!r})"


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A complete file on local disk, safe to send with sendfile."""

    path: Path
    size: int
    sha256: str
    # how it was had, for the access log and metrics: "private", "hit" (in the upstream cache)
    cache: str = field(default="-", compare=False)


@runtime_checkable
class FileBacked(Protocol):
    """A body being written to a file on this machine, which can go from the file straight to
    the socket (the kernel's sendfile) rather than through memory."""

    @property
    def position(self) -> int:
        """The offset in the file of the next byte to send."""
        ...

    async def send_to(self, send: Callable[[int, int, int], Awaitable[int]]) -> None:
        """The rest of the body, with `send(fd, offset, count)` -> bytes sent, as written."""
        ...


class Download(Protocol):
    """The one download of a file in progress, for readers of a part of it."""

    @property
    def written(self) -> int:
        """Bytes on disk so far."""
        ...

    def span(self, start: int, stop: int, *, verified: bool) -> AsyncIterator[bytes]:
        """Bytes [start, stop) as soon as they are written (the file's last byte only once the
        whole is verified); with `verified`, none before the whole file is verified."""
        ...


@dataclass(frozen=True, slots=True)
class StreamedFile:
    """A body that is still arriving (e.g. streamed from upstream while it is cached)."""

    chunks: AsyncIterator[bytes]
    size: int | None
    sha256: str | None
    # "miss" (this request started the download) or "coalesced" (joined one in progress)
    cache: str = field(default="-", compare=False)
    download: Download | None = field(default=None, compare=False)  # for ranges of it


class RemoteFile(ABC):
    """An upstream file not on disk yet: what its page says of it, and its bytes on demand.
    Nothing is asked of upstream before a method is called."""

    cache = "miss"

    def __init__(self, *, size: int | None, sha256: str | None) -> None:
        self.size = size  # as the page gives it
        self.sha256 = sha256

    @abstractmethod
    async def whole(self) -> LocalFile | StreamedFile:
        """The file, from the one upstream download (started, or joined)."""

    @abstractmethod
    async def total(self) -> int | None:
        """Its size: from the page, else as upstream tells it; None if it cannot be known
        without the download."""

    def known_size(self) -> int | None:
        """Its size if known without asking upstream."""
        return self.size

    @abstractmethod
    async def span(self, whole: StreamedFile, start: int, stop: int) -> AsyncIterator[bytes]:
        """Bytes [start, stop) of a file of `total()` bytes whose download is `whole` (from
        `whole()`), as soon as they can be had."""


FileSource = LocalFile | StreamedFile
# what open_file answers: a file, or (upstream, not cached) a way to have it or parts of it
OpenedFile = FileSource | RemoteFile


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

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile: ...

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
