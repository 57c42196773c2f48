"""The test servers themselves: PostgreSQL and moto start, answer, stop and start again, and moto
refuses a second conditional create of one key (what the cluster's single flight relies on), and
neither outlives a pytest killed with SIGKILL (tests/servers/watchdog.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import obstore
import psycopg
import pytest
from obstore.store import S3Store

from tests.servers.postgres import PostgresServer
from tests.servers.postgres import available as postgres_available
from tests.servers.s3 import S3Server
from tests.servers.s3 import available as s3_available
from tests.servers.watchdog import alive, matching

ROOT = Path(__file__).resolve().parent.parent.parent


def test_postgres_answers_and_comes_back(postgres: PostgresServer, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_dsn, connect_timeout=2)
    postgres.start()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select 2").fetchone() == (2,)


async def test_moto_refuses_a_second_conditional_create(s3: S3Server, bucket: str) -> None:
    store = S3Store(bucket, endpoint=s3.endpoint, region="us-east-1",
                    client_options={"allow_http": True})
    await obstore.put_async(store, "k", b"one", mode="create")
    results = await asyncio.gather(
        *(obstore.put_async(store, "k", b"two", mode="create") for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, obstore.exceptions.AlreadyExistsError) for r in results)
    assert bytes(await (await obstore.get_async(store, "k")).bytes_async()) == b"one"


SERVERS_THEN_SIGKILL = """
import time
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server
postgres, s3 = PostgresServer().start(), S3Server().start()
first = (postgres.pid, s3.pid)
postgres.stop()
s3.stop()
postgres.start()
s3.start()
print(*first, postgres.pid, s3.pid, postgres.root, flush=True)
time.sleep(60)
"""


def test_servers_die_with_a_sigkilled_pytest() -> None:
    """The watchdogs stop both servers (the ones running then: each was restarted) and remove
    PostgreSQL's directory when the process that started them is SIGKILLed."""
    for why_not in (postgres_available(), s3_available()):
        if why_not is not None:
            pytest.fail(f"needed for this test: {why_not}")
    started = time.monotonic()
    owner = subprocess.Popen([sys.executable, "-c", SERVERS_THEN_SIGKILL], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    root: Path | None = None
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the servers did not start (see the captured stderr)"
        *numbers, path = line.split()
        pids, root = [int(n) for n in numbers], Path(path)
        postgres_pid, s3_pid = pids[2:]
        assert alive(postgres_pid) and alive(s3_pid)
        owner.kill()
        owner.wait()
        killed = time.monotonic()
        while (any(alive(pid) for pid in pids) or root.exists()) and time.monotonic() < killed + 8:
            time.sleep(0.05)
        assert not [pid for pid in pids if alive(pid)], "a server outlived its pytest"
        assert not root.exists()
        print(f"started in {killed - started:.1f} s, gone {time.monotonic() - killed:.2f} s "
              "after SIGKILL")
    finally:
        owner.kill()
        owner.wait()
        for pid in pids:  # should the test fail, leave nothing behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


SERVERS_KILLED_STARTING = """
import threading, time
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server
postgres, s3 = PostgresServer(), S3Server()
print(postgres.root, flush=True)
print(postgres.data, flush=True)
print(" ".join(s3._command()), flush=True)
threading.Thread(target=s3.start).start()
postgres.start()
time.sleep(60)
"""


def test_servers_die_with_a_pytest_sigkilled_while_starting_them() -> None:
    """SIGKILL half way through the starts (initdb, moto not answering yet): what was being
    started is stopped too, not left to come up once nobody is watching."""
    for why_not in (postgres_available(), s3_available()):
        if why_not is not None:
            pytest.fail(f"needed for this test: {why_not}")
    owner = subprocess.Popen([sys.executable, "-c", SERVERS_KILLED_STARTING], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    root: Path | None = None
    words: list[str] = []
    try:
        assert owner.stdout is not None
        root = Path(owner.stdout.readline().strip())
        words = [owner.stdout.readline().strip(), owner.stdout.readline().strip()]
        deadline = time.monotonic() + 5
        while not all(matching(w) for w in words) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(matching(w) for w in words), "initdb and moto_server never showed up"
        owner.kill()
        owner.wait()
        killed = time.monotonic()
        while ((any(matching(w) for w in words) or root.exists())
               and time.monotonic() < killed + 8):
            time.sleep(0.05)
        assert not [w for w in words if matching(w)], "a server started after its pytest died"
        assert not root.exists()
        print(f"gone {time.monotonic() - killed:.2f} s after SIGKILL")
    finally:
        owner.kill()
        owner.wait()
        for pid in [pid for w in words for pid in matching(w)]:
            os.kill(pid, signal.SIGKILL)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
