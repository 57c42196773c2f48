"""pyproxy.multiproc: each server's own fresh metrics directory, and what stopped servers left.

prepare() must run before prometheus_client is imported, so it is exercised in fresh
interpreters here (this test process imported it long ago)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def in_memory(directory: Path) -> Path:
    """Where a values directory really is: in /dev/shm, linked from the data directory."""
    assert directory.is_symlink()
    target = Path(os.readlink(directory))
    assert target.parent == multiproc.MEMORY and target.name.startswith("pyproxy-metrics-")
    return target


@pytest.mark.skipif(not multiproc.MEMORY.is_dir(), reason="no /dev/shm here")
def test_servers_get_separate_directories_and_leftovers_go(tmp_path: Path) -> None:
    crashed, crashed_dir = start(tmp_path, "exit")  # exits without release: like a crash
    assert crashed.wait(30) == 0 and crashed_dir.is_dir()
    crashed_values = in_memory(crashed_dir)
    live, live_dir = start(tmp_path, "wait")
    try:
        # its lock was free: removed, in memory too
        assert not crashed_dir.exists() and not crashed_values.exists()
        assert live_dir.is_dir() and live_dir.parent == tmp_path / "metrics"
        other, other_dir = start(tmp_path, "release")
        other_values = in_memory(other_dir)
        assert other.wait(30) == 0
        # released at its clean exit
        assert other_dir != live_dir and not other_dir.exists() and not other_values.exists()
        assert live_dir.is_dir() and any(live_dir.iterdir())  # a live server's stays
        assert any(in_memory(live_dir).iterdir())
    finally:
        live.communicate("", timeout=30)
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == sorted(
        [live_dir.name, live_dir.name + ".lock"]
    )


def test_too_late_once_prometheus_client_is_imported(tmp_path: Path) -> None:
    import prometheus_client  # noqa: F401  (as in this test process anyway)

    assert multiproc.prepare(tmp_path) is None
    assert not (tmp_path / "metrics").exists()


def test_no_shared_directory_means_values_per_process(tmp_path: Path) -> None:
    """A data directory where nothing can be created (a full disk, a read-only mount): the
    server still starts, with its values in memory, and says so."""
    script = textwrap.dedent("""
        import logging, sys
        from pathlib import Path
        from pyproxy import metrics, multiproc
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        print(multiproc.prepare(Path(sys.argv[1])))
        metrics.HTTP_REQUESTS.labels("/x", "GET", "200").inc()
        print(metrics.multiprocess())
    """)
    (tmp_path / "metrics").write_text("a file where the directory should be")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=True)
    warning, directory, shared = proc.stdout.splitlines()
    assert warning.startswith(f"metrics are per worker process: cannot set up {tmp_path}/metrics")
    assert (directory, shared) == ("None", "False")
