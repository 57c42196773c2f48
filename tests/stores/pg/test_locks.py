"""Advisory locks on dedicated connections (pyproxy/stores/pg/locks.py), on a real PostgreSQL:
one holder per name across sessions, and a holder killed with SIGKILL frees its lock at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.locks import AdvisoryLocks
from tests.servers.postgres import PostgresServer


def test_one_holder_per_name_across_sessions(pg_dsn: str) -> None:
    one, two = AdvisoryLocks(pg_dsn), AdvisoryLocks(pg_dsn)
    try:
        held = one.try_lock("blob:k")
        assert held is not None
        assert two.try_lock("blob:k") is None
        other = two.try_lock("blob:other")
        assert other is not None
        one.release(held)
        again = two.try_lock("blob:k")
        assert again is not None
        # a released connection is reused, and holds nothing any more
        reused = one.try_lock("blob:x")
        assert reused is not None and reused.conn is held.conn
        assert one.try_lock("blob:k") is None
    finally:
        one.close()
        two.close()


def test_a_killed_holder_frees_its_lock_at_once(pg_dsn: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time, psycopg\n"
            "conn = psycopg.connect(sys.argv[1], autocommit=True)\n"
            "conn.execute(\"SELECT pg_advisory_lock(hashtextextended('blob:k', 0))\")\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n"
        ), pg_dsn],
        stdout=subprocess.PIPE, text=True,
    )
    locks = AdvisoryLocks(pg_dsn)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert locks.try_lock("blob:k") is None
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        while (held := locks.try_lock("blob:k")) is None:
            assert time.monotonic() - killed < 2, "the dead holder's lock was not freed"
            time.sleep(0.002)
        print(f"lock free {1000 * (time.monotonic() - killed):.1f} ms after SIGKILL")
        locks.release(held)
    finally:
        holder.kill()
        holder.wait()
        locks.close()


def test_an_unreachable_server_is_one_line() -> None:
    locks = AdvisoryLocks("postgresql://pyproxy:s3cret@127.0.0.1:1/pyproxy")
    with pytest.raises(DatabaseUnavailable) as caught:
        locks.try_lock("blob:k")
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_after_a_server_restart_the_first_lock_is_taken(pg_dsn: str, postgres: PostgresServer) -> None:
    locks = AdvisoryLocks(pg_dsn)
    try:
        query = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
        locks.warm("blob:warm", query, ("blob:warm",), connections=3)  # idle, all broken below
        postgres.stop()
        postgres.start()
        held = locks.try_lock("blob:k")  # not a 503 per idle connection left from before
        assert held is not None
        locks.release(held)
    finally:
        locks.close()
