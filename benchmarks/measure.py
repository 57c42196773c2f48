"""The measurements: single timed requests, load (wrk, or a small aiohttp load generator when wrk
is missing), concurrent cold requests, pip and uv installs and resident memory sampled from /proc.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

from benchmarks.servers import clean_env
from tests.processes import rss_kib

PIP_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
              "text/html; q=0.01")
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
HTML_ACCEPT = "text/html"
_READ = 256 * 1024


# ---- one request -------------------------------------------------------------------------------

@dataclass
class Fetch:
    url: str  # the final URL, after redirects
    status: int = 0
    ttfb: float = 0.0  # seconds until the final response's headers
    total: float = 0.0  # seconds until its last body byte
    size: int = 0
    content_type: str = ""
    content_encoding: str = ""
    body: bytes = b""
    error: str = ""


def fetch(url: str, accept: str | None = None, *, keep_body: bool = False,
          headers: dict[str, str] | None = None, timeout: float = 120.0) -> Fetch:
    """GET on a new connection (as a cold client does), following redirects; the body is not
    decoded (`size` is what travelled)."""
    headers = {**({"Accept": accept} if accept else {}), **(headers or {})}
    start = time.perf_counter()
    for _ in range(6):
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                response.read()
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            result = Fetch(url, response.status, time.perf_counter() - start,
                           content_type=response.getheader("Content-Type", ""),
                           content_encoding=response.getheader("Content-Encoding", ""))
            chunks = []
            while chunk := response.read(_READ):
                result.size += len(chunk)
                if keep_body:
                    chunks.append(chunk)
            result.total = time.perf_counter() - start
            result.body = b"".join(chunks)
            return result
        except (OSError, http.client.HTTPException) as exc:
            return Fetch(url, error=f"{type(exc).__name__}: {exc}",
                         total=time.perf_counter() - start)
        finally:
            conn.close()
    return Fetch(url, error="too many redirects")


def file_url(page: Fetch, filename: str) -> str | None:
    """The absolute URL a page (JSON or HTML) gives for `filename`."""
    if "json" in page.content_type:
        for entry in json.loads(page.body)["files"]:
            if entry["filename"] == filename:
                return urllib.parse.urljoin(page.url, entry["url"])
        return None
    for href in re.findall(rb'href="([^"]+)"', page.body):
        link = href.decode().replace("&amp;", "&").split("#", 1)[0]
        if urllib.parse.unquote(link.rstrip("/").rsplit("/", 1)[-1]) == filename:
            return urllib.parse.urljoin(page.url, link)
    return None


# ---- load ---------------------------------------------------------------------------------------

@dataclass
class Load:
    tool: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    bytes_per_s: float = 0.0
    errors: int = 0  # socket errors, timeouts and non-2xx/3xx answers
    note: str = ""

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "note" or v}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_load(url: str, accept: str | None, *, seconds: float, connections: int, tool: str,
             threads: int = 1, headers: dict[str, str] | None = None) -> Load:
    headers = {**({"Accept": accept} if accept else {}), **(headers or {})}
    if tool == "wrk":
        return _wrk(url, headers, seconds, connections, threads)
    return asyncio.run(_pyload(url, headers, seconds, connections))


def _wrk(url: str, headers: dict[str, str], seconds: float, connections: int,
         threads: int) -> Load:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "10s"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if proc.returncode != 0:
        return Load("wrk", note=f"wrk failed: {(proc.stderr or proc.stdout).strip()[:160]}")
    return parse_wrk(proc.stdout)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text: str) -> Load:
    """The figures of `wrk --latency` output."""
    load = Load("wrk")
    if m := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text):
        load.requests = int(m.group(1))
        load.seconds = _ms(m.group(2) + m.group(3)) / 1e3
    if m := re.search(r"Requests/sec:\s*([\d.]+)", text):
        load.rps = float(m.group(1))
    if m := re.search(r"Transfer/sec:\s*([\d.]+)([KMGT]?B)", text):
        load.bytes_per_s = float(m.group(1)) * _SIZES[m.group(2)]
    if m := re.search(r"^\s*50%\s+(\S+)", text, re.MULTILINE):
        load.p50_ms = _ms(m.group(1))
    if m := re.search(r"^\s*99%\s+(\S+)", text, re.MULTILINE):
        load.p99_ms = _ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text):
        load.errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      text):
        load.errors += sum(int(g) for g in m.groups())
    return load


async def _pyload(url: str, headers: dict[str, str], seconds: float, connections: int) -> Load:
    """Keep-alive clients in a loop for `seconds`: far slower than wrk, so it measures less
    precisely, but it needs nothing beyond aiohttp."""
    import aiohttp

    latencies: list[float] = []
    received = errors = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal received, errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as response:
                    async for chunk in response.content.iter_chunked(_READ):
                        received += len(chunk)
                    if response.status >= 400:
                        errors += 1
            except (aiohttp.ClientError, OSError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    load = Load("python", requests=len(latencies), seconds=elapsed, errors=errors,
                rps=len(latencies) / elapsed, bytes_per_s=received / elapsed)
    if latencies:
        ordered = sorted(latencies)
        load.p50_ms = ordered[len(ordered) // 2] * 1e3
        load.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
    return load


# ---- many clients at once for one cold file ----------------------------------------------------

def stampede(url: str, clients: int) -> dict[str, int]:
    """`clients` simultaneous GETs of `url`, each read to the end; {status or error: count}."""
    return asyncio.run(_stampede(url, clients))


async def _stampede(url: str, clients: int) -> dict[str, int]:
    import aiohttp

    outcome: dict[str, int] = {}
    gate = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        await gate.wait()
        try:
            async with session.get(url) as response:
                async for _ in response.content.iter_chunked(_READ):
                    pass
                key = str(response.status)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            key = type(exc).__name__
        outcome[key] = outcome.get(key, 0) + 1

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(clients)]
        await asyncio.sleep(0.05)  # every task is waiting at the gate
        gate.set()
        await asyncio.gather(*tasks)
    return outcome


# ---- pip ----------------------------------------------------------------------------------------

@dataclass
class PipRun:
    seconds: float | None
    error: str = ""


def pip_install(index_url: str, requirements: list[str], target: Path) -> PipRun:
    """`pip install --target` into an empty directory, isolated from the machine's pip config."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
           "--disable-pip-version-check", "--no-input", "--index-url", index_url,
           "--target", str(target), *requirements]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600,
                          stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["?"]
        return PipRun(None, f"pip exited {proc.returncode}: {lines[-1][:160]}")
    return PipRun(elapsed)


