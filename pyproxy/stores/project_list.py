"""An upstream index's project list on disk: the answer's validators, and its names in SQLite.

A real index lists about a million projects, so the list never passes through memory: the
upstream answer is streamed as it came (gzip'd or not) into a temp file (`download`), then
`build` (in a thread; a large list in a small process of its own, so the worker's event loop
never waits for the decompression and the parse) reads it chunk by chunk through
formats/project_list.py into a new SQLite database of (normalised name, display name) by
normalised name, each name once (its first spelling). Only a complete, well-formed list
replaces the copy (`current.json`); garbage, or a list that suddenly names nothing, raises
UpstreamFormatError. Readers open a database read-only: each revision has a file of its own,
and the last few stay for workers still reading an older one.

Layout under `directory`: `current.json` (the record), `<revision>.sqlite3` (the names),
`tmp/` (downloads and builds in progress; a crash leaves them, the next build removes them).
The caller holds the page store's lock for the list while it downloads and builds.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pyproxy.formats.answers import Emptied, UpstreamFormatError
from pyproxy.formats.project_list import read_project_list
from pyproxy.model import Listed, NormalizedName, normalize
from pyproxy.stores.keylock import Turn

__all__ = [
    "KEEP", "SUBPROCESS_BYTES", "DiskNames", "ListEmptied", "ListRecord", "ProjectListStore",
    "SharedList", "SharedListRecord", "SharedListUnavailable",
]

log = logging.getLogger("pyproxy.pages")

_CURRENT = "current.json"
KEEP = 3  # databases kept: the current one and those other workers may still read
_STALE_TEMP_S = 3600.0  # a temp file this old belongs to no build in progress
_READ = 1024 * 1024
_BATCH = 10_000
SUBPROCESS_BYTES = 4 * 1024 * 1024  # a list this large is read in a process of its own
_BUILD_TIMEOUT_S = 600.0


class ListEmptied(Emptied):
    """A list that names no project where the copy named some."""


@dataclass(frozen=True, slots=True)
class ListRecord:
    """The list as last fetched: its validators and where its names are."""

    revision: str  # hash of the body, as for pages: a 304 keeps it
    url: str
    content_type: str | None
    etag: str | None
    last_modified: str | None
    fetched_at: float  # wall clock, shared between worker processes
    count: int  # names in the database
    database: str  # its file name, in the store's directory


@dataclass(frozen=True, slots=True)
class SharedListRecord:
    """A cluster's list as last fetched by any node (stores/pg/lists.py): the raw body is the
    bucket's `object`, whose blake2b is `revision`, as a node's own ListRecord names it."""

    revision: str
    url: str
    content_type: str | None
    etag: str | None
    last_modified: str | None
    fetched_at: float
    object: str = ""
    size: int = 0


class SharedListUnavailable(Exception):
    """The cluster's list cannot be had (database or bucket); one line."""


class SharedList(Protocol):
    """The list one node fetches for the cluster: `turn` is one node at a time across the
    cluster; `load` and `refreshed` block (call them from a thread)."""

    def turn(self, key: str, *, patience: float) -> AbstractAsyncContextManager[Turn]: ...
    def load(self) -> SharedListRecord | None: ...
    def refreshed(self, record: SharedListRecord) -> SharedListRecord: ...
    async def publish(self, record: SharedListRecord, body: Path) -> SharedListRecord: ...
    async def download(self, record: SharedListRecord, target: Path) -> None: ...


