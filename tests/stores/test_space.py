"""pyproxy.stores.space on a real small filesystem (tmpfs): what a full disk looks like to
Python and to SQLite, and the spare file that buys room for deletes and a start."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.stores import space
from pyproxy.stores.space import Spare, is_disk_full, with_room
from tests.small_disk import fill, free, mounted

SIZE = 256 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with mounted(tmp_path / "disk", "2m") as mount:
        yield mount


def wal_database(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE t (x)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 50)
    db.close()  # the last connection: -wal and -shm go


def test_what_a_full_disk_raises(disk: Path) -> None:
    wal_database(disk / "a.db")
    wal_database(disk / "b.db")
    open_db = sqlite3.connect(disk / "a.db", isolation_level=None)
    open_db.execute("SELECT count(*) FROM t").fetchone()  # -shm made while there is room
    fill(disk)
    with pytest.raises(OSError) as written:
        (disk / "more").write_bytes(b"x" * 8192)
    assert is_disk_full(written.value)
    with pytest.raises(sqlite3.OperationalError) as opened:  # its -shm cannot be made anew
        sqlite3.connect(disk / "b.db").execute("SELECT count(*) FROM t")
    assert opened.value.sqlite_errorcode == sqlite3.SQLITE_IOERR_SHMSIZE
    assert is_disk_full(opened.value)
    with pytest.raises(sqlite3.OperationalError) as wrote:
        open_db.execute("INSERT INTO t SELECT x || x || x FROM t")
    assert wrote.value.sqlite_errorcode == sqlite3.SQLITE_FULL and is_disk_full(wrote.value)
    open_db.close()
    try:
        raise RuntimeError("a wrapper") from written.value
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert not is_disk_full(sqlite3.OperationalError("no such table: t"))
    assert is_disk_full(OSError(errno.EDQUOT, "quota"))


def test_the_spare_file(disk: Path) -> None:
    spare = Spare(disk / "spare", SIZE)
    room = free(disk)
    assert spare.keep() and spare.held()
    assert free(disk) == room - SIZE  # its blocks are taken: not a sparse file
    assert spare.keep()  # already there
    assert spare.give_up() and not spare.held() and free(disk) == room
    assert not spare.give_up()
    big = Spare(disk / "big", room // 2 + 4096)
    assert not big.keep() and not big.path.exists()  # never made without room for it twice
    assert not list(disk.glob("*.part"))


def test_with_room_tries_once_more_after_giving_up_the_spare(
    disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spare = Spare(disk / "spare", SIZE)
    assert spare.keep()
    filler = fill(disk)
    tries: list[int] = []

    def write() -> int:
        tries.append(free(disk))
        (disk / "needs-room").write_bytes(b"x" * (SIZE // 2))
        return len(tries)

    assert with_room(spare, write, "write a file") == 2
    assert tries[0] == 0 and tries[1] >= SIZE
    assert not spare.held()
    assert "gave up its spare 262.1 kB to write a file" in caplog.text
    with pytest.raises(OSError):  # no spare left to give up
        with_room(spare, lambda: (disk / "more").write_bytes(b"x" * SIZE), "write more")
    filler.unlink()

    def refused() -> None:
        raise PermissionError(errno.EACCES, "not for want of space")

    assert spare.keep()
    with pytest.raises(PermissionError):
        with_room(spare, refused, "anything")
    assert spare.held()  # kept: giving it up would not have helped
    assert space.SPARE_BYTES >= 1024**2


def test_with_room_cuts_the_databases_logs_before_the_spare(disk: Path) -> None:
    """SQLite keeps a write-ahead log's room for reuse; cut to nothing, it is free room."""
    (disk / "data").mkdir()
    spare = Spare(disk / "data" / "spare", SIZE)
    assert spare.keep()
    db = sqlite3.connect(disk / "data" / "a.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")  # the log only grows
    db.execute("CREATE TABLE t (x)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows' pages are in the database file
    for n in range(4):  # what a cache's index mostly logs: its pages, written over
        db.execute("UPDATE t SET x = ?", (str(n) * 1000,))
    log_size = (disk / "data" / "a.db-wal").stat().st_size
    assert log_size > SIZE
    fill(disk)

    assert with_room(spare, lambda: (disk / "needs-room").write_bytes(b"x" * SIZE), "write") > 0
    assert spare.held()  # not needed
    assert (disk / "data" / "a.db-wal").stat().st_size == 0
    assert db.execute("SELECT count(*), min(x) FROM t").fetchone() == (100, "3" * 1000)
    db.close()
