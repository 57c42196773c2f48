"""Starting and stopping the servers under test, each on 127.0.0.1, and installing what they need.

Every process is started in its own session and stopped by its pid (SIGTERM, then SIGKILL), and
any other live member of its session (workers, children) is then killed by pid too. A server that
cannot be installed or started raises `Unavailable` with a one-line reason.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.corpus import (
    REPO,  # importing corpus also puts the repository on sys.path
)
from tests.processes import session_members

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 60.0
INSTALL_TIMEOUT = 900.0

_DROP_PREFIXES = ("PIP_", "UV_", "PYPROXY_", "PROXPI_", "DEVPI_")
_DROP_NAMES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "PYTHONPATH", "PYTHONHOME",
               "VIRTUAL_ENV"}


class Unavailable(Exception):
    """This server cannot take part; str() is the reason shown in the table."""


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment minus pip/uv/proxy settings: servers and clients talk over loopback only,
    and the machine's pip configuration must not satisfy an install behind the server's back."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(_DROP_PREFIXES) and k.upper() not in _DROP_NAMES}
    env.update(PIP_CONFIG_FILE=os.devnull, NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """One process we started (own session), its output in `log_dir/<name>.log`."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, *, env: dict[str, str],
                 cwd: Path | None = None) -> None:
        self.name, self.cmd, self.env, self.cwd = name, [str(c) for c in cmd], env, cwd
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                          start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_line(self) -> str:
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        return lines[-1][:200] if lines else "(no output)"

    def wait_for_output(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.output())
            if match:
                return match
            self.check_alive()
            if time.monotonic() > deadline:
                raise Unavailable(f"{self.name}: no {pattern!r} within {timeout:.0f}s; "
                                  f"last output: {self.last_line()}")
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise Unavailable(f"{self.name} exited with {self.popen.returncode}: "
                              f"{self.last_line()}")

    def pids(self) -> list[int]:
        if self.popen is None or self.popen.poll() is not None:
            return []
        return session_members(self.popen.pid)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pid in session_members(self.popen.pid):
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_http(url: str, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    """Until `url` answers anything below 500."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise Unavailable(f"{proc.name}: {url} did not answer within {timeout:.0f}s ({last})")


# ---- installing ---------------------------------------------------------------------------------

def ensure_apt(commands: dict[str, str], allow: bool) -> str | None:
    """Install the Debian packages of the missing `commands` ({command: package}); None if all
    are there afterwards, else the reason."""
    missing = {c: p for c, p in commands.items() if shutil.which(c) is None}
    if not missing:
        return None
    if not allow:
        return f"{', '.join(missing)} not installed (--no-install)"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"{', '.join(missing)} not installed and apt-get is not usable here"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
           *sorted(set(missing.values()))]
    print(f"setup: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                          check=False)
    if proc.returncode != 0:  # stale package lists: refresh once
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                       timeout=INSTALL_TIMEOUT, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT, check=False)
    still = [c for c in missing if shutil.which(c) is None]
    if still:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return f"{', '.join(still)} could not be installed: {tail[0][:160]}"
    return None


def ensure_venv(directory: Path, packages: list[str], allow: bool) -> Path:
    """A virtual environment with `packages` installed by pip from the machine's configured index;
    reused while its stamp lists the same packages. Returns its bin directory."""
    stamp = directory / "bench-installed.json"
    if stamp.exists() and json.loads(stamp.read_text()) == packages:
        return directory / "bin"
    if not allow:
        raise Unavailable(f"no virtual environment at {directory} (--no-install)")
    shutil.rmtree(directory, ignore_errors=True)
    print(f"setup: virtual environment {directory.name}: {' '.join(packages)}", file=sys.stderr,
          flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True,
                       capture_output=True, timeout=INSTALL_TIMEOUT)
        proc = subprocess.run(
            [str(directory / "bin" / "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", *packages],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    except (subprocess.SubprocessError, OSError) as exc:
        raise Unavailable(f"installing {' '.join(packages)} failed: {exc}") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["?"]
        raise Unavailable(f"pip install {' '.join(packages)} failed: {lines[-1][:160]}")
    stamp.write_text(json.dumps(packages))
    return directory / "bin"


# ---- the servers --------------------------------------------------------------------------------

class Server:
    """A server under test. `index_url` is its simple index root (ending in '/')."""

    name = "?"
    kind = "proxy"  # "proxy" (a pull-through cache), "static" (nginx) or "direct" (the upstream)
    unavailable: str | None = None  # set when prepare() failed

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[Proc] = []
        self.index_url = ""

    def prepare(self, allow_install: bool) -> None:
        """Install what is missing; raise Unavailable."""

    def start(self, upstream_url: str) -> None:
        raise NotImplementedError

    def page_url(self, project: str) -> str:
        return f"{self.index_url}{project}/"

    def version(self) -> str:
        return ""

    def log_mark(self) -> int:
        """Where the server's log ends now (see `request_ms`)."""
        return 0

    def request_ms(self, since: int, path: str) -> list[float] | None:
        """Server-side durations (ms) of the requests for `path` logged after `since`; None
        when the server does not log them."""
        return None

    def settle(self, url: str) -> dict:
        """Before a warm load on `url`, which it has served: finish what serving it cold left
        to do (a cluster's copy into its bucket, each node's local copy); what that took."""
        return {}

    def pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in proc.pids()]

    def main_pid(self) -> int | None:
        return self.procs[0].pid if self.procs else None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> list[Path]:
        return [proc.log for proc in self.procs]

    def _fresh_dir(self, name: str) -> Path:
        path = self.work / "state" / self.name / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    @property
    def log_dir(self) -> Path:
        return self.work / "logs"


