"""Opening a cluster node's stores on PostgreSQL: one pool (the schema migrated first), one
listener per process when it serves, shared by the private store and the user store (and the
upstream page caches and first-seen times: `Shared.acquire`) and closed when all are."""

from __future__ import annotations

import threading
from pathlib import Path

from pyproxy.stores.objects import Bucket
from pyproxy.stores.pg.database import Database
from pyproxy.stores.pg.first_seen import PgFirstSeenStore
from pyproxy.stores.pg.notify import Listener
from pyproxy.stores.pg.pages import ClusterPageStore
from pyproxy.stores.pg.private import PgPrivateStore
from pyproxy.stores.pg.users import PgUserStore
from pyproxy.stores.private_files import FileBodies

LISTEN_WAIT_S = 5.0


class Shared:
    """The pool and the listener of one process's stores, closed with the last store."""

    def __init__(self, db: Database, listener: Listener | None, users: int) -> None:
        self.db, self.listener = db, listener
        self._lock = threading.Lock()
        self._users = users

    def acquire(self) -> Shared:
        """One more store uses the pool and the listener (and calls `release` when closed)."""
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users:
                return
        if self.listener is not None:
            self.listener.close()
        self.db.close()


class ClusterPrivateStore(PgPrivateStore):
    def __init__(self, shared: Shared, files: FileBodies) -> None:
        super().__init__(shared.db, files, shared.listener)
        self._shared: Shared | None = shared
        self.shared = shared  # for the other stores of this process

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.release()


class ClusterUserStore(PgUserStore):
    def __init__(self, shared: Shared) -> None:
        super().__init__(shared.db, shared.listener)
        self._shared: Shared | None = shared

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.release()


def open_cluster_stores(
    dsn: str, files: FileBodies, *, listen: bool
) -> tuple[ClusterPrivateStore, ClusterUserStore]:
    """Connect and migrate (DatabaseUnavailable: one line, when the server is not there);
    with `listen` (a server's worker), hold what is read in memory and hear of changes."""
    db = Database(dsn)
    listener = None
    if listen:
        listener = Listener(dsn)
        listener.on_back(db.reset)
        db.reachable = lambda: listener is not None and listener.connected
        listener.start(wait=LISTEN_WAIT_S)
    shared = Shared(db, listener, users=2)
    return ClusterPrivateStore(shared, files), ClusterUserStore(shared)


def cluster_pages(
    shared: Shared, upstream: str, directory: Path, *, memory_bytes: int,
    bucket: Bucket | None = None,
) -> ClusterPageStore:
    """The page cache of one upstream ('' or a [[upstreams]] name) on the process's pool, its
    project list shared through `bucket` and built in `directory`."""
    shared.acquire()
    return ClusterPageStore(
        shared.db, shared.listener, upstream, directory, memory_bytes=memory_bytes,
        release=shared.release, bucket=bucket,
    )


def cluster_first_seen(shared: Shared) -> PgFirstSeenStore:
    shared.acquire()
    return PgFirstSeenStore(shared.db, release=shared.release)
