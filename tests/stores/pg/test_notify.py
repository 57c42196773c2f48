"""pyproxy.stores.pg.notify: notifications delivered on commit only, in commit order, and a
lost listening connection (pg_terminate_backend, a server restart) makes the node drop
everything it holds and listen again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from pyproxy.stores.pg.notify import MAX_PAYLOAD, Changes, Listener, notify, wait_connected
from tests.servers.postgres import PostgresServer


class Heard:
    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.lost = 0
        self.event = threading.Event()

    def project(self, rest: str) -> None:
        self.payloads.append(rest)
        self.event.set()

    def dropped(self) -> None:
        self.lost += 1

    def wait_for(self, payload: str, timeout: float = 5.0) -> float:
        """Seconds until `payload` was heard."""
        start = time.monotonic()
        while payload not in self.payloads:
            assert time.monotonic() - start < timeout, f"{payload!r} not heard: {self.payloads}"
            self.event.wait(0.01)
            self.event.clear()
        return time.monotonic() - start


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def listener(pg_dsn: str, heard: Heard) -> Iterator[Listener]:
    listening = Listener(pg_dsn)
    listening.subscribe("project", heard.project)
    listening.on_lost(heard.dropped)
    listening.start()
    assert listening.connected
    yield listening
    listening.close()


def backend_pids(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' AND pid != pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows]


def test_delivered_on_commit_only(pg_dsn: str, listener: Listener, heard: Heard) -> None:
    with psycopg.connect(pg_dsn) as conn:
        notify(conn, "project:rolled-back")
        conn.rollback()
        notify(conn, "project:foo")
        assert listener.sync()
        assert heard.payloads == []  # not committed yet
        conn.commit()
    elapsed = heard.wait_for("foo")
    assert elapsed < 1.0  # the cluster's promise: in effect on every node within 1 s
    assert listener.sync()
    assert heard.payloads == ["foo"]


def test_commit_order_and_sync(pg_dsn: str, listener: Listener, heard: Heard) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for index in range(20):
            notify(conn, f"project:p{index}")
    assert listener.sync()  # the ping comes after everything committed before it
    assert heard.payloads == [f"p{index}" for index in range(20)]


def test_payload_limit(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, pytest.raises(ValueError):
        notify(conn, "project:" + "x" * MAX_PAYLOAD)


def test_a_terminated_listener_drops_everything_and_listens_again(
    pg_dsn: str, listener: Listener, heard: Heard
) -> None:
    lost_before = heard.lost  # one at the first connection: nothing was heard before it
    (pid,) = backend_pids(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    while listener.reconnects == 0:
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.01)
    assert wait_connected(listener, 5)
    assert heard.lost >= lost_before + 2  # when the connection went, and once back
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        notify(conn, "project:after")
    heard.wait_for("after")


def test_a_stopped_server_is_waited_for(
    postgres: PostgresServer, pg_dsn: str, listener: Listener, heard: Heard
) -> None:
    postgres.stop()
    try:
        deadline = time.monotonic() + 5
        while listener.connected:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        lost = heard.lost
        assert lost >= 2
    finally:
        postgres.start()
    assert wait_connected(listener, 10), "not listening again after the server came back"
    assert heard.lost > lost
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        notify(conn, "project:back")
    heard.wait_for("back")


def test_changes_take_what_was_marked() -> None:
    changes = Changes()
    assert changes.take() == (True, frozenset())  # nothing loaded yet: everything
    start = changes.value
    changes.mark("a")
    changes.mark("b")
    assert changes.value == start + 2
    assert changes.take() == (False, frozenset({"a", "b"}))
    assert changes.take() == (False, frozenset())
    changes.mark("c")
    changes.mark_all()
    assert changes.take() == (True, frozenset())