class DiskNames:
    """model.NameSource over one list's database (never written once in place)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False
        )

    def entries(self) -> Iterator[Listed]:
        connection = self._connect()
        try:
            cursor = connection.execute("SELECT name, display FROM names ORDER BY name")
            while rows := cursor.fetchmany(_BATCH):
                yield from rows
        finally:
            connection.close()

    def has(self, name: NormalizedName) -> bool:
        connection = self._connect()
        try:
            row = connection.execute("SELECT 1 FROM names WHERE name = ?", (name,)).fetchone()
        finally:
            connection.close()
        return row is not None


class ProjectListStore:
    """One upstream index's project list (blocking: call from a thread, except `download`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._temp = directory / "tmp"

    def load(self) -> ListRecord | None:
        try:
            fields = json.loads((self.directory / _CURRENT).read_bytes())
            record = ListRecord(**fields)
        except (OSError, ValueError, TypeError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("the project list's record is unreadable; fetched anew: %s", exc)
            return None
        if not (self.directory / record.database).is_file():
            return None
        return record

    def names(self, record: ListRecord) -> DiskNames:
        return DiskNames(self.directory / record.database)

    def download(self) -> tuple[Path, BinaryIO]:
        """A new temp file to stream an answer into (the caller closes it)."""
        self._temp.mkdir(parents=True, exist_ok=True)
        path = self._temp / f"{uuid.uuid4().hex}.body"
        return path, open(path, "wb")

    def build(
        self, body: Path, record: ListRecord, *, previous: ListRecord | None,
        require_marker: bool = False,
    ) -> ListRecord:
        """The names of the answer in `body` (the caller's to remove) as the current list, recorded
        as `record` (its count and database filled in); UpstreamFormatError if it is garbage,
        ListEmptied if it names nothing where `previous` named something."""
        self._remove_stale_temps(keep=body)
        database = self._temp / f"{uuid.uuid4().hex}.sqlite3"
        try:
            count = _build_names(body, record.content_type, database, require_marker)
            if count == 0 and previous is not None and previous.count > 0:
                raise ListEmptied("it lists nothing, where the cached copy lists something")
            name = f"{record.revision}.{uuid.uuid4().hex[:8]}.sqlite3"
            os.replace(database, self.directory / name)
        finally:
            database.unlink(missing_ok=True)
        built = dataclasses.replace(record, count=count, database=name)
        self._save(built)
        self._remove_old_databases(keep=name)
        return built

    def refreshed(self, record: ListRecord, fetched_at: float) -> ListRecord:
        """The same list, fetched again (a 304)."""
        renewed = dataclasses.replace(record, fetched_at=fetched_at)
        self._save(renewed)
        return renewed

    def _save(self, record: ListRecord) -> None:
        temp = self._temp / f"{uuid.uuid4().hex}.json"
        self._temp.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(dataclasses.asdict(record)))
        os.replace(temp, self.directory / _CURRENT)

    def _remove_old_databases(self, keep: str) -> None:
        found = sorted(self.directory.glob("*.sqlite3"), key=_mtime, reverse=True)
        for old in found[KEEP:]:
            if old.name != keep:
                old.unlink(missing_ok=True)

    def _remove_stale_temps(self, keep: Path) -> None:
        now = time.time()
        for temp in self._temp.glob("*"):
            if temp != keep and now - _mtime(temp) > _STALE_TEMP_S:
                temp.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _chunks(path: Path) -> Iterator[bytes]:
    # decompressed here, off the event loop, if upstream sent it gzip'd (no list starts so)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        reader: BinaryIO = gzip.GzipFile(fileobj=raw) if gzipped else raw  # type: ignore[assignment]
        try:
            while chunk := reader.read(_READ):
                yield chunk
        except (OSError, EOFError, zlib.error) as exc:
            raise UpstreamFormatError(f"its gzip'd body is broken: {exc}") from None


def _build_names(body: Path, content_type: str | None, database: Path, require_marker: bool) -> int:
    """`_write_names`, for a large body in a child (the parse would hold the worker's GIL for
    seconds; its memory goes with the child): `python -m` this module, as multiprocessing's
    spawn would import the worker's whole program again and leave a resource tracker behind."""
    if body.stat().st_size < SUBPROCESS_BYTES:
        return _write_names(body, content_type, database, require_marker)
    args = [sys.executable, "-m", __name__, str(body), content_type or "", str(database)]
    done = subprocess.run([*args, "1" if require_marker else ""], capture_output=True,
                          timeout=_BUILD_TIMEOUT_S, check=False)
    try:
        outcome = pickle.loads(done.stdout)  # our own child's answer
    except (pickle.UnpicklingError, EOFError, ValueError):
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise OSError(f"the list's build exited with {done.returncode}: {last}") from None
    if isinstance(outcome, BaseException):
        raise outcome
    return int(outcome)


def _write_names(body: Path, content_type: str | None, database: Path, require_marker: bool) -> int:
    """Names from the body into a new database; how many there are. While the names arrive in
    order (as a large index sends them) each goes straight into the table; once one is out of
    order the rest are sorted by SQLite first, which keeps the first spelling of each too."""
    names = read_project_list(_chunks(body), content_type, require_marker=require_marker)
    connection = sqlite3.connect(database)
    try:
        connection.execute("PRAGMA journal_mode=OFF")  # a failed build is thrown away whole
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA temp_store=FILE")
        connection.execute(
            "CREATE TABLE names (name TEXT PRIMARY KEY, display TEXT NOT NULL) WITHOUT ROWID"
        )
        connection.execute("CREATE TEMP TABLE unordered (name TEXT, display TEXT)")
        table, last = "names", ""
        batch: list[tuple[str, str]] = []
        for display in names:
            name = normalize(display)
            if table == "names" and name < last:
                _insert(connection, table, batch)
                batch, table = [], "unordered"
            last = name
            batch.append((name, display))
            if len(batch) >= _BATCH:
                _insert(connection, table, batch)
                batch = []
        _insert(connection, table, batch)
        connection.execute(
            "INSERT OR IGNORE INTO names SELECT name, display FROM unordered ORDER BY name, rowid"
        )
        connection.execute("DROP TABLE unordered")
        connection.commit()
        (count,) = connection.execute("SELECT count(*) FROM names").fetchone()
    finally:
        connection.close()
    return int(count)


def _insert(connection: sqlite3.Connection, table: str, rows: list[tuple[str, str]]) -> None:
    verb = "INSERT OR IGNORE INTO names" if table == "names" else "INSERT INTO unordered"
    connection.executemany(f"{verb} VALUES (?, ?)", rows)


if __name__ == "__main__":  # the child of _build_names: its outcome, pickled, on stdout
    _body, _type, _database, _marker = sys.argv[1:5]
    _outcome: object
    try:
        _outcome = _write_names(Path(_body), _type or None, Path(_database), bool(_marker))
    except Exception as exc:  # the parent raises it
        _outcome = exc
    sys.stdout.buffer.write(pickle.dumps(_outcome))
