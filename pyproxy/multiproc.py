"""Where the worker processes of one `pyproxy serve` keep their Prometheus values.

prometheus-client picks its value storage once, when it is first imported, from the
PROMETHEUS_MULTIPROC_DIR environment variable; so `prepare` runs before anything imports it, and
before workers are forked. Deliberately imports nothing from prometheus_client.

Each server gets a fresh directory `<data_dir>/metrics/<id>/` next to `<id>.lock`, which it holds
locked (flock) for its lifetime; directories whose lock is free belong to servers that stopped
or crashed and are removed at start. So two servers on one data directory never mix or delete
each other's values, and a restart begins from zero.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import sys
from pathlib import Path

from pyproxy.datadir import DataDir

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
_held: list[int] = []  # lock file descriptors, open for the life of the process


def prepare(data_dir: Path) -> Path | None:
    """Set up multiprocess mode under `data_dir`; None if prometheus_client is already imported
    (then values stay per process, and the caller should say so)."""
    if "prometheus_client" in sys.modules:
        return None
    root = DataDir(data_dir).metrics
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    name = f"{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(root / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _held.append(fd)
    directory = root / name
    directory.mkdir()
    os.environ[ENVIRONMENT] = str(directory)
    return directory


def release(directory: Path) -> None:
    """At a clean exit: remove our values and lock (a crash leaves them to the next start)."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(directory.with_name(directory.name + ".lock"))
    while _held:
        os.close(_held.pop())


def live_directories(data_dir: Path) -> list[Path]:
    """The value directories of servers running on `data_dir` now (their lock is held)."""
    live = []
    for lock in sorted(DataDir(data_dir).metrics.glob("*.lock")):
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if (lock.parent / lock.stem).is_dir():
                live.append(lock.parent / lock.stem)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return live


def _remove_abandoned(root: Path) -> None:
    for lock in root.glob("*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live server's
        try:
            shutil.rmtree(root / lock.stem, ignore_errors=True)
            os.unlink(lock)
        except OSError:
            pass
        finally:
            os.close(fd)
