from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from pyproxy.stores import blobuses
from pyproxy.stores.blobuses import Uses, sqlite_writer
from pyproxy.stores.write_turns import WriteTurns


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
    uses = Uses(sqlite_writer(db, WriteTurns(db)), failures=(sqlite3.Error,))
    for key in ("a", "b", "a", "gone"):
        uses.note(key)  # no loop: nothing is armed, flush() writes them
    assert uses.flush() == 3
    times = _access_times(db)
    assert 1.0 < times["a"] <= time.time() and times["b"] == future
    assert uses.flush() == 0


def test_uses_that_could_not_be_written_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    sqlite3.connect(db).close()  # no Cache table: the write fails
    uses = Uses(sqlite_writer(db, WriteTurns(db)), failures=(sqlite3.Error,))
    uses.note("a")
    assert uses.flush() == 0
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("CREATE TABLE Cache (key BLOB, raw INTEGER, access_time REAL)")
        con.execute("INSERT INTO Cache VALUES ('a', 1, 0)")
    assert uses.flush() == 1
    assert _access_times(db)["a"] > 0


class _Refused(Exception):
    pass


def test_a_refused_batch_keeps_only_the_newest_uses_and_other_errors_are_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(blobuses, "_KEEP", 3)
    written: list[dict[str, float]] = []
    refuse = True

    def write(uses: dict[str, float]) -> None:
        if refuse:
            raise _Refused("the database is down")
        written.append(dict(uses))

    uses = Uses(write, failures=(_Refused,))
    for key in ("a", "b", "c", "d", "e"):
        uses.note(key)
        time.sleep(0.001)  # distinct times: the newest are kept
    assert uses.flush() == 0
    refuse = False
    assert uses.flush() == 3 and sorted(written[0]) == ["c", "d", "e"]

    def broken(uses: dict[str, float]) -> None:
        raise ValueError("a bug, not a refusal")

    uses = Uses(broken, failures=(_Refused,))
    uses.note("a")
    with pytest.raises(ValueError):
        uses.flush()