def uv_command() -> str | None:
    """uv beside this interpreter (the test extra installs it into .venv), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def uv_install(index_url: str, requirements: list[str], target: Path) -> PipRun:
    """`uv pip install --target` into an empty directory with no cache of uv's own (each run
    fetches everything from the index, in parallel as uv does) and no uv configuration."""
    uv = uv_command()
    if uv is None:
        return PipRun(None, "no uv command (pip install -e '.[test]')")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    cmd = [uv, "pip", "install", "--no-config", "--no-cache", "--quiet", "--python",
           sys.executable, "--index-url", index_url, "--target", str(target), *requirements]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600,
                          stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["?"]
        return PipRun(None, f"uv exited {proc.returncode}: {lines[-1][:160]}")
    return PipRun(elapsed)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (0 < fraction <= 1) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ---- resident memory ----------------------------------------------------------------------------

@dataclass
class Window:
    before_kib: int = 0
    peak_kib: int = 0

    @property
    def growth_mib(self) -> float:
        return max(0, self.peak_kib - self.before_kib) / 1024


@dataclass
class RssSampler:
    """Samples the RSS of a server's processes every `interval` seconds in a thread: the peak
    of the sum, the peak of each process, and the peak inside `window()`s."""

    pids_of: object  # () -> list[int]
    interval: float = 0.05
    peak_total_kib: int = 0
    peak_per_pid_kib: dict[int, int] = field(default_factory=dict)
    _current: int = 0
    _windows: list[Window] = field(default_factory=list)
    _marks: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        pids: list[int] = []
        refreshed = 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 0.5:  # workers may come and go
                pids, refreshed = list(self.pids_of()), time.monotonic()
            self.sample(pids)
            self._stop.wait(self.interval)

    def sample(self, pids: list[int]) -> int:
        total = 0
        for pid in pids:
            value = rss_kib(pid)
            if value is None:
                continue
            total += value
            self.peak_per_pid_kib[pid] = max(self.peak_per_pid_kib.get(pid, 0), value)
        self._current = total
        self.peak_total_kib = max(self.peak_total_kib, total)
        for window in self._windows:
            window.peak_kib = max(window.peak_kib, total)
        return total

    def now(self) -> int:
        """The servers' RSS (KiB) right now, counted as a sample."""
        return self.sample(list(self.pids_of()))

    @contextmanager
    def window(self):
        """RSS right before the block, and its peak during the block."""
        current = self.sample(list(self.pids_of()))
        window = Window(before_kib=current, peak_kib=current)
        self._windows.append(window)
        try:
            yield window
        finally:
            self.sample(list(self.pids_of()))
            self._windows.remove(window)

    def mark(self, phase: str) -> None:
        """Remember the peak so far: which phase raised it shows in the JSON."""
        self.sample(list(self.pids_of()))
        self._marks[phase] = round(self.peak_total_kib / 1024, 1)

    def summary(self) -> dict:
        per = self.peak_per_pid_kib
        return {
            "peak_total_mb": round(self.peak_total_kib / 1024, 1),
            "peak_per_process_mb": round(max(per.values(), default=0) / 1024, 1),
            "processes": len(per),
            "peak_total_mb_after": dict(self._marks),
        }