class Pyproxy(Server):
    """`pyproxy serve` on a fresh data dir; workers None: its default ("auto", one per core)."""

    def __init__(self, work: Path, workers: int | None = 1, *, name: str | None = None,
                 env: dict[str, str] | None = None, port: int = 0) -> None:
        super().__init__(work)
        self.workers, self.env, self.port = workers, env or {}, port
        default = "pyproxy" if workers == 1 else f"pyproxy-{workers}w" if workers else "pyproxy-auto"
        self.name = name or default

    def prepare(self, allow_install: bool) -> None:
        if not (REPO / ".venv" / "bin" / "pyproxy").exists() and shutil.which("pyproxy") is None:
            raise Unavailable("no pyproxy command (pip install -e . into .venv)")

    def version(self) -> str:
        from importlib.metadata import version

        workers = self.workers or f"default: {default_workers()}"
        return f"pyproxy {version('pyproxy')}, {workers} worker(s)"

    def log_mark(self) -> int:
        return self.procs[0].log.stat().st_size if self.procs else 0

    def log_since(self, since: int) -> str:
        if not self.procs:
            return ""
        with self.procs[0].log.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def request_ms(self, since: int, path: str) -> list[float] | None:
        """From the access log (on by default): every worker writes to the one log file."""
        if not self.procs:
            return None
        wanted = f" path={path} "
        return [float(m.group(1)) for line in self.log_since(since).splitlines()
                if wanted in line and (m := _DURATION.search(line))]

    def requests(self, since: int) -> list[tuple[str, str, int, str]]:
        """(method, path, status, User-Agent) of every request in the access log after `since`."""
        found = []
        for line in self.log_since(since).splitlines():
            if (m := _REQUEST.search(line)) is None:
                continue
            agent = _AGENT.search(line)
            found.append((m.group(1), _unquote(m.group(2)), int(m.group(3)),
                          _unquote(agent.group(1)) if agent else ""))
        return found

    def start(self, upstream_url: str) -> None:
        exe = REPO / ".venv" / "bin" / "pyproxy"
        command = [str(exe)] if exe.exists() else [shutil.which("pyproxy") or "pyproxy"]
        data = self._fresh_dir("data")
        workers = [] if self.workers is None else ["--workers", str(self.workers)]
        proc = Proc(self.name, [*command, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                "--data-dir", data, "--upstream", upstream_url, *workers],
                    self.log_dir, env=clean_env(self.env), cwd=data)  # cwd: no ./pyproxy.toml
        self.procs.append(proc.start())
        match = proc.wait_for_output(r"pyproxy: listening on (http://127\.0\.0\.1:\d+)")
        origin = match.group(1)
        wait_http(origin + "/", proc)
        self.index_url = origin + "/simple/"


