from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from pyproxy.model import LocalFile
from pyproxy.stores.blobindex import BlobIndex, KnownPaths, vanished
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


def _verified(tmp_path: Path, name: str, data: bytes) -> tuple[Path, str]:
    """A finished download, as the blob cache hands it to the index."""
    path = tmp_path / "partial" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_committed_blob_is_linked_looked_up_once_and_known_until_a_removal(
    tmp_path: Path,
) -> None:
    index = BlobIndex(tmp_path / "cache", 10 * 1024**2)
    other = BlobIndex(tmp_path / "cache", 10 * 1024**2)  # another process on the same cache
    try:
        path, sha256 = _verified(tmp_path, "a", b"a" * 1000)
        assert index.has_room(1000)
        index.add("a", path, 1000, sha256)
        path.unlink()  # a hard link: the cache's file outlives the download's
        assert index.known("a") is None  # never looked up here yet
        hit = index.indexed("a")
        assert hit is not None and hit.size == 1000 and hit.sha256 == sha256
        assert hit.path.read_bytes() == b"a" * 1000
        assert index.known("a") == hit  # from memory from now on
        assert index.lookup("a") == hit and index.flush_uses() == 1

        path, sha256 = _verified(tmp_path, "b", b"b" * 10)
        other.add("b", path, 10, sha256)
        assert other.delete("b")  # a removal anywhere: what this process knew is asked again
        assert index.known("a") is None
        assert index.indexed("a") == hit and index.indexed("b") is None
        assert index.digests(["a", "b", "c"]) == {"a": hit.sha256}
    finally:
        index.close()
        other.close()


def test_eviction_follows_the_recorded_uses_and_spares_the_protected_key(tmp_path: Path) -> None:
    index = BlobIndex(tmp_path / "cache", 10 * 1024**2)
    try:
        for key in ("old", "used", "new"):
            path, sha256 = _verified(tmp_path, key, key.encode() * 100_000)
            index.add(key, path, path.stat().st_size, sha256)
            time.sleep(0.01)  # distinct store times, in this order
        index.lookup("old")  # used last: the least recently used is now "used"
        assert not index.has_room(20 * 1024**2)
        base = index.volume() - 300_000 - 400_000 - 300_000  # the index itself
        removed = index.evict(protect="used", limit=base + 700_000)
        assert removed == [("new", 300_000)]  # "used" is older, and protected
        assert [entry.key for entry in index.entries()] == ["used", "old"]
        assert index.delete("old") and not index.delete("old")
        assert index.indexed("old") is None
        assert index.evict(limit=0) == [("used", 400_000)]
        assert index.entries() == []
    finally:
        index.close()


def test_sizes_are_of_committed_blobs_in_one_connection_and_not_a_use(tmp_path: Path) -> None:
    index = BlobIndex(tmp_path / "cache", 10 * 1024**2)
    try:
        assert index.sizes([]) == {}
        for key, n in (("a", 1000), ("b", 0), ("c", 12)):
            path, sha256 = _verified(tmp_path, key, key.encode() * n)
            index.add(key, path, n, sha256)
        index.delete("c")
        keys = [f"missing-{i}" for i in range(1200)] + ["b", "c", "a"]  # three batches of keys
        assert index.sizes(keys) == {"a": 1000, "b": 0}
        assert index.digests(keys).keys() == {"a", "b"}
        assert index.flush_uses() == 0  # not a use
    finally:
        index.close()


def test_a_blob_deleted_by_hand_is_forgotten_by_every_process_once_a_reader_misses_it(
    tmp_path: Path,
) -> None:
    index = BlobIndex(tmp_path / "cache", 10 * 1024**2)
    other = BlobIndex(tmp_path / "cache", 10 * 1024**2)  # another process on the same cache
    try:
        path, sha256 = _verified(tmp_path, "a", b"a" * 1000)
        index.add("a", path, 1000, sha256)
        kept, _ = _verified(tmp_path, "b", b"b" * 1000)
        index.add("b", kept, 1000, hashlib.sha256(b"b" * 1000).hexdigest())
        hit = index.lookup("a")
        assert hit is not None and other.lookup("a") == hit
        hit.path.unlink()  # `find blobs -name '*.val' -delete`: no counter moves
        assert index.known("a") == hit  # trusted: a hit costs no stat

        assert vanished(hit.path)  # what a reader whose open failed reports
        assert index.known("a") is None and other.known("a") is None
        assert index.lookup("a") is None and other.lookup("a") is None
        assert index.sizes(["a", "b"]) == {"b": 1000}  # its row went, the others stay
        assert not vanished(tmp_path / "elsewhere" / "x")  # not a blob of ours: nothing
    finally:
        index.close()
        other.close()


def test_an_index_deleted_by_hand_is_started_anew_on_the_next_miss(tmp_path: Path) -> None:
    index = BlobIndex(tmp_path / "cache", 10 * 1024**2)
    other = BlobIndex(tmp_path / "cache", 10 * 1024**2)  # another process on the same cache
    try:
        path, sha256 = _verified(tmp_path, "a", b"a" * 1000)
        index.add("a", path, 1000, sha256)
        assert index.lookup("a") is not None and other.lookup("a") is not None
        shutil.rmtree(tmp_path / "cache")  # `rm -rf cache/files`

        assert index.indexed("a") is None  # a miss: the index is started anew
        path, sha256 = _verified(tmp_path, "b", b"b" * 1000)
        index.add("b", path, 1000, sha256)
        assert index.lookup("b") is not None
        assert index.volume() < 10 * 1024**2 and index.sizes(["a", "b"]) == {"b": 1000}
        assert other.indexed("a") is None  # the other process opens the new one
        assert other.indexed("b") is not None
        assert other.known("a") is None  # what it knew of the old one is void
    finally:
        index.close()
        other.close()
