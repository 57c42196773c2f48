"""pyproxy.stores.private_files.PrivateFiles: content-addressed bodies and the flock'd temp area."""

from __future__ import annotations

import hashlib
import multiprocessing
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from pyproxy.stores import private_files
from pyproxy.stores.private_files import PrivateFiles


@pytest.fixture
def files(tmp_path: Path) -> PrivateFiles:
    return PrivateFiles(tmp_path / "private")


def _stored(files: PrivateFiles, body: bytes) -> str:
    sha256 = hashlib.sha256(body).hexdigest()
    with files.temporary_file() as tmp:
        tmp.write_bytes(body)
        files.move_into_place(tmp, sha256)
    return sha256


def test_temporary_file_is_removed_unless_moved(files: PrivateFiles) -> None:
    with files.temporary_file() as path:
        path.write_bytes(b"x")
        assert path.parent == files.tmp
        assert path.name.startswith("upload-") and path.suffix == ".part"
    assert not path.exists()
    with pytest.raises(RuntimeError), files.temporary_file() as path:
        raise RuntimeError
    assert not path.exists()


def test_a_moved_body_lives_at_its_content_address(files: PrivateFiles) -> None:
    sha256 = _stored(files, b"the body")
    assert files.path(sha256) == files.blobs / sha256[:2] / sha256[2:4] / sha256
    assert files.path(sha256).read_bytes() == b"the body"
    assert list(files.tmp.iterdir()) == []


def test_the_same_bytes_twice_keep_one_body(files: PrivateFiles) -> None:
    first = _stored(files, b"same")
    with files.temporary_file() as tmp:
        tmp.write_bytes(b"same")
        files.move_into_place(tmp, first)
        assert tmp.exists()  # not renamed over the stored body; removed on leaving
    assert [p.name for p in files.blobs.glob("*/*/*")] == [first]
    assert list(files.tmp.iterdir()) == []


def _hold_lock_until_told(directory: Path, ready: Event, done: Event) -> None:
    with PrivateFiles(directory).temporary_file() as path:
        path.write_bytes(b"arriving in another process")
        ready.set()
        done.wait(30)


def test_sweep_removes_only_abandoned_temp_files(files: PrivateFiles, tmp_path: Path) -> None:
    abandoned = files.tmp / "upload-crashed.part"
    abandoned.write_bytes(b"half an upload")  # nobody holds its lock: its writer died
    unrelated = files.tmp / "notes.txt"
    unrelated.write_bytes(b"not a temp file of ours")
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    writer = context.Process(target=_hold_lock_until_told, args=(tmp_path / "private", ready, done))
    writer.start()
    try:
        assert ready.wait(30)
        with files.temporary_file() as live:
            live.write_bytes(b"arriving here")
            assert files.sweep_temporary() == 1
            assert live.exists() and not abandoned.exists() and unrelated.exists()
            others = [p for p in files.tmp.glob("upload-*.part") if p != live]
            assert len(others) == 1  # the other process's upload, still locked
    finally:
        done.set()
        writer.join(30)
    assert files.sweep_temporary() == 0


def test_remove_unreferenced(files: PrivateFiles) -> None:
    kept, dropped = _stored(files, b"kept"), _stored(files, b"dropped")
    assert files.remove_unreferenced({kept}) == 1
    assert files.path(kept).exists() and not files.path(dropped).exists()
    assert files.remove_unreferenced({kept}) == 0


def test_problem_and_restore_of_a_body_on_disk(files: PrivateFiles, tmp_path: Path) -> None:
    body = b"the company's own package" * 100
    sha256 = _stored(files, body)
    assert files.problem(sha256, len(body)) is None
    files.path(sha256).write_bytes(bytes(255 - byte for byte in body))  # same length
    assert "its body on disk has sha256" in str(files.problem(sha256, len(body)))
    with files.temporary_file() as wrong:
        wrong.write_bytes(b"other bytes")
        with pytest.raises(private_files.Unrestorable):
            files.restore(sha256, wrong)
    assert files.path(sha256).read_bytes() != body  # not replaced by the wrong bytes
    with files.temporary_file() as good:
        good.write_bytes(body)
        assert files.restore(sha256, good) is True
    assert files.path(sha256).read_bytes() == body and files.problem(sha256, len(body)) is None
    files.path(sha256).unlink()
    assert files.problem(sha256, len(body)) == "its body is missing from the data directory"
    assert files.heal(sha256, len(body)) is False  # one box: no other copy


def test_the_same_bytes_moved_in_again_replace_a_damaged_body(files: PrivateFiles) -> None:
    body = b"Metadata-Version: 2.1\nName: shared\n"  # two wheels of a release may share it
    sha256 = _stored(files, body)
    files.path(sha256).write_bytes(b"x" * len(body))
    assert _stored(files, body) == sha256
    assert files.path(sha256).read_bytes() == body
