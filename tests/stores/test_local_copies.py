"""pyproxy.stores.local_copies.LocalCopies: verified copies renamed in whole, a least recently
used bound, and a directory that may vanish at any time."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from pyproxy.stores.local_copies import CopyMismatch, LocalCopies


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def fill(copies: LocalCopies, body: bytes, *, announced: bytes | None = None) -> Path:
    expected = body if announced is None else announced
    return copies.fill(
        sha(expected), sha256=sha(expected), size=len(expected),
        write=lambda temp: temp.write_bytes(body),
    ).path


def temp_files(copies: LocalCopies) -> list[Path]:
    return list((copies.directory / "tmp").iterdir())


def test_a_verified_copy_is_found_with_a_stat(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 10_000)
    assert copies.find(sha(b"body")) is None
    path = fill(copies, b"body")
    assert path == copies.path(sha(b"body")) and path.read_bytes() == b"body"
    found = copies.find(sha(b"body"))
    assert found is not None and found.path == path and found.size == 4
    assert temp_files(copies) == []


@pytest.mark.parametrize("body", [b"other bytes", b"bod", b"body and more"])
def test_a_wrong_body_is_never_visible(tmp_path: Path, body: bytes) -> None:
    copies = LocalCopies(tmp_path / "copies", 10_000)
    with pytest.raises(CopyMismatch, match="expected 4 bytes"):
        fill(copies, body, announced=b"body")
    assert copies.find(sha(b"body")) is None
    assert temp_files(copies) == []


def test_without_a_size_the_sha256_decides(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 10_000)
    copy = copies.fill(sha(b"meta"), sha256=sha(b"meta"), size=None,
                       write=lambda temp: temp.write_bytes(b"meta"))
    assert copy.size == 4
    with pytest.raises(CopyMismatch):
        copies.fill(sha(b"x"), sha256=sha(b"x"), size=None, write=lambda t: t.write_bytes(b"y"))


def test_the_bound_removes_the_least_recently_used(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 300, flush_interval=3600)
    first, second, third = (fill(copies, bytes([n]) * 100) for n in (1, 2, 3))
    for age, path in enumerate((first, second, third)):  # filled in this order, long ago
        os.utime(path, (1000 + age, 1000 + age))
    assert copies.find(sha(bytes([1]) * 100)) is not None  # a use, noted in memory
    fourth = fill(copies, bytes([4]) * 100)  # the trim writes the uses first
    assert {p.name for p in (first, third, fourth) if p.exists()} == {
        first.name, third.name, fourth.name
    }
    assert not second.exists()
    assert copies.volume() == 300


def test_the_copy_just_made_is_spared(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 150)
    old = fill(copies, b"o" * 100)
    new = fill(copies, b"n" * 100)
    assert new.exists() and not old.exists()


def test_uses_are_written_in_batches(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 10_000, flush_interval=3600)
    path = fill(copies, b"body")
    os.utime(path, (1000, 1000))
    copies.find(sha(b"body"))
    assert path.stat().st_mtime == 1000  # a hit writes nothing
    assert copies.flush_uses() == 1
    assert path.stat().st_mtime > 1000
    due = LocalCopies(tmp_path / "copies", 10_000, flush_interval=0)
    os.utime(path, (1000, 1000))
    due.find(sha(b"body"))  # no event loop here: written at once when due
    assert path.stat().st_mtime > 1000


def test_the_whole_directory_may_be_removed_at_any_time(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 10_000)
    path = fill(copies, b"body")
    with path.open("rb") as serving:
        shutil.rmtree(copies.directory)
        assert serving.read() == b"body"  # an open copy keeps its bytes
    assert copies.find(sha(b"body")) is None
    assert copies.flush_uses() == 0  # the use noted before is of a file that is gone
    assert fill(copies, b"body").read_bytes() == b"body"
    assert copies.volume() == 4


def test_adopt_links_a_known_file_in(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path / "copies", 10_000)
    source = tmp_path / "upload"
    source.write_bytes(b"uploaded")
    assert copies.adopt(sha(b"uploaded"), source)
    assert source.exists()  # linked: its owner removes its own name
    assert copies.path(sha(b"uploaded")).read_bytes() == b"uploaded"
    assert copies.adopt(sha(b"uploaded"), source)  # there already
    copies.discard(sha(b"uploaded"))
    assert copies.find(sha(b"uploaded")) is None


def test_a_crashed_download_is_swept_at_start(tmp_path: Path) -> None:
    (tmp_path / "copies" / "tmp").mkdir(parents=True)
    leftover = tmp_path / "copies" / "tmp" / "upload-crashed.part"
    leftover.write_bytes(b"half")  # nobody holds its lock
    LocalCopies(tmp_path / "copies", 10_000)
    assert not leftover.exists()
