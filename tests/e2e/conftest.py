"""Start `pyproxy serve` subprocesses for end-to-end tests.

Fixtures:
- `pyproxy_factory` (function scope) and `module_pyproxy_factory` (module scope): a
  `ServerFactory`; `factory.start(data_dir=None, *, user="alice", password=..., admin=False,
  create_user=None, extra_args=())`
  returns a running `PyproxyServer`. Every server the factory started is stopped (by its PID:
  SIGTERM, then SIGKILL after a timeout) at the end of the scope, and teardown fails if any process
  of its session is left.
- `pyproxy_server` (module scope): one shared private-only server with user `alice`.
- `fake_factory` (function scope) and `module_fake_factory` (module scope): a `FakeFactory`;
  `factory(formats="json")` returns a `FakeUpstream` serving from a background thread (as
  `FakeUpstream.running_in_thread`), stopped at the end of the scope. (The in-process tests use
  tests/conftest.py's `fake_upstream` instead, in the test's own loop.)

Every test under tests/e2e is marked `e2e`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.access_log import access_records
from tests.e2e.clients import client_env, describe, get, run
from tests.fake_upstream import FakeUpstream, Formats
from tests.processes import session_members

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LISTENING = re.compile(r"pyproxy: listening on (http://127\.0\.0\.1:(\d+))")


def pyproxy_command() -> list[str]:
    script = Path(sys.executable).with_name("pyproxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pyproxy"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


class PyproxyServer:
    """One `pyproxy serve` subprocess. `.url` is the origin (http://127.0.0.1:PORT)."""

    def __init__(self, data_dir: Path, log_dir: Path, extra_args: Sequence[str] = (),
                 name: str = "server") -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.stderr_path = log_dir / f"{name}.stderr"
        self.stdout_path = log_dir / f"{name}.stdout"
        self.cwd = log_dir
        self.url = ""
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.user: str | None = None
        self.password: str | None = None

    # -- addresses --------------------------------------------------------------------------
    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def upload_url(self) -> str:
        return f"{self.url}/legacy/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- process ----------------------------------------------------------------------------
    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_records(self) -> list[dict]:
        """The access-log records on this server's stderr, text or JSON (tests/access_log.py)."""
        return access_records(self.stderr_text())

    def requests(self, method: str | None = None, path_re: str = "", status: int | None = None,
                 agent: str | None = None) -> int | None:
        """How many access-log records on this server's stderr match; `path_re` is searched in
        the logged path (decoded, query dropped but for `format=`), `agent` is a User-Agent
        prefix such as "pip/". None when the server logs no requests at all."""
        records = self.access_records()
        if not records:
            return None
        return sum(
            1
            for r in records
            if (method is None or r["method"] == method)
            and re.search(path_re, r["path"])
            and (status is None or r["status"] == status)
            and (agent is None or r["agent"].startswith(agent))
        )

    def start(self) -> PyproxyServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*pyproxy_command(), "serve", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", "0", *self.extra_args]
        if "--upstream" not in self.extra_args:
            cmd.append("--no-upstream")
        if "--workers" not in self.extra_args:
            cmd += ["--workers", "1"]  # the default, one per core, only where a test asks
        offset = len(self.stderr_text())  # a restart appends to the same log
        with self.stderr_path.open("ab") as err, self.stdout_path.open("ab") as out:
            # own session: lets stop() find (and report) any child it leaves behind
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=client_env(), cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                match = LISTENING.search(self.stderr_text()[offset:])
                if match:
                    self.url, self.port = match.group(1), int(match.group(2))
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pyproxy exited with {self.proc.returncode} before "
                                       "listening")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no 'pyproxy: listening on' line within {START_TIMEOUT}s")
                time.sleep(0.05)
            while True:  # the socket is bound; wait until the app answers
                try:
                    if get(self.simple_url, timeout=5).status < 500:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.simple_url} did not answer within "
                                       f"{START_TIMEOUT}s")
                time.sleep(0.05)
            # the first worker may answer before the others listen: every worker, whatever
            # /ready says of upstream ("1 of 2 workers serving" until then)
            while "workers serving" in (ready := get(f"{self.url}/ready", timeout=5)).body:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not every worker serves within {START_TIMEOUT}s:"
                                       f" {ready.body}")
                time.sleep(0.05)
        except Exception as exc:
            self.stop()
            pytest.fail(f"starting {' '.join(cmd)} failed: {exc}\n--- pyproxy stderr ---\n"
                        f"{self.stderr_text()}", pytrace=False)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[int]:
        """SIGTERM the server by PID, SIGKILL after `timeout`; then kill (by PID) and return any
        other live process of its session (e.g. workers left behind)."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self._reap_session()

    def kill(self) -> list[int]:
        """SIGKILL the server by PID (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        return self._reap_session()

    def _reap_session(self) -> list[int]:
        assert self.proc is not None
        leftovers = [pid for pid in session_members(self.proc.pid) if pid != os.getpid()]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- CLI on the same data dir --------------------------------------------------------------
    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        """`pyproxy ARGS --data-dir DIR` (works while the server runs)."""
        return run([*pyproxy_command(), *args, "--data-dir", str(self.data_dir)], input=input,
                   check=check, cwd=self.cwd, timeout=60)

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        self.cli("user", "add", name, "--password-stdin", *(["--admin"] if admin else []),
                 input=password + "\n")

    def create_token(self, user: str) -> str:
        proc = self.cli("token", "create", user)
        token = proc.stdout.strip()
        assert token and "\n" not in token, (
            f"token create printed more than a token:{describe(proc)}")
        return token

    def __repr__(self) -> str:
        return f"<PyproxyServer {self.url} pid={self.proc.pid if self.proc else None}>"


class ServerFactory:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.servers: list[PyproxyServer] = []

    def start(
        self,
        data_dir: Path | None = None,
        *,
        user: str | None = "alice",
        password: str = "alice-secret-pw",
        admin: bool = False,
        create_user: bool | None = None,
        extra_args: Sequence[str] = (),
    ) -> PyproxyServer:
        """Start a server on `data_dir` (default: a new one). `user`/`password` are recorded on the
        server object; the user is created with the CLI before the server starts when
        `create_user` (default: only for a new data dir)."""
        n = len(self.servers)
        if data_dir is None:
            data_dir = self.base / f"data{n}"
        log_dir = self.base / f"logs{n}"
        log_dir.mkdir(parents=True, exist_ok=True)
        server = PyproxyServer(data_dir, log_dir, extra_args, name=f"server{n}")
        self.servers.append(server)
        if create_user is None:
            create_user = not data_dir.exists()
        if user is not None:
            server.user, server.password = user, password
            if create_user:
                data_dir.mkdir(parents=True, exist_ok=True)
                server.add_user(user, password, admin=admin)
        return server.start()

    def close(self) -> None:
        problems = []
        for server in self.servers:
            leftovers = server.stop()
            if leftovers:
                problems.append(f"{server!r} left processes {leftovers} (killed)")
        self.servers.clear()
        assert not problems, "; ".join(problems)


@pytest.fixture
def pyproxy_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path / "pyproxy")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_pyproxy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory.mktemp("pyproxy"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def pyproxy_server(module_pyproxy_factory: ServerFactory) -> PyproxyServer:
    """A private-only server shared by the tests of one module; user `alice`."""
    return module_pyproxy_factory.start()


class FakeFactory:
    """Starts FakeUpstreams in background threads; `close()` stops them all."""

    def __init__(self) -> None:
        self._running: list[contextlib.AbstractContextManager[FakeUpstream]] = []

    def __call__(self, formats: Formats = "json") -> FakeUpstream:
        context = FakeUpstream.running_in_thread(formats=formats)
        upstream = context.__enter__()
        self._running.append(context)
        return upstream

    def close(self) -> None:
        while self._running:
            self._running.pop().__exit__(None, None, None)


@pytest.fixture
def fake_factory() -> Iterator[FakeFactory]:
    factory = FakeFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_fake_factory() -> Iterator[FakeFactory]:
    factory = FakeFactory()
    try:
        yield factory
    finally:
        factory.close()
