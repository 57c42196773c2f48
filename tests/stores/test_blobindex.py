from __future__ import annotations

from pathlib import Path

from pyproxy.model import LocalFile
from pyproxy.stores.blobindex import KnownPaths
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
