"""pyproxy.multiproc: each server's own fresh metrics directory, and what stopped servers left.

prepare() must run before prometheus_client is imported, so it is exercised in fresh
interpreters here (this test process imported it long ago)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pyproxy import multiproc

SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from pyproxy import metrics, multiproc
    directory = multiproc.prepare(Path(sys.argv[1]))
    print(directory)
    metrics.HTTP_REQUESTS.labels("/x", "GET", "200").inc()  # values go to files in it
    assert metrics.multiprocess() and os.listdir(directory)
    sys.stdout.flush()
    if sys.argv[2] == "wait":
        sys.stdin.read()  # holds its lock until told to exit
    elif sys.argv[2] == "release":
        multiproc.release(directory)
""")


def start(data_dir: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(data_dir), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_servers_get_separate_directories_and_leftovers_go(tmp_path: Path) -> None:
    crashed, crashed_dir = start(tmp_path, "exit")  # exits without release: like a crash
    assert crashed.wait(30) == 0 and crashed_dir.is_dir()
    live, live_dir = start(tmp_path, "wait")
    try:
        assert not crashed_dir.exists()  # its lock was free: removed
        assert live_dir.is_dir() and live_dir.parent == tmp_path / "metrics"
        other, other_dir = start(tmp_path, "release")
        assert other.wait(30) == 0
        assert other_dir != live_dir and not other_dir.exists()  # released at its clean exit
        assert live_dir.is_dir() and any(live_dir.iterdir())  # a live server's stays
    finally:
        live.communicate("", timeout=30)
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == sorted(
        [live_dir.name, live_dir.name + ".lock"]
    )


def test_too_late_once_prometheus_client_is_imported(tmp_path: Path) -> None:
    import prometheus_client  # noqa: F401  (as in this test process anyway)

    assert multiproc.prepare(tmp_path) is None
    assert not (tmp_path / "metrics").exists()
