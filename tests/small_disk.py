"""A small filesystem of its own for disk-full tests: a tmpfs mounted for one test (mounting
needs root; without it the test is skipped, saying why), and a filler that takes every free
block.

    with mounted(tmp_path / "disk", "16m") as disk:
        ...  # put a data directory on it
        filler = fill(disk)  # now full; filler.unlink() (or truncate) makes room again
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted(mount: Path, size: str) -> Iterator[Path]:
    mount.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {exc}")
    try:
        yield mount
    finally:
        # lazy: a process that still holds a file there cannot keep it mounted
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(disk: Path) -> Path:
    """Take every free block of `disk` with a new filler file; returns the file."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    with filler.open("wb", buffering=0) as out:
        for size in (1024 * 1024, 4096, 512):  # big writes, then the last partial blocks
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    assert free(disk) == 0
    return filler