def default_workers() -> int:
    """What `workers = "auto"` gives: one per core this process may run on."""
    return len(os.sched_getaffinity(0))


_LOGFMT_VALUE = r'("(?:[^"\\]|\\.)*"|\S+)'
_REQUEST = re.compile(rf" method=(\S+) path={_LOGFMT_VALUE} status=(\d+) ")
_AGENT = re.compile(rf" agent={_LOGFMT_VALUE}$")


def _unquote(value: str) -> str:
    """A logfmt value: quoted ones are JSON strings."""
    return json.loads(value) if value.startswith('"') else value
_DURATION = re.compile(r" duration_ms=([\d.]+) ")


class Nginx(Server):
    name = "nginx"
    kind = "static"

    def __init__(self, work: Path, tree: Path, workers: int = 2) -> None:
        super().__init__(work)
        self.tree, self.workers = tree, workers

    def prepare(self, allow_install: bool) -> None:
        reason = ensure_apt({"nginx": "nginx"}, allow_install)
        if reason:
            raise Unavailable(reason)

    def version(self) -> str:
        proc = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
        return f"{proc.stderr.strip().rsplit(' ', 1)[-1]}, {self.workers} worker(s)"

    def start(self, upstream_url: str) -> None:
        prefix = self._fresh_dir("prefix")
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=self.tree,
                                          workers=self.workers))
        proc = Proc(self.name, [shutil.which("nginx") or "nginx", "-p", prefix, "-c", conf,
                                "-e", prefix / "error.log"], self.log_dir, env=clean_env())
        self.procs.append(proc.start())
        self.index_url = f"http://127.0.0.1:{port}/simple/"
        wait_http(self.index_url, proc)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(sig=signal.SIGQUIT)  # graceful: the master stops its workers


# The physical limit: the corpus tree as static files. The page format follows Accept through a
# map (pip asks JSON first); .gz twins are sent to clients that accept gzip.
NGINX_CONF = """\
daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    map $http_accept $simple_ext {{
        default html;
        "~*application/vnd\\.pypi\\.simple\\.v1\\+json" json;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /simple/ {{
            types {{ text/html html; application/vnd.pypi.simple.v1+json json; }}
            gzip_static on;
            add_header Vary Accept;
            try_files ${{uri}}index.$simple_ext =404;
        }}
        location /files/ {{ }}
    }}
}}
"""


