"""Which identity an Authorization header proves, without letting password hashing starve the
server.

An API token is looked up by its sha256 on the event loop: tokens never cost a password hash.
A password costs ~50 ms of scrypt, so (`[auth]` settings in brackets):
- its check runs on threads of its own (`PasswordPool`: `password_threads`, with at most
  `password_queue` checks waiting, at a lower CPU priority), never in the default pool that
  file serving and page rendering use; a check that finds the queue full is refused (503,
  Retry-After) rather than queued without bound;
- a header's answer is remembered (`Verifications`), a success for a minute, a failure too, so
  a repeated wrong password costs no hash; both are forgotten when users or tokens change;
- one client address may send `password_failures_per_minute` wrong passwords in a minute
  (`FailureLimit`); after that its password checks are refused (429) until the minute is over.
  Tokens, and credentials already remembered, still work.

Tests count the hashes by wrapping `hashlib.scrypt`; the pool's threads are named
`pyproxy-password_N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from pyproxy.lru import BoundedLRU, SingleFlight
from pyproxy.stores.auth import TOKEN_USERNAME, Identity, check_password, parse_basic
from pyproxy.stores.interfaces import UserStoreAPI

Revision = tuple[int, int]
_T = TypeVar("_T")
_WINDOW_S = 60.0
BUSY_RETRY_AFTER_S = 1
STOPPING = "Service Unavailable: the server is stopping; retry on another node or shortly."
PASSWORD_NICENESS = 10  # a thread at +10 gets about a tenth of a core a normal one also wants


class Refused(Exception):
    """A password check that was not made; the answer is `status` with Retry-After."""

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _yield_the_cpu() -> None:
    """Lower this thread's priority (Linux renices one thread by its id; elsewhere that call
    would renice the whole process, so it is not made): when every core is busy, as with one
    password thread per worker and as many workers as cores, the event loops come first."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread,
                           min(19, os.getpriority(os.PRIO_PROCESS, thread) + PASSWORD_NICENESS))


class PasswordPool:
    """scrypt on `threads` threads of its own, with at most `queue` checks waiting for one."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="pyproxy-password",
                                            initializer=_yield_the_cpu)
        self._limit = threads + queue
        self._lock = threading.Lock()  # the count drops in the pool's threads
        self._admitted = 0

    async def check(self, password: str, stored: str | None) -> bool:
        """check_password() in the pool; Refused (503) when as many checks as it holds are
        already running or waiting."""
        with self._lock:
            if self._admitted >= self._limit:
                raise Refused(
                    503,
                    "Service Unavailable: too many password checks are waiting; retry shortly,"
                    f" or use an API token (user name {TOKEN_USERNAME}), which needs none.",
                    BUSY_RETRY_AFTER_S,
                )
            self._admitted += 1
        try:
            future = self._executor.submit(check_password, password, stored)
        except RuntimeError:  # closed: the server is stopping
            self._release(None)
            raise Refused(503, STOPPING, BUSY_RETRY_AFTER_S) from None
        future.add_done_callback(self._release)  # also when cancelled before it ran
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                # dropped from the queue by close(), not given up by the client
                raise Refused(503, STOPPING, BUSY_RETRY_AFTER_S) from None
            raise

    def _release(self, _: Future[bool] | None) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class FailureLimit:
    """Wrong passwords per client address in a window of a minute from its first one. At most
    `capacity` addresses are followed; the least recently failing are forgotten first."""

    def __init__(self, per_minute: int, *, capacity: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        # address -> (start, failures)
        self._windows: BoundedLRU[str, tuple[float, int]] = BoundedLRU(capacity)

    def check(self, address: str) -> None:
        """Raise Refused (429) if this address may not have a password checked now."""
        window = self._windows.get(address)
        if not self._per_minute or window is None or window[1] < self._per_minute:
            return
        remaining = window[0] + _WINDOW_S - self._clock()
        if remaining <= 0:
            self._windows.pop(address)
            return
        raise Refused(
            429,
            f"Too Many Requests: {window[1]} wrong passwords from this address within a minute;"
            f" password checks resume in {math.ceil(remaining)} s. API tokens (user name"
            f" {TOKEN_USERNAME}) are not affected.",
            math.ceil(remaining),
        )

    def failed(self, address: str) -> None:
        if not self._per_minute:
            return
        now = self._clock()
        start, failures = self._windows.get(address) or (now, 0)
        if now - start >= _WINDOW_S:
            start, failures = now, 0
        self._windows.put(address, (start, failures + 1))


class _Memory(Generic[_T]):
    """Answers valid for one user-store revision and `ttl` seconds; the least recently used
    are forgotten first beyond `capacity`."""

    def __init__(self, ttl: float, capacity: int) -> None:
        self._ttl = ttl
        self._entries: BoundedLRU[bytes, tuple[float, Revision, _T]] = BoundedLRU(capacity)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, revision: Revision) -> _T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, kept_at, value = entry
        if kept_at != revision or time.monotonic() >= expires:
            self._entries.pop(key)
            return None
        return value

    def put(self, key: bytes, revision: Revision, value: _T) -> None:
        self._entries.put(key, (time.monotonic() + self._ttl, revision, value))


class Verifications:
    """What recent Authorization headers proved, so a read costs a dict lookup instead of a
    check, and the checks themselves, bounded as the module says.

    Keyed by sha256 of a per-process random salt and the header, so neither credentials nor a
    reusable digest of them is kept. An answer lives at most `ttl` seconds and is dropped as
    soon as the user store's revision moves (a removed user or a revoked token, in any process:
    the next request checks again). A header being checked is checked once, however many
    requests carry it meanwhile.
    """

    def __init__(self, users: UserStoreAPI, pool: PasswordPool, limit: FailureLimit, *,
                 ttl: float = 60.0, capacity: int = 4096) -> None:
        self._users = users
        self._pool = pool
        self._limit = limit
        self._salt = secrets.token_bytes(32)
        self._known: _Memory[Identity] = _Memory(ttl, capacity)
        self._wrong: _Memory[bool] = _Memory(ttl, capacity)
        # one check per header and user-store revision, however many requests carry it
        self._pending: SingleFlight[tuple[bytes, Revision], Identity | None] = SingleFlight()

    def __len__(self) -> int:
        return len(self._known)

    async def identify(self, header: str, address: str) -> Identity | None:
        """The identity the Authorization header proves; None if it proves none. Raises Refused
        when a password check is needed but cannot be made now."""
        key = hashlib.sha256(self._salt + header.encode("utf-8", "surrogatepass")).digest()
        revision = self._users.revision()
        if (identity := self._known.get(key, revision)) is not None:
            return identity
        if self._wrong.get(key, revision):
            return None
        credentials = parse_basic(header)
        if credentials is None:
            return None
        user, password = credentials
        if user == TOKEN_USERNAME:
            identity = self._users.token_identity(password)
            if identity is not None:
                self._known.put(key, revision, identity)
            return identity
        if (key, revision) not in self._pending:
            self._limit.check(address)
        identity = await self._pending.run(
            (key, revision), lambda: self._check(user, password, address)
        )
        # kept only if nothing changed while it was checked (it may be from before a removal)
        if self._users.revision() == revision:
            if identity is None:
                self._wrong.put(key, revision, True)
            else:
                self._known.put(key, revision, identity)
        return identity

    async def _check(self, user: str, password: str, address: str) -> Identity | None:
        record = self._users.password_record(user)
        if not await self._pool.check(password, None if record is None else record[0]):
            self._limit.failed(address)
            return None
        assert record is not None
        return Identity(user, record[1], via_token=False)

    def close(self) -> None:
        self._pool.close()
