"""pyproxy.stores.part_files: who writes a key's download, across processes, and what a
follower learns from the file once its writer lets go. The blob cache's own tests drive the
protocol end to end (killed writers, concurrent processes); these pin each step."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from pyproxy.stores.part_files import (
    PartFiles,
    ended,
    mark_cached,
    mark_done,
    mark_failed,
    noted_failure,
    same_file,
    written,
)


def _claim_in_another_process(partial: Path, key: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    parts = PartFiles(partial)
    role, fd = parts.claim(parts.path(key))
    out.put(role)
    os.close(fd)


def test_the_first_claim_holds_and_another_process_follows(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    part = parts.path("key")
    role, fd = parts.claim(part)
    assert role == "hold" and same_file(fd, part)
    assert [p.name for p in parts.directory.iterdir()] == [part.name]  # no .new left behind
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    other = multiprocessing.get_context("fork").Process(
        target=_claim_in_another_process, args=(parts.directory, "key", out)
    )
    other.start()
    other.join(10)
    assert out.get(timeout=5) == "follow"  # flock is per open file: it sees the lock held
    parts.release(fd, part)
    assert not part.exists()
    os.close(fd)


def test_each_verdict_reads_from_the_mode(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    for mark, expected in ((mark_done, "ok"), (mark_cached, "cached"), (None, "failed")):
        part = parts.path(expected)
        _role, fd = parts.claim(part)
        os.write(fd, b"12345")
        if mark is not None:
            mark(fd)
        follower = os.open(part, os.O_RDONLY)
        assert ended(follower) is None  # its writer holds it
        parts.release(fd, part)
        assert ended(follower) == (expected, 5)
        os.close(follower)
        os.close(fd)


def test_an_unlocked_part_is_a_crashed_writers_and_is_taken_over(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    part = parts.path("key")
    part.write_bytes(b"left by a writer that died")  # nobody holds its lock
    role, fd = parts.claim(part)
    assert role == "hold" and os.fstat(fd).st_size == 0  # a fresh file, not the leftover
    reader = os.open(part, os.O_RDONLY)
    assert ended(reader) is None  # and it is locked
    os.close(reader)
    parts.release(fd, part)
    os.close(fd)


def test_sweep_removes_only_what_nobody_holds(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    held = parts.path("held")
    _role, fd = parts.claim(held)
    (parts.directory / "0123.part").write_bytes(b"old")
    (parts.directory / "0123.999.abcd.new").write_bytes(b"older")
    parts.sweep()
    assert [p.name for p in parts.directory.iterdir()] == [held.name]
    parts.release(fd, held)
    os.close(fd)


def test_a_noted_failure_is_a_verdict_and_never_read_as_body(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    part = parts.path("key")
    _role, fd = parts.claim(part)
    os.write(fd, b"12345")
    follower = os.open(part, os.O_RDONLY)
    assert written(follower) == 5
    assert mark_failed(fd, "unavailable", "upstream answered\nHTTP 500")
    assert written(follower) is None  # the note that follows the body is no more body
    assert ended(follower) is None  # its writer holds it
    parts.release(fd, part)
    assert ended(follower) == ("error", 5)
    assert noted_failure(follower) == ("unavailable", "upstream answered HTTP 500")
    os.close(follower)
    os.close(fd)


def test_a_failure_with_no_note_reads_as_no_verdict(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    part = parts.path("key")
    _role, fd = parts.claim(part)
    os.write(fd, b"12345")
    assert mark_failed(fd, "unavailable", "gone")
    os.ftruncate(fd, 5)  # as when the note could not be written (a full disk)
    follower = os.open(part, os.O_RDONLY)
    parts.release(fd, part)
    assert ended(follower) == ("failed", 5)  # like a writer that died: a follower tries itself
    assert noted_failure(follower) is None
    os.close(follower)
    os.close(fd)


def test_a_claim_makes_a_removed_directory_again(tmp_path: Path) -> None:
    parts = PartFiles(tmp_path / "partial")
    os.rmdir(parts.directory)  # `rm -rf cache/files` while the server runs
    part = parts.path("key")
    role, fd = parts.claim(part)
    assert role == "hold" and same_file(fd, part)
    parts.release(fd, part)
    os.close(fd)
