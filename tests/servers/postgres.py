"""A throwaway PostgreSQL server for the tests: Debian's own binaries, run as the `postgres` user
(initdb refuses root), on 127.0.0.1 and a free port, fsync off, stopped by its PID.

`PostgresServer.start()` makes the cluster once; `stop()` and `start()` again are the fault tests'
"database down" and "back"; `new_database()` gives each test a database of its own. A watchdog
(tests/servers/watchdog.py) stops the server and removes its directory if pytest dies first.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from tests.servers.watchdog import Watchdog

BIN_ROOTS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
USER = "pyproxy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def available() -> str | None:
    """None when a server can run here, else why not (one line)."""
    if not BIN_ROOTS:
        return "Debian's postgresql package is not installed (/usr/lib/postgresql/*/bin)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user to run the server as"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.bin = BIN_ROOTS[0]
        self.root = Path(tempfile.mkdtemp(prefix="pyproxy-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._made = False
        # the postmaster, initdb, pg_ctl: all name the data directory on their command lines
        self._watchdog = Watchdog(match=str(self.data), first_signal=signal.SIGINT,
                                  remove=self.root)

    def _as_postgres(self, *args: str) -> None:
        command = [str(arg) for arg in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def start(self) -> PostgresServer:
        if not self._made:
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
            self._as_postgres(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", USER,
                              "--no-sync", "-E", "UTF8")
            self._made = True
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-w",
                          "-o", options, "start")
        return self

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT: fast shutdown (clients are disconnected); SIGKILL for a crash."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + 30
        # the pid file goes when the server is down; the zombie is reaped later by PID 1
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            if sig == signal.SIGKILL:
                (self.data / "postmaster.pid").unlink(missing_ok=True)
                break
            time.sleep(0.02)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its DSN."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self._watchdog.close()
