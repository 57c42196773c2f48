"""Where the worker processes of one `pyproxy serve` keep their Prometheus values.

prometheus-client picks its value storage once, when it is first imported, from the
PROMETHEUS_MULTIPROC_DIR environment variable; so `prepare` runs before anything imports it, and
before workers are forked. Deliberately imports nothing from prometheus_client.

Each server gets a fresh directory `<data_dir>/metrics/<id>/` next to `<id>.lock`, which it holds
locked (flock) for its lifetime; directories whose lock is free belong to servers that stopped
or crashed and are removed at start. So two servers on one data directory never mix or delete
each other's values, and a restart begins from zero.

Where there is a memory filesystem (/dev/shm), `<id>` is a link to a directory there: the
values are written through mmap, and a page first touched on a full disk kills the process
with SIGBUS, so they must not live on the data directory's disk. A server that cannot set up a
directory at all (e.g. a full disk without /dev/shm) keeps its values per process, and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from pyproxy.datadir import DataDir

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
MEMORY = Path("/dev/shm")
_PREFIX = "pyproxy-metrics-"
log = logging.getLogger("pyproxy")
_held: list[int] = []  # lock file descriptors, open for the life of the process


def prepare(data_dir: Path) -> Path | None:
    """Set up multiprocess mode under `data_dir`; None if prometheus_client is already imported
    (then values stay per process, and the caller should say so)."""
    if "prometheus_client" in sys.modules:
        return None
    root = DataDir(data_dir).metrics
    name = f"{os.getpid()}-{secrets.token_hex(4)}"
    lock = root / f"{name}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("metrics are per worker process: cannot set up %s (%s)", root, exc)
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    directory = root / name
    try:
        _make_values_directory(directory)
    except OSError as exc:
        log.warning("metrics are per worker process: cannot set up %s (%s)", directory, exc)
        os.close(fd)
        lock.unlink(missing_ok=True)
        return None
    _held.append(fd)
    os.environ[ENVIRONMENT] = str(directory)
    return directory


def _make_values_directory(directory: Path) -> None:
    """`directory` itself, or a link to a new directory in memory where there is one."""
    if MEMORY.is_dir() and os.access(MEMORY, os.W_OK | os.X_OK):
        try:
            target = tempfile.mkdtemp(prefix=_PREFIX, dir=MEMORY)
        except OSError:
            pass  # e.g. a full /dev/shm: the data directory will do
        else:
            try:
                directory.symlink_to(target, target_is_directory=True)
            except OSError:
                shutil.rmtree(target, ignore_errors=True)
                raise
            return
    directory.mkdir()


def _remove_values_directory(directory: Path) -> None:
    """What `_make_values_directory` made, the link and its target both."""
    if directory.is_symlink():
        target = Path(os.readlink(directory))
        if target.parent == MEMORY and target.name.startswith(_PREFIX):  # never anything else
            shutil.rmtree(target, ignore_errors=True)
        directory.unlink(missing_ok=True)
    else:
        shutil.rmtree(directory, ignore_errors=True)


def release(directory: Path) -> None:
    """At a clean exit: remove our values and lock (a crash leaves them to the next start)."""
    with contextlib.suppress(OSError):
        _remove_values_directory(directory)
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
            _remove_values_directory(root / lock.stem)
            os.unlink(lock)
        except OSError:
            pass
        finally:
            os.close(fd)
