"""The blob cache's single flight across processes: the part file of each download in progress.

`partial/<h>.part` (h: the sha256 of the cache key) decides who downloads a key. A writer creates
and locks a fresh file under a unique name (`<h>.<pid>.<random>.new`) and publishes it with
link(2), which fails if `<h>.part` exists, so a `.part` that anyone can see is locked from its
first moment. Whoever finds a locked `.part` follows it; an unlocked one was left by a crashed
writer and is removed. The writer's verdict is the file's mode, set before it unlocks: done
(complete and verified), cached (nothing to download after all: the key was committed meanwhile),
error (the download failed, and why is noted at the end of the file, after the body: see
mark_failed) or, left as created, failed (the writer died or was stopped: no verdict, so a
follower may try itself). So a follower knows from fstat() what became of what it read.

Pure file-system protocol: no knowledge of the index, of flights or of the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Literal

__all__ = [
    "PartFiles",
    "Verdict",
    "ended",
    "mark_cached",
    "mark_done",
    "mark_failed",
    "noted_failure",
    "same_file",
    "written",
]

log = logging.getLogger("pyproxy.blobcache")

_PART_MODE = 0o600  # a file being written
_DONE_MODE = 0o644  # a complete, verified file (the signal to followers in other processes)
_CACHED_MODE = 0o640  # no download after all: the key was committed meanwhile, look it up
# failed, and said why (no file is created with it: a umask only takes bits off _PART_MODE)
_ERROR_MODE = 0o604
_CLAIM_ATTEMPTS = 1000
_NOTE_BYTES = 2048  # a failure note is "<kind>\t<problem>", cut to this
_NOTE_END = struct.Struct("<I4s")  # the note's length and _NOTE_MAGIC: the file's last bytes
_NOTE_MAGIC = b"PXNF"

Verdict = Literal["ok", "cached", "error", "failed"]


def same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def try_lock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def mark_done(fd: int) -> None:
    os.fchmod(fd, _DONE_MODE)


def mark_cached(fd: int) -> None:
    os.fchmod(fd, _CACHED_MODE)


def mark_failed(fd: int, kind: str, problem: str) -> bool:
    """The writer's verdict on a download that failed: `kind` (a word) and `problem`, noted
    after the body for its followers, who then fail with it instead of each asking upstream
    again. False when it could not be noted (a full disk): then it reads as failed, no verdict."""
    # the mode first: a follower counts no byte as the body's once it sees it (see `written`)
    os.fchmod(fd, _ERROR_MODE)
    body = os.fstat(fd).st_size
    note = f"{kind}\t{' '.join(problem.split())}".encode()[:_NOTE_BYTES]
    record = memoryview(note + _NOTE_END.pack(len(note), _NOTE_MAGIC))
    offset = body
    try:
        while record:
            n = os.pwrite(fd, record, offset)
            record, offset = record[n:], offset + n
    except OSError as exc:
        log.debug("cannot note why the download failed: %s", exc)
        with contextlib.suppress(OSError):  # no torn note: a file with none is a plain failure
            os.ftruncate(fd, body)
        return False
    return True


def written(fd: int) -> int | None:
    """For a follower: the bytes of the body the writer of part file `fd` has written so far;
    None once it has noted a failure (what follows the body then is the note)."""
    size = os.fstat(fd).st_size
    # the writer sets the mode before it appends a note: a size read before the mode is seen
    # unchanged is all body (one fstat could read an old mode and a newer size)
    if stat.S_IMODE(os.fstat(fd).st_mode) == _ERROR_MODE:
        return None
    return size


def ended(fd: int) -> tuple[Verdict, int] | None:
    """For a follower: None while the writer of part file `fd` holds it, else what the writer
    made of it and the size of its body (for "error", see noted_failure)."""
    if not try_lock(fd, fcntl.LOCK_SH):
        return None
    done = os.fstat(fd)
    fcntl.flock(fd, fcntl.LOCK_UN)
    mode = stat.S_IMODE(done.st_mode)
    if mode == _ERROR_MODE:
        noted = _read_note(fd, done.st_size)
        if noted is not None:
            return "error", noted[0]
    outcome: Verdict = (
        "ok" if mode == _DONE_MODE else "cached" if mode == _CACHED_MODE else "failed"
    )
    return outcome, done.st_size


def noted_failure(fd: int) -> tuple[str, str] | None:
    """For a follower, once `ended` said "error": the kind and the problem the writer noted."""
    noted = _read_note(fd, os.fstat(fd).st_size)
    return None if noted is None else (noted[1], noted[2])


def _read_note(fd: int, size: int) -> tuple[int, str, str] | None:
    """The body's size, and the kind and the problem noted after it; None if there is none."""
    if size < _NOTE_END.size:
        return None
    length, magic = _NOTE_END.unpack(os.pread(fd, _NOTE_END.size, size - _NOTE_END.size))
    body = size - _NOTE_END.size - length
    if magic != _NOTE_MAGIC or length > _NOTE_BYTES or body < 0:
        return None
    kind, tab, problem = os.pread(fd, length, body).decode(errors="replace").partition("\t")
    return (body, kind, problem) if tab else None


