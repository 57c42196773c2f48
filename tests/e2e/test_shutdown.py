"""Graceful shutdown of a `pyproxy serve` subprocess (pyproxy/server.py): on SIGTERM the listening
socket closes, requests in flight get `[server] shutdown_grace` seconds to finish, then the process
exits 0; an upload cut off leaves nothing behind, a download cut off is never cached.

The grace period comes from a configuration file given with --config; slow bodies are sent with a
raw socket (uploads) or come from the fake upstream's `chunk_delay` (downloads).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import (
    file_entries,
    get,
    listed_filenames,
    raw_upload,
    upload_request,
)
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory, pyproxy_command
from tests.fake_upstream import CHUNK_SIZE, FakeUpstream
from tests.processes import children, session_members
from tests.waiting import wait_until

EXIT_MARGIN = 5.0  # start-up of cancellation, closing stores, interpreter exit; a loaded machine


def grace_config(directory: Path, seconds: float) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"grace-{seconds}.toml"
    path.write_text(f"[server]\nshutdown_grace = {seconds}\n")
    return ["--config", str(path)]


def upload_temps(server: PyproxyServer) -> list[Path]:
    return sorted((server.data_dir / "private" / "tmp").glob("*"))


def refuses_connections(server: PyproxyServer) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def terminate(server: PyproxyServer) -> float:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


def exit_code(server: PyproxyServer, timeout: float) -> int:
    assert server.proc is not None
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pyproxy still running {timeout}s after SIGTERM:\n"
                             f"{server.stderr_text()[-3000:]}") from None


def read_response(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def start_upload(server: PyproxyServer, wheel: Path) -> tuple[socket.socket, bytes]:
    """Send the headers and half the body of twine's POST; return the socket and the rest."""
    body, headers = upload_request(server.upload_url, wheel, server.user, server.password)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = f"POST /legacy/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    half = len(body) // 2
    sock.sendall(head.encode() + body[:half])
    return sock, body[half:]


def big_wheel(directory: Path, name: str) -> Path:
    blob = hashlib.sha256(name.encode()).hexdigest() * 4000  # ~256 KB of text, deflated well
    return make_wheel(directory, name, "1.0", modules={f"{name}/blob.py": f"DATA = '{blob}'\n"})


# ----------------------------------------------------------------------------------- uploads


def test_sigterm_lets_a_slow_upload_finish(pyproxy_factory: ServerFactory, tmp_path: Path) -> None:
    """SIGTERM with half the body sent: new connections are refused at once, the client sends
    the rest within the grace period, gets 200, and the file is stored; then exit 0."""
    server = pyproxy_factory.start(extra_args=grace_config(tmp_path, 20))
    wheel = big_wheel(tmp_path / "dists", "slowup")
    sock, rest = start_upload(server, wheel)
    try:
        # the handler has authenticated and opened its temp file: the upload is in flight
        wait_until(lambda: upload_temps(server), 10, "the upload's temp file")
        signalled = terminate(server)
        wait_until(lambda: refuses_connections(server), 3, "the listening socket to close")
        # the stop has begun and is waiting for the upload, not exiting under it
        wait_until(lambda: "stopping" in server.stderr_text(), 5, "the stopping line")
        assert server.running, "pyproxy exited with an upload in flight"
        sock.sendall(rest)
        response = read_response(sock)
    finally:
        sock.close()
    assert response.startswith(b"HTTP/1.1 200 "), response[:500]
    assert exit_code(server, 20 + EXIT_MARGIN) == 0
    assert time.monotonic() - signalled < 20, "waited for the full grace period"
    assert upload_temps(server) == []
    assert "stopping" in server.stderr_text()

    restarted = pyproxy_factory.start(server.data_dir, create_user=False)
    entries = file_entries(restarted.simple_url, "slowup")
    assert list(entries) == [wheel.name]
    served = get(entries[wheel.name]["url"].split("#")[0])
    assert served.status == 200 and served.content == wheel.read_bytes()


