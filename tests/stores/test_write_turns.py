"""Turns at writing one SQLite database (pyproxy/stores/write_turns.py): one writer at a time
among threads and among processes (a real forked child, which must not share its parent's
descriptor), the stores' writes taking them, and writing on without a turn file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import diskcache

from pyproxy.model import NormalizedName
from pyproxy.stores.blobindex import BlobIndex
from pyproxy.stores.first_seen import FirstSeenStore
from pyproxy.stores.pages import PageRecord, PageStore
from pyproxy.stores.write_turns import SUFFIX, WriteTurns

HOLD_S = 0.3


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    turns = WriteTurns(tmp_path / "cache.db")
    inside: list[int] = []
    most = 0
    guard = threading.Lock()

    def write() -> None:
        nonlocal most
        for _ in range(20):
            with turns.turn():
                with guard:
                    inside.append(1)
                    most = max(most, len(inside))
                time.sleep(0.001)
                with guard:
                    inside.pop()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
    assert turns.path == tmp_path / f"cache.db{SUFFIX}" and turns.path.exists()
    turns.close()


def test_a_forked_process_waits_for_the_parents_turn_and_the_parent_for_its(
    tmp_path: Path,
) -> None:
    turns = WriteTurns(tmp_path / "cache.db")
    with turns.turn():  # the parent's descriptor is open before the fork
        pass
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports by its exit status
        status = 1
        try:
            os.close(ready_r)
            with turns.turn():  # its own descriptor: with the parent's it would not exclude
                os.write(ready_w, b"x")
                time.sleep(HOLD_S)
            status = 0
        finally:
            os._exit(status)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"x"  # the child holds its turn
        asked = time.monotonic()
        with turns.turn():
            waited = time.monotonic() - asked
    finally:
        os.close(ready_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert waited >= HOLD_S * 0.5  # it waited for the child's turn to end
    turns.close()


def test_without_a_turn_file_the_write_goes_on(tmp_path: Path) -> None:
    turns = WriteTurns(tmp_path / "missing" / "cache.db")  # no such directory
    written = []
    for _ in range(2):
        with turns.turn():
            written.append(1)
    assert written == [1, 1] and not turns.path.exists()
    turns.close()


def test_the_stores_write_in_turns(tmp_path: Path) -> None:
    """The page store, the first-seen store and the blob index (its commits, removals and
    recorded uses) take the turn of their database; while another process holds it, their
    write waits (what keeps SQLite's sleeping busy handler out)."""
    pages = PageStore(tmp_path / "pages")
    seen = FirstSeenStore(tmp_path / "first-seen.db")
    blobs = BlobIndex(tmp_path / "cache", 10 * 1024**2)
    body = tmp_path / "download"
    body.write_bytes(b"x" * 100)
    sha256 = hashlib.sha256(b"x" * 100).hexdigest()
    record = PageRecord(200, b"<html></html>", "text/html", "http://up/simple/a/", None, None,
                        time.time(), "r1")
    blobs_db = tmp_path / "cache" / "blobs" / diskcache.core.DBNAME
    try:
        for database, write in (
            (tmp_path / "pages" / diskcache.core.DBNAME, lambda: pages.save("a", record)),
            (tmp_path / "first-seen.db",
             lambda: seen.record(NormalizedName("a"), ["a-1.tar.gz"], time.time())),
            (blobs_db, lambda: blobs.add("b", body, 100, sha256)),
            (blobs_db, lambda: (blobs.lookup("b"), blobs.flush_uses())),
            (blobs_db, lambda: blobs.delete("b")),
        ):
            other = WriteTurns(database)  # another open of the file: another process's turn
            done = threading.Event()
            with other.turn():
                writer = threading.Thread(target=lambda w=write, d=done: (w(), d.set()))
                writer.start()
                assert not done.wait(HOLD_S)  # waits for the other's turn
            writer.join(timeout=10)
            assert done.is_set()
            other.close()
        assert pages.load("a") == record and blobs.indexed("b") is None
        with sqlite3.connect(tmp_path / "first-seen.db") as db:
            assert db.execute("SELECT count(*) FROM first_seen").fetchone()[0] == 1
    finally:
        pages.close()
        seen.close()
        blobs.close()