class StaticAiohttp(Server):
    """The corpus tree served by bare aiohttp (benchmarks/static_aiohttp.py) with as many
    processes as pyproxy has workers: the framework's own ceiling on this machine."""

    name = "aiohttp"
    kind = "static"

    def __init__(self, work: Path, tree: Path, processes: int = 2) -> None:
        super().__init__(work)
        self.tree, self.processes = tree, processes

    def version(self) -> str:
        from importlib.metadata import version

        return f"aiohttp {version('aiohttp')} on uvloop, {self.processes} process(es), static"

    def start(self, upstream_url: str) -> None:
        proc = Proc(self.name, [sys.executable, HERE / "static_aiohttp.py", "--root", self.tree,
                                "--processes", str(self.processes)],
                    self.log_dir, env=clean_env())
        self.procs.append(proc.start())
        origin = proc.wait_for_output(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        self.index_url = origin + "/simple/"
        wait_http(self.index_url, proc)


def _venv_version(bin_dir: Path, distribution: str) -> str:
    proc = subprocess.run([bin_dir / "python", "-c", ("import importlib.metadata as m, sys; "
                           "print(m.version(sys.argv[1]))"), distribution],
                          capture_output=True, text=True, check=False)
    return f"{distribution} {proc.stdout.strip()}"


class Devpi(Server):
    name = "devpi"
    PACKAGES = ("devpi-server",)

    def version(self) -> str:
        return _venv_version(self.bin, "devpi-server")

    def prepare(self, allow_install: bool) -> None:
        self.bin = ensure_venv(self.work / "venvs" / "devpi", list(self.PACKAGES), allow_install)

    def start(self, upstream_url: str) -> None:
        serverdir = self._fresh_dir("serverdir")
        init = subprocess.run([self.bin / "devpi-init", "--serverdir", serverdir, "--no-root-pypi"],
                              capture_output=True, text=True, env=clean_env(), timeout=120,
                              check=False)
        if init.returncode != 0:
            lines = (init.stderr or init.stdout).strip().splitlines() or ["?"]
            raise Unavailable(f"devpi-init failed: {lines[-1][:160]}")
        port = free_port()
        proc = Proc(self.name, [self.bin / "devpi-server", "--serverdir", serverdir,
                                "--host", "127.0.0.1", "--port", str(port)],
                    self.log_dir, env=clean_env())
        self.procs.append(proc.start())
        origin = f"http://127.0.0.1:{port}"
        wait_http(origin + "/+api", proc)
        # a mirror index of the fake upstream, made through devpi's JSON API as root (no password)
        login = _json_request("POST", origin + "/+login", {"user": "root", "password": ""})
        token = base64.b64encode(f"root:{login['result']['password']}".encode()).decode()
        _json_request("PUT", origin + "/root/bench", {"type": "mirror", "mirror_url": upstream_url},
                      {"X-Devpi-Auth": token})
        self.index_url = origin + "/root/bench/+simple/"


def _json_request(method: str, url: str, body: dict, headers: dict | None = None) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Accept": "application/json", "Content-Type": "application/json",
                 **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise Unavailable(f"{method} {url}: HTTP {exc.code} {exc.read()[:160]!r}") from None


class Proxpi(Server):
    name = "proxpi"
    PACKAGES = ("proxpi", "gunicorn")
    THREADS = 8

    def version(self) -> str:
        return f"{_venv_version(self.bin, 'proxpi')} on gunicorn, 1 worker x {self.THREADS} threads"

    def prepare(self, allow_install: bool) -> None:
        self.bin = ensure_venv(self.work / "venvs" / "proxpi", list(self.PACKAGES), allow_install)

    def start(self, upstream_url: str) -> None:
        cache = self._fresh_dir("cache")
        port = free_port()
        # proxpi keeps its index cache in memory, so one process with threads (as its image does)
        env = clean_env({"PROXPI_INDEX_URL": upstream_url, "PROXPI_CACHE_DIR": str(cache)})
        proc = Proc(self.name, [self.bin / "gunicorn", "--bind", f"127.0.0.1:{port}",
                                "--workers", "1", "--threads", str(self.THREADS),
                                "proxpi.server:app"], self.log_dir, env=env, cwd=cache)
        self.procs.append(proc.start())
        origin = f"http://127.0.0.1:{port}"
        wait_http(origin + "/health", proc)
        self.index_url = origin + "/index/"


class Direct(Server):
    """The fake upstream itself, as a client reaches it without any proxy (the reference)."""

    name = "direct"
    kind = "direct"

    def __init__(self, work: Path, upstream: Upstream) -> None:
        super().__init__(work)
        self.upstream = upstream

    def version(self) -> str:
        return f"fake upstream, {self.upstream.latency_ms:g} ms per request"

    def start(self, upstream_url: str) -> None:
        self.index_url = upstream_url

    def pids(self) -> list[int]:
        return []

    def main_pid(self) -> int | None:
        return None

    def stop(self) -> None:
        pass


class Upstream:
    """The fake upstream (benchmarks/upstream.py) in a subprocess; `flags` are its switches
    (`--html-only`, `--project-list DIR`)."""

    def __init__(self, work: Path, tree: Path, latency_ms: float, *, name: str = "upstream",
                 flags: list[str] | None = None) -> None:
        self.proc = Proc(name, [sys.executable, HERE / "upstream.py", "--root", tree,
                                "--latency-ms", str(latency_ms), *(flags or [])],
                         work / "logs", env=clean_env())
        self.origin = ""
        self.latency_ms = latency_ms

    def start(self) -> Upstream:
        self.proc.start()
        self.origin = self.proc.wait_for_output(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        return self

    @property
    def index_url(self) -> str:
        return self.origin + "/simple/"

    def counts(self) -> dict[str, int]:
        """{path: requests} so far."""
        return self._get("counts")

    def kinds(self) -> dict[str, int]:
        """{GET | HEAD | range | metadata: requests} so far."""
        return self._get("kinds")

    def _get(self, what: str) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.origin}/_bench/{what}", timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.stop()
