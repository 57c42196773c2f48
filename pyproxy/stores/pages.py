"""The upstream page cache: each answer as it was fetched, on disk; parsed pages in memory.

Keys are normalised project names. The project list (INDEX_KEY: about a million names on a
real index) is not kept here but beside it, in `list/` (stores/project_list.py). The disk (a
diskcache.Cache that every worker process shares) keeps the raw answer with its validators and
fetch time, so a restart or another worker needs no refetch. The memory (per process, least
recently used out first) keeps parsed pages within a bound in bytes, each page costed by an
estimate from its raw body and what it lists (`parsed_cost`), and a record whose body is the
one already parsed (a 304 keeps the revision) is not parsed again. A page evicted from memory
is parsed again from disk when next asked for. Judging freshness is the caller's
business (repository/upstream.py); this module only stores. `turn(key)` is the lock (in
`locks/`, see stores/keylock.py) that lets one worker process at a time refresh a page.

`PageCache` is what both backends share (the memory, the enumeration, the checks of an imported
record); `PageStore` keeps the records on disk, a cluster node's ClusterPageStore
(stores/pg/pages.py) in PostgreSQL. Either builds its project list on the machine's disk; a
cluster node's comes from the one the cluster shares (`shared_list`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE

from pyproxy.formats.answers import UpstreamFormatError
from pyproxy.formats.parse import parse_project_page
from pyproxy.lru import BoundedLRU
from pyproxy.model import NormalizedName, ProjectPage
from pyproxy.stores.keylock import KeyLocks, Turn
from pyproxy.stores.project_list import ProjectListStore, SharedList
from pyproxy.stores.space import is_disk_full
from pyproxy.stores.write_turns import WriteTurns

__all__ = [
    "INDEX_KEY", "PageCache", "PageRecord", "PageStore", "Parsed", "Turn", "UpstreamFormatError",
    "imported_record", "revision_of",
]

INDEX_KEY = "/"  # the project list's lock key (and its key in older caches); no project is "/"
MEMORY_BYTES = 256 * 1024**2  # the default bound of the parsed pages one process keeps
# The estimate of a parsed page's memory, fitted (with a margin) to tracemalloc on JSON and HTML
# pages from terse to verbose: ~540-660 bytes per file whatever its entry says, plus 1.2-1.6
# bytes per body byte (its strings).
_PER_BODY_BYTE = 2
_PER_FILE = 600
_PARSED_OVERHEAD = 2048  # objects every parsed page has, whatever its size
log = logging.getLogger("pyproxy.pages")
_SIZE_LIMIT = 2**30


def revision_of(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class PageRecord:
    """What the disk keeps per page: the raw answer, so a restart needs no refetch."""

    status: int  # 200, or 404 for "upstream does not have it"
    body: bytes
    content_type: str | None
    url: str  # the final URL (after redirects), against which relative links resolve
    etag: str | None
    last_modified: str | None
    fetched_at: float  # wall clock, shared between worker processes
    revision: str  # hash of the body: a 304 keeps it, so nothing is parsed or re-rendered


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed page in memory, with what is needed to judge and revalidate it."""

    fetched_at: float
    revision: str
    result: ProjectPage | None  # None: upstream has no such project
    cost: int = _PARSED_OVERHEAD  # estimated bytes of memory that `result` takes


def parsed_cost(record: PageRecord, result: ProjectPage | None) -> int:
    """The memory the parsed `result` of `record` is reckoned to take."""
    listed = _PER_FILE * len(result.files) if result is not None else 0
    return _PARSED_OVERHEAD + _PER_BODY_BYTE * len(record.body) + listed


def parse(key: str, record: PageRecord, *, require_marker: bool = False) -> ProjectPage:
    """The page a 200 record holds; UpstreamFormatError if its body is malformed or is no
    simple page (`require_marker`: see formats.parse)."""
    revision = f"u{record.revision}"
    page = parse_project_page(
        record.body, record.content_type, record.url, NormalizedName(key),
        require_marker=require_marker,
    )
    return dataclasses.replace(page, revision=revision)


