"""The private store and the user store on either backend, for tests that must hold on both
(parity): the embedded one (SQLite in a directory) and a cluster node's (PostgreSQL, each
instance with a pool and a listener of its own, as another node would have).

`Backends.open_private(directory)` / `open_users(directory)` open one instance; `settle(store)`
waits until a PostgreSQL store has heard every change committed so far (the embedded stores see
them at once). Everything opened is closed at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.stores.auth import UserStore
from pyproxy.stores.interfaces import PrivateStoreAPI, UserStoreAPI
from pyproxy.stores.pg.cluster import open_cluster_stores
from pyproxy.stores.pg.notify import Listener
from pyproxy.stores.pg.private import PgPrivateStore
from pyproxy.stores.pg.users import PgUserStore
from pyproxy.stores.private import PrivateStore
from pyproxy.stores.private_files import PrivateFiles

BACKENDS = ["sqlite", "postgresql"]


class Backends:
    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self._request = request
        self._dsn: str | None = None
        self._opened: list[PrivateStoreAPI | UserStoreAPI] = []

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            self._dsn = self._request.getfixturevalue("pg_dsn")
        return self._dsn

    def open_private(self, directory: Path) -> PrivateStoreAPI:
        if self.kind == "sqlite":
            store: PrivateStoreAPI = PrivateStore(directory)
        else:
            store, users = open_cluster_stores(self.dsn, PrivateFiles(directory), listen=True)
            users.close()
        self._opened.append(store)
        return store

    def open_users(self, directory: Path) -> UserStoreAPI:
        if self.kind == "sqlite":
            users: UserStoreAPI = UserStore(directory)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            bodies = PrivateFiles(directory.with_name(directory.name + "-bodies"))  # unused
            private, users = open_cluster_stores(self.dsn, bodies, listen=True)
            private.close()
        self._opened.append(users)
        return users

    def close(self, store: PrivateStoreAPI | UserStoreAPI | None = None) -> None:
        """Close one store early (a crash or a restart), or at teardown all still open."""
        if store is not None:
            self._opened.remove(store)
            store.close()
            return
        while self._opened:
            self._opened.pop().close()


def listener_of(store: object) -> Listener | None:
    if isinstance(store, PgPrivateStore | PgUserStore):
        return store._listener
    return None


def settle(*stores: object) -> None:
    """Wait until each PostgreSQL store has heard everything committed before this call."""
    for store in stores:
        listener = listener_of(store)
        if listener is not None:
            assert listener.sync(timeout=5), "the listener did not hear its own ping"


def backends_fixture(request: pytest.FixtureRequest) -> Iterator[Backends]:
    """The body of tests/conftest.py's `backends` fixture."""
    opened = Backends(request.param, request)
    yield opened
    opened.close()
