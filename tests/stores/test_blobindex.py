from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from pyproxy.model import LocalFile
from pyproxy.stores.blobindex import KnownPaths, Uses
from pyproxy.stores.changes import ChangeCounter


def _hit(path: Path) -> LocalFile:
    return LocalFile(path=path, size=1, sha256="0" * 64, cache="hit")


def test_known_paths_are_dropped_by_a_removal_and_stale_answers_never_kept(tmp_path: Path) -> None:
    removals = ChangeCounter(tmp_path / "removals")
    other = ChangeCounter(tmp_path / "removals")  # another process on the same cache
    known = KnownPaths(removals, limit=2)
    try:
        token = known.token()
        known.remember("a", _hit(tmp_path / "a"), token)
        assert known.get("a") == _hit(tmp_path / "a")

        token = known.token()
        other.bump()  # removed while we asked the index: its answer may be stale
        known.remember("b", _hit(tmp_path / "b"), token)
        assert known.get("b") is None
        assert known.get("a") is None  # everything known before a removal is asked again

        token = known.token()
        for key in ("c", "d", "e"):
            known.remember(key, _hit(tmp_path / key), token)
        assert known.get("c") is None  # the least recently used beyond the limit
        assert known.get("d") is not None and known.get("e") is not None
        known.forget("d")
        assert known.get("d") is None
    finally:
        removals.close()
        other.close()


def _index(tmp_path: Path, rows: dict[str, float]) -> Path:
    """A table shaped as diskcache's Cache table, for the columns the uses touch."""
    db = tmp_path / "cache.db"
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("CREATE TABLE Cache (key BLOB, raw INTEGER, access_time REAL)")
        con.executemany("INSERT INTO Cache VALUES (?, 1, ?)", rows.items())
    return db


def _access_times(db: Path) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return dict(con.execute("SELECT key, access_time FROM Cache"))


def test_uses_are_written_once_and_never_backwards(tmp_path: Path) -> None:
    future = time.time() + 3600  # another process already wrote a later use of b
    db = _index(tmp_path, {"a": 1.0, "b": future})
    uses = Uses(db)
    for key in ("a", "b", "a", "gone"):
        uses.note(key)  # no loop: nothing is armed, flush() writes them
    assert uses.flush() == 3
    times = _access_times(db)
    assert 1.0 < times["a"] <= time.time() and times["b"] == future
    assert uses.flush() == 0


def test_uses_that_could_not_be_written_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    sqlite3.connect(db).close()  # no Cache table: the write fails
    uses = Uses(db)
    uses.note("a")
    assert uses.flush() == 0
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("CREATE TABLE Cache (key BLOB, raw INTEGER, access_time REAL)")
        con.execute("INSERT INTO Cache VALUES ('a', 1, 0)")
    assert uses.flush() == 1
    assert _access_times(db)["a"] > 0