class _Unpickler(pickle.Unpickler):
    # records written before this module existed name the class where it lived then
    _MOVED = frozenset({("pyproxy.upstream", "_Entry"), ("pyproxy.repository.upstream", "_Entry")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._MOVED:
            return PageRecord
        return super().find_class(module, name)


class _RecordDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache ships no types
    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None) -> Any:
        # diskcache leaves a file it could not finish (a full disk) where no row points to it
        existed = os.path.exists(full_path)
        try:
            return super()._write(full_path, iterator, mode, encoding)
        except BaseException:
            if not existed:
                with contextlib.suppress(OSError):
                    os.unlink(full_path)
            raise

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != MODE_PICKLE:
            return super().fetch(mode, filename, value, read)
        if value is not None:
            return _Unpickler(io.BytesIO(value)).load()
        assert filename is not None  # a large pickle lives in a file of its own
        with open(os.path.join(self._directory, filename), "rb") as reader:
            return _Unpickler(reader).load()


def imported_record(key: str, fields: dict[str, object], body: bytes) -> PageRecord | None:
    """The record an export wrote for `key` (None: an older export's project list, which is not
    imported: a new one is fetched when online); ValueError if it is unusable."""
    try:
        record = PageRecord(body=body, **fields)  # type: ignore[arg-type]  # checked below
    except TypeError as exc:
        raise ValueError(f"not a page record: {exc}") from None
    if key == INDEX_KEY:
        return None
    if record.status not in (200, 404) or not isinstance(record.fetched_at, int | float):
        raise ValueError("not a page record")
    if record.revision != (revision_of(body) if record.status == 200 else ""):
        raise ValueError("its body does not match its recorded revision")
    if record.status == 200:
        try:
            parse(key, record)
        except UpstreamFormatError as exc:
            raise ValueError(f"sent a malformed page: {exc}") from None
    return record


class PageCache(ABC):
    """Upstream pages by key: parsed pages in this process's memory, raw records in a backend,
    and the project list on the machine's disk (`project_list`, under `directory`)."""

    def __init__(self, directory: Path, *, memory_bytes: int = MEMORY_BYTES) -> None:
        # every page costs at least _PARSED_OVERHEAD, so the bytes bound the count too
        self._memory: BoundedLRU[str, Parsed] = BoundedLRU(
            memory_bytes // _PARSED_OVERHEAD + 1,
            weigh=lambda parsed: parsed.cost,
            max_weight=memory_bytes,
        )
        self._locks = KeyLocks(Path(directory) / "locks")
        self.project_list = ProjectListStore(Path(directory) / "list")
        # a cluster node's: the list one node fetches for all (stores/pg/lists.py)
        self.shared_list: SharedList | None = None

    @abstractmethod
    def close(self) -> None: ...

    # ---- memory (on the event loop) ----

    def known(self, key: str) -> Parsed | None:
        """The parsed page in this process's memory, if any (the warm path: no disk, no parse)."""
        return self._memory.get(key)

    @property
    def memory_bytes(self) -> int:
        """The estimated bytes of the parsed pages this process keeps (at most its bound)."""
        return self._memory.weight

    async def remember(self, key: str, record: PageRecord) -> Parsed:
        """Parse the record (see `parsed`) and keep it in memory."""
        known = await self.parsed(key, record)
        self.keep(key, known)
        return known

    async def parsed(self, key: str, record: PageRecord, *, require_marker: bool = False) -> Parsed:
        """The record parsed (off the loop, unless the same body is already parsed), not kept;
        UpstreamFormatError if it does not parse."""
        known = self.known(key)
        if known is not None and known.revision == record.revision:
            return dataclasses.replace(known, fetched_at=record.fetched_at)
        result = None
        if record.status == 200:
            result = await asyncio.to_thread(parse, key, record, require_marker=require_marker)
        return Parsed(record.fetched_at, record.revision, result, parsed_cost(record, result))

    def keep(self, key: str, parsed: Parsed) -> None:
        """Into memory; a page larger than the whole bound is not kept (it is parsed again from
        the backend each time it is asked for)."""
        self._memory.put(key, parsed)

    def turn(self, key: str, *, patience: float) -> AbstractAsyncContextManager[Turn]:
        """This process's turn to refresh `key`, waiting (up to `patience` s) while another
        process has it: see stores/keylock.py. `Turn.failure` is what the holder waited for
        failed with."""
        return self._locks.turn(key, patience=patience)

    # ---- the records (blocking: call from a thread) ----

    @abstractmethod
    def load(self, key: str) -> PageRecord | None: ...

    @abstractmethod
    def save(self, key: str, record: PageRecord) -> None:
        """Keep the record; where it cannot be kept, only in memory (logged), where the caller
        has already put it."""

    @abstractmethod
    def _records(self) -> Iterator[tuple[str, PageRecord]]: ...

    def project_names(self) -> list[str]:
        """Projects whose upstream page is cached (a cached 404 is a project upstream lacks)."""
        return sorted(
            key for key, record in self._records() if key != INDEX_KEY and record.status == 200
        )

    def pages(self) -> Iterator[ProjectPage]:
        """Every cached upstream project page, parsed (skipping any that no longer parse)."""
        for key, record in self._records():
            if key == INDEX_KEY or record.status != 200:
                continue
            try:
                yield parse(key, record)
            except UpstreamFormatError:
                continue

    def export_records(self) -> Iterator[tuple[str, dict[str, object], bytes]]:
        """Every record as (key, its fields without the body, body), for `pyproxy export`."""
        for key, record in self._records():
            if key == INDEX_KEY:  # an older pyproxy's list: a new one is fetched when online
                continue
            fields = dataclasses.asdict(record)
            body = fields.pop("body")
            yield key, fields, body

    def import_record(self, key: str, fields: dict[str, object], body: bytes) -> bool:
        """Store an exported record unless a newer copy is held; ValueError if it is unusable."""
        record = imported_record(key, fields, body)
        if record is None:
            return False
        held = self.load(key)
        if held is not None and held.fetched_at >= record.fetched_at:
            return False
        self.save(key, record)
        return True


class PageStore(PageCache):
    """Raw records on disk (shared by the worker processes of one machine)."""

    def __init__(self, directory: Path, *, memory_bytes: int = MEMORY_BYTES) -> None:
        super().__init__(directory, memory_bytes=memory_bytes)
        self._disk = diskcache.Cache(str(directory), size_limit=_SIZE_LIMIT, disk=_RecordDisk)
        self._turns = WriteTurns(directory / diskcache.core.DBNAME)

    def close(self) -> None:
        self._disk.close()
        self._turns.close()

    def load(self, key: str) -> PageRecord | None:
        record = self._disk.get(key)
        return record if isinstance(record, PageRecord) else None

    def save(self, key: str, record: PageRecord) -> None:
        try:
            with self._turns.turn():
                self._disk.set(key, record)
        except (OSError, sqlite3.Error) as exc:
            if not is_disk_full(exc):
                raise
            log.warning(
                "cannot keep the page of %r on disk (the disk is full): it is served from memory",
                key,
            )

    def _records(self) -> Iterator[tuple[str, PageRecord]]:
        for key in self._disk.iterkeys():
            record = self.load(key)
            if record is not None:
                yield key, record
