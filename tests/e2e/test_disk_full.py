"""End to end, `pyproxy serve` with its data directory on a small filesystem of its own (a
tmpfs, so the tests need root to mount it) that a filler file makes full: what issue 14 item 11
promises of a full disk.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import get, raw_request
from tests.e2e.conftest import PyproxyServer, ServerFactory

DISK_SIZE = "16m"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 16 MiB tmpfs, unmounted at teardown. Ask for it before the server factories,
    so that their servers have stopped when it goes."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def fill(disk: Path) -> Path:
    """Take every free block of `disk` with a filler file; returns the file."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    with filler.open("wb", buffering=0) as out:
        for size in (1024 * 1024, 4096, 512):  # big writes, then the last partial blocks
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
    stats = os.statvfs(disk)
    assert stats.f_bavail == 0, stats
    return filler


def assert_alive(server: PyproxyServer) -> None:
    assert server.proc is not None and server.proc.poll() is None, (
        f"pyproxy exited with {server.proc.returncode if server.proc else None}:\n"
        f"{server.stderr_text()}")
    assert get(f"{server.url}/health").status == 200


def test_metrics_cannot_kill_a_worker(disk: Path, pyproxy_factory: ServerFactory) -> None:
    """Metric values are written through mmap: a page first touched on a full disk would be a
    SIGBUS. Requests that make new series (routes, methods, statuses) on a full disk."""
    server = pyproxy_factory.start(disk / "data", user=None)
    fill(disk)
    for method, path in [("GET", "/health"), ("GET", "/ready"), ("GET", "/no/such/page"),
                         ("HEAD", "/simple/"), ("GET", "/files/none/none-1.0.tar.gz"),
                         ("POST", "/legacy/"), ("GET", "/metrics")]:
        raw_request(method, server.url + path)
    assert_alive(server)
    assert "pyproxy_http_requests_total" in get(f"{server.url}/metrics").body