def test_upload_cut_off_by_the_grace_period_leaves_nothing(
    pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    """The client stalls past a 1 s grace period: the upload is cancelled, pyproxy still exits 0
    promptly, no temp file is left, nothing is listed after a restart and the same file can be
    uploaded again."""
    server = pyproxy_factory.start(extra_args=grace_config(tmp_path, 1))
    wheel = big_wheel(tmp_path / "dists", "cutup")
    sock, _ = start_upload(server, wheel)
    try:
        wait_until(lambda: upload_temps(server), 10, "the upload's temp file")
        signalled = terminate(server)
        assert exit_code(server, 1 + EXIT_MARGIN) == 0
        elapsed = time.monotonic() - signalled
        response = read_response(sock)
    except ConnectionResetError:
        response = b""
    finally:
        sock.close()
    assert elapsed >= 0.9, f"exited after {elapsed:.2f}s, before the grace period was over"
    assert not response.startswith(b"HTTP/1.1 200"), response[:500]
    assert upload_temps(server) == [], "the cut-off upload left a temp file"

    restarted = pyproxy_factory.start(server.data_dir, create_user=False)
    assert listed_filenames(restarted.simple_url, "cutup") == []
    assert upload_temps(restarted) == []
    again = raw_upload(restarted.upload_url, wheel, server.user, server.password)
    assert again.status == 200, str(again)
    assert listed_filenames(restarted.simple_url, "cutup") == [wheel.name]


# --------------------------------------------------------------------------------- downloads


class Download(threading.Thread):
    """GET a URL in the background, recording what arrived and how it ended."""

    def __init__(self, url: str, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.pause = pause  # seconds between reads of 64 KiB: a slow client
        self.status = 0
        self.length: int | None = None
        self.received = 0
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None

    def run(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.connect()
            if self.pause:  # a small window, so the server really has to wait for us
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            conn.request("GET", parts.path)
            response = conn.getresponse()
            self.status = response.status
            self.length = response.length
            while chunk := response.read1(65536):
                self.received += len(chunk)
                self.digest.update(chunk)
                time.sleep(self.pause)
            if self.length is not None and self.received < self.length:
                raise http.client.IncompleteRead(b"", self.length - self.received)
        except (OSError, http.client.HTTPException) as exc:
            self.error = exc
        finally:
            conn.close()


@pytest.fixture
def slow_upstream(fake_factory: FakeFactory) -> FakeUpstream:
    return fake_factory("json")


def start_download(server: PyproxyServer, upstream: FakeUpstream, project: str,
                   filename: str) -> Download:
    url = file_entries(server.simple_url, project)[filename]["url"].split("#")[0]
    download = Download(url)
    download.start()
    path = upstream.file_path(project, filename)
    wait_until(lambda: upstream.count(path) > 0, 10, "pyproxy to ask upstream for the file")
    wait_until(lambda: download.received > 0, 10, "the first bytes to reach the client")
    return download


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_a_slow_download_finish(
    pyproxy_factory: ServerFactory, slow_upstream: FakeUpstream, tmp_path: Path, workers: int
) -> None:
    """A first download streaming from a slow upstream (~1.5 s) when SIGTERM arrives: the client
    gets the whole file, then pyproxy exits 0 (with 2 workers: the parent forwards SIGTERM and
    exits 0 once both workers have); the finished download was cached (checked with 1 worker)."""
    fake = slow_upstream.add_generated_file("slowdown", "slowdown-1.0.tar.gz", 24 * CHUNK_SIZE)
    args = ["--upstream", slow_upstream.index_url, "--workers", str(workers),
            *grace_config(tmp_path, 20)]
    server = pyproxy_factory.start(user=None, extra_args=args)
    slow_upstream.chunk_delay = 0.06
    download = start_download(server, slow_upstream, "slowdown", fake.filename)
    signalled = terminate(server)
    assert exit_code(server, 20 + EXIT_MARGIN) == 0, server.stderr_text()[-3000:]
    assert time.monotonic() - signalled < 20, "waited for the full grace period"
    download.join(10)
    assert download.error is None, download.error
    assert download.status == 200 and download.received == fake.size
    assert download.digest.hexdigest() == fake.sha256
    if workers > 1:
        return

    slow_upstream.chunk_delay = 0
    restarted = pyproxy_factory.start(server.data_dir, user=None, extra_args=args)
    served = get(file_entries(restarted.simple_url, "slowdown")[fake.filename]["url"].split("#")[0])
    assert served.status == 200 and served.headers.get("x-pyproxy-cache") == "hit"
    assert hashlib.sha256(served.content).hexdigest() == fake.sha256


def test_sigterm_lets_a_slow_client_finish_a_cached_file(
    pyproxy_factory: ServerFactory, slow_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A cached file goes out after its handler has returned (sendfile): a slow client reading
    8 MiB over ~2.5 s when SIGTERM arrives still gets all of it, then pyproxy exits 0."""
    fake = slow_upstream.add_generated_file("cached", "cached-1.0.tar.gz", 128 * CHUNK_SIZE)
    args = ["--upstream", slow_upstream.index_url, *grace_config(tmp_path, 20)]
    server = pyproxy_factory.start(user=None, extra_args=args)
    url = file_entries(server.simple_url, "cached")[fake.filename]["url"].split("#")[0]
    assert get(url).headers.get("x-pyproxy-cache") == "miss"  # now it is cached
    download = Download(url, pause=0.02)
    download.start()
    wait_until(lambda: download.received > 0, 10, "the first bytes")
    signalled = terminate(server)
    assert exit_code(server, 20 + EXIT_MARGIN) == 0, server.stderr_text()[-3000:]
    assert time.monotonic() - signalled < 20, "waited for the full grace period"
    download.join(10)
    assert download.error is None, download.error
    assert download.received == fake.size and download.digest.hexdigest() == fake.sha256


def test_download_longer_than_the_grace_period_is_cut(
    pyproxy_factory: ServerFactory, slow_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A download that would take ~10 s and a 1 s grace: the client's body is cut short (never
    a clean end), pyproxy exits 0 promptly, and after a restart the file is fetched whole."""
    fake = slow_upstream.add_generated_file("longdown", "longdown-1.0.tar.gz", 50 * CHUNK_SIZE)
    args = ["--upstream", slow_upstream.index_url, *grace_config(tmp_path, 1)]
    server = pyproxy_factory.start(user=None, extra_args=args)
    slow_upstream.chunk_delay = 0.2
    download = start_download(server, slow_upstream, "longdown", fake.filename)
    signalled = terminate(server)
    assert exit_code(server, 1 + EXIT_MARGIN) == 0, server.stderr_text()[-3000:]
    elapsed = time.monotonic() - signalled
    assert elapsed >= 0.9, f"exited after {elapsed:.2f}s, before the grace period was over"
    download.join(10)
    assert download.error is not None, "the cut download looked complete to the client"
    assert download.received < fake.size
    leftovers = list((server.data_dir / "cache" / "files" / "partial").glob("*"))
    assert leftovers == [], f"the cut download left {leftovers}"

    slow_upstream.chunk_delay = 0
    restarted = pyproxy_factory.start(server.data_dir, user=None, extra_args=args)
    served = get(file_entries(restarted.simple_url, "longdown")[fake.filename]["url"].split("#")[0])
    assert served.status == 200 and served.headers.get("x-pyproxy-cache") == "miss"
    assert hashlib.sha256(served.content).hexdigest() == fake.sha256


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_server_on_a_port_in_use_is_refused(
    pyproxy_factory: ServerFactory, tmp_path: Path, workers: int
) -> None:
    """Workers share their port with SO_REUSEPORT: without a check, a second pyproxy (or an
    old one not stopped yet) on the same port would start, and each would take a part of the
    connections. It stops at once with one line instead; the first goes on serving."""
    first = pyproxy_factory.start(user=None, extra_args=["--workers", "2"])
    # its own session: should it start after all, it and its workers are stopped with it
    second = subprocess.Popen(
        [*pyproxy_command(), "serve", "--data-dir", str(tmp_path / "second"), "--no-upstream",
         "--host", "127.0.0.1", "--port", str(first.port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    try:
        _, stderr = second.communicate(timeout=60)
    finally:
        for pid in session_members(second.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        second.wait(10)
    assert second.returncode == 1, stderr[-2000:]
    assert "listening on" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("pyproxy: "), stderr[-2000:]
    assert "in use" in stderr, stderr[-2000:]
    assert get(first.simple_url).status == 200


def test_workers_stop_when_their_supervisor_is_killed(pyproxy_factory: ServerFactory) -> None:
    """SIGKILL leaves the supervisor no time to pass a stop on: each worker is told by the
    kernel instead, and stops (gracefully), so none goes on serving unsupervised."""
    server = pyproxy_factory.start(user=None, extra_args=["--workers", "2"])
    assert server.proc is not None
    workers = wait_until(lambda: len(children(server.proc.pid)) == 2 and children(server.proc.pid),
                         10, "two workers")
    server.proc.kill()
    server.proc.wait(10)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 20,
               "the workers to exit")
    assert refuses_connections(server)