def _remove_if_abandoned(fd: int, path: Path) -> None:
    """Remove `path` (open as `fd`, which nobody else holds locked): its writer crashed."""
    if try_lock(fd, fcntl.LOCK_EX) and same_file(fd, path):
        log.info("removing %s, left by an interrupted download", path.name)
        os.unlink(path)


class PartFiles:
    """The part files under `partial` (created if missing)."""

    def __init__(self, partial: Path) -> None:
        self.directory = partial
        partial.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest() + ".part")

    def claim(self, part: Path) -> tuple[Literal["hold", "follow"], int]:
        """Become the writer of `part` (a fresh, locked, empty file) or a follower of its writer."""
        fresh: tuple[int, Path] | None = None
        try:
            for _ in range(_CLAIM_ATTEMPTS):
                try:
                    fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    pass
                else:
                    if not try_lock(fd, fcntl.LOCK_SH):
                        return "follow", fd  # a live download
                    # unlocked: its writer finished and removed it just now, or crashed
                    _remove_if_abandoned(fd, part)
                    os.close(fd)
                    continue
                if fresh is None:
                    fresh = self._fresh_file(part)
                try:
                    os.link(fresh[1], part)
                except FileExistsError:
                    continue
                except FileNotFoundError:  # our .new was swept by a starting process
                    os.close(fresh[0])
                    fresh = None
                    continue
                fd, new = fresh
                fresh = None
                os.unlink(new)
                return "hold", fd
            raise OSError(errno.EAGAIN, f"could not claim {part}")
        finally:
            if fresh is not None:
                with contextlib.suppress(OSError):
                    os.unlink(fresh[1])
                os.close(fresh[0])

    def _fresh_file(self, part: Path) -> tuple[int, Path]:
        """_new_locked_file, in a `partial/` made again if it is gone: the cache may be
        deleted by hand at any time (`rm -rf`), and made only at start it would stay gone."""
        try:
            return self._new_locked_file(part)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            return self._new_locked_file(part)

    @staticmethod
    def release(fd: int, part: Path) -> None:
        """The writer's end: remove `part` if still its own, then unlock (readers keep the fd)."""
        with contextlib.suppress(OSError):
            if same_file(fd, part):
                os.unlink(part)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)

    def sweep(self) -> None:
        """Remove what crashed writers left (files nobody holds locked)."""
        for path in self.directory.iterdir():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                _remove_if_abandoned(fd, path)
            finally:
                os.close(fd)

    def _new_locked_file(self, part: Path) -> tuple[int, Path]:
        new = part.with_name(f"{part.stem}.{os.getpid()}.{secrets.token_hex(4)}.new")
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _PART_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else knows this file yet: immediate
        return fd, new
