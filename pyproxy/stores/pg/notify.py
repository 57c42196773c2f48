"""Cross-node invalidation: PostgreSQL LISTEN/NOTIFY on one channel, `pyproxy`.

Every writing transaction calls `notify(conn, payload)` before it commits, so the message is
delivered to every listener when, and only when, the change is visible (payloads:
`project:<normalized name>`, `users`, ...; under 8000 bytes). Each worker process holds ONE
`Listener`: a thread with a blocking connection of its own. A thread rather than an
AsyncConnection in the worker's loop because the stores are synchronous (the loop reads them,
worker threads write them): a notification is recorded while the loop is busy, the CLI and the
tests use the stores without any loop, and the web lifecycle needs no hook.

What a listener hears goes to `Changes` objects (one per store): a dirty set and a generation
number, so a store's freshness check on the warm path is an integer compare, as with the
embedded stores' mmap'd ChangeCounter. When the listening connection is lost, notifications sent
during the gap are lost too: every store is told to drop everything (`Changes.mark_all`) when the
connection goes and again once it is back, and the listener reconnects with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable

import psycopg

from pyproxy.stores.pg.connect import connection_options, describe

log = logging.getLogger("pyproxy.pg.notify")

CHANNEL = "pyproxy"
MAX_PAYLOAD = 7999  # PostgreSQL refuses 8000 bytes and more
BACKOFF_FIRST_S = 0.05
# what a node holds in memory may be stale until the listener is back, so once the database is
# back the listener must be too, soon: a refused connection costs the server next to nothing
BACKOFF_MAX_S = 0.5
_WAKE_S = 0.1  # how often the thread looks at its stop flag (ten cheap wake-ups a second)


def notify(conn: psycopg.Connection[tuple[object, ...]], payload: str) -> None:
    """Send `payload` on the channel from inside the caller's transaction (delivered on commit)."""
    if len(payload.encode()) > MAX_PAYLOAD:
        raise ValueError("a notification payload must be under 8000 bytes")
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


class Changes:
    """What one store must reload: the keys named since it last looked, or everything.

    `value` moves on every mark, so a reader compares one integer per request; `take()` hands
    over what was marked (the listener thread marks, the loop and worker threads take)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._all = True  # nothing is loaded yet
        self.value = 0

    def mark(self, key: str) -> None:
        with self._lock:
            self._keys.add(key)
            self.value += 1

    def mark_all(self) -> None:
        with self._lock:
            self._all = True
            self._keys.clear()
            self.value += 1

    def take(self) -> tuple[bool, frozenset[str]]:
        """(everything?, the keys) marked since the last take; reset."""
        with self._lock:
            taken = self._all, frozenset(self._keys)
            self._all = False
            self._keys.clear()
            return taken


Handler = Callable[[str], None]  # called with the payload's part after "<topic>:"


class Listener:
    """One LISTEN connection for a process, on a daemon thread; see the module docstring.

    `subscribe(topic, handler)`: payloads "topic" or "topic:rest" go to handler(rest);
    `on_lost(callback)`: called when the connection goes and again when it is back (everything
    held in memory may be out of date). `connected` says whether it is listening now."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._handlers: dict[str, list[Handler]] = {}
        self._lost: list[Callable[[], None]] = []
        self._back: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._synced: dict[str, threading.Event] = {}
        self._sync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.reconnects = 0  # connections after the first, for tests and logs

    @property
    def connected(self) -> bool:
        return self._listening.is_set()

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._lost.append(callback)

    def on_back(self, callback: Callable[[], None]) -> None:
        """Called when the connection is back after a loss, before the stores are told."""
        self._back.append(callback)

    def start(self, *, wait: float = 5.0) -> Listener:
        """Start listening; wait up to `wait` seconds for the first connection."""
        self._thread = threading.Thread(target=self._run, name="pyproxy-listen", daemon=True)
        self._thread.start()
        self._listening.wait(wait)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_WAKE_S * 4)

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything committed before this call has been heard (notifications of
        one channel arrive in commit order, so a ping sent now arrives after them)."""
        token = uuid.uuid4().hex
        heard = threading.Event()
        with self._sync_lock:
            self._synced[token] = heard
        try:
            with psycopg.connect(self.dsn, autocommit=True, **connection_options()) as conn:  # type: ignore[arg-type]
                notify(conn, f"sync:{token}")
            return heard.wait(timeout)
        finally:
            with self._sync_lock:
                self._synced.pop(token, None)

    # ---- the thread ----

    def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        first = True
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, **connection_options())  # type: ignore[arg-type]
            except psycopg.Error as exc:
                log.debug("cannot listen yet (%s); again in %.2f s", describe(exc), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                if not first:
                    self.reconnects += 1
                    log.warning("listening for changes again: everything held in memory is"
                                " reloaded")
                    self._call(self._back)
                self._dropped()  # what was sent before LISTEN took effect was not heard
                self._listening.set()
                first, delay = False, BACKOFF_FIRST_S
                self._listen(conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning("lost the connection that listens for changes (%s):"
                                " reconnecting", describe(exc))
            finally:
                self._listening.clear()
                if not self._stop.is_set():
                    self._dropped()
                with contextlib.suppress(Exception):
                    conn.close()

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not self._stop.is_set():
            # each round ends after _WAKE_S, so close() is seen soon; a dead connection raises
            for message in conn.notifies(timeout=_WAKE_S):
                self._deliver(message.payload)

    def _deliver(self, payload: str) -> None:
        topic, _, rest = payload.partition(":")
        if topic == "sync":
            with self._sync_lock:
                heard = self._synced.get(rest)
            if heard is not None:
                heard.set()
            return
        for handler in self._handlers.get(topic, ()):
            try:
                handler(rest)
            except Exception:  # one store's bug must not stop the others hearing
                log.exception("handling the notification %r failed", payload)

    def _dropped(self) -> None:
        self._call(self._lost)

    @staticmethod
    def _call(callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback of the listener failed")


def wait_connected(listener: Listener, timeout: float) -> bool:
    """For tests and start-up: wait until the listener listens (again)."""
    deadline = time.monotonic() + timeout
    while not listener.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    return listener.connected
