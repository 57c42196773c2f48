"""pyproxy.repository.warmup_files.Resolved: which files pip resolved, per client."""

from __future__ import annotations

from pyproxy.model import normalize
from pyproxy.repository.warmup_files import Resolved, is_pip

A, B, C = normalize("a"), normalize("b"), normalize("c")


def test_the_last_metadata_per_project_counts_and_only_once() -> None:
    resolved = Resolved()
    resolved.got_metadata("pip1", A, "a-1.whl")
    resolved.got_metadata("pip1", B, "b-2.whl")
    resolved.got_metadata("pip1", C, "c-1.whl")
    resolved.got_metadata("pip1", B, "b-1.whl")  # backtracked
    resolved.got_metadata("pip2", C, "c-9.whl")
    assert resolved.download_starts("pip1", B, "b-2.whl") == []  # not what it settled on
    assert resolved.download_starts("pip1", A, "a-1.whl") == [(C, "c-1.whl"), (B, "b-1.whl")]
    assert resolved.download_starts("pip1", C, "c-1.whl") == []  # once
    assert resolved.download_starts("pip2", C, "c-9.whl") == []  # nothing else resolved


def test_a_stale_record_is_forgotten() -> None:
    now = [0.0]
    resolved = Resolved(clock=lambda: now[0])
    resolved.got_metadata("pip", A, "a-1.whl")
    resolved.got_metadata("pip", B, "b-1.whl")
    now[0] = 601.0
    assert resolved.download_starts("pip", A, "a-1.whl") == []
    resolved.got_metadata("pip", A, "a-1.whl")  # a new resolution starts afresh
    assert resolved.download_starts("pip", A, "a-1.whl") == []


def test_only_pips_agent() -> None:
    assert is_pip("pip/24.0 {}") and not is_pip("uv/0.5") and not is_pip(None)
