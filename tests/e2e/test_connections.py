"""Slow, idle and too many connections to a `pyproxy serve` subprocess (pyproxy/web/connections.py):
a connection that trickles its first request head is closed after `[server] header_timeout`, an
idle keep-alive connection after `keepalive_timeout`; past `max_connections` a new connection
gets 503 and a warning is logged, and once the others go a normal client is served again.

Raw sockets play the misbehaving clients; the settings come from a --config file.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.dists import make_wheel
from tests.e2e.clients import file_entries, get, upload_request
from tests.e2e.conftest import PyproxyServer, ServerFactory

MARGIN = 5.0  # seconds on top of a timeout before the test calls it not enforced (loaded CI)


def config(directory: Path, **server: float | int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "connections.toml"
    path.write_text("[server]\n" + "".join(f"{k} = {v}\n" for k, v in server.items()))
    return ["--config", str(path)]


@contextmanager
def connection(server: PyproxyServer) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        yield sock
    finally:
        sock.close()


def closed_after(sock: socket.socket, timeout: float, trickle: bytes = b"") -> tuple[float, bytes]:
    """Seconds until the server closes `sock` (sending `trickle` a byte at a time meanwhile, as
    slowloris does), and what it sent before closing; fails if it is still open at `timeout`."""
    start = time.monotonic()
    received = b""
    sock.settimeout(0.2)
    pending = trickle
    while time.monotonic() - start < timeout:
        if pending:
            try:
                sock.sendall(pending[:1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, received
            pending = pending[1:]
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start, received
        if not chunk:
            return time.monotonic() - start, received
        received += chunk
    raise AssertionError(f"connection still open after {timeout}s; received {received[:200]!r}")


def response_head(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_head_trickled_byte_by_byte_is_cut_off(pyproxy_factory: ServerFactory,
                                                 tmp_path: Path) -> None:
    """Slowloris: bytes keep coming, but the head never completes within header_timeout."""
    server = pyproxy_factory.start(user=None, extra_args=config(tmp_path, header_timeout=1.0))
    trickle = b"GET /simple/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 200
    with connection(server) as sock:
        seconds, received = closed_after(sock, 1.0 + MARGIN, trickle)
    assert seconds >= 0.9, seconds
    assert received.startswith(b"HTTP/1.1 408 "), received
    with connection(server) as sock:  # a connection that sends nothing at all, likewise
        closed_after(sock, 1.0 + MARGIN)
    assert get(f"{server.url}/health").status == 200


def test_a_slow_body_after_a_complete_head_is_not_cut_off(pyproxy_factory: ServerFactory,
                                                          tmp_path: Path) -> None:
    """Only the head is timed: an upload whose body takes longer than header_timeout is stored."""
    server = pyproxy_factory.start(extra_args=config(tmp_path, header_timeout=1.0))
    wheel = make_wheel(tmp_path / "dists", "slowbody", "1.0")
    assert server.user is not None and server.password is not None
    body, headers = upload_request(server.upload_url, wheel, server.user, server.password)
    head = f"POST /legacy/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with connection(server) as sock:
        sock.sendall(head.encode() + body[:100])
        time.sleep(2.0)  # twice header_timeout
        sock.sendall(body[100:])
        answer = response_head(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert list(file_entries(server.simple_url, "slowbody")) == [wheel.name]


def test_an_idle_keep_alive_connection_is_closed(pyproxy_factory: ServerFactory,
                                                 tmp_path: Path) -> None:
    server = pyproxy_factory.start(user=None, extra_args=config(tmp_path, keepalive_timeout=1.0))
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = response_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head, head
        seconds, _ = closed_after(sock, 1.0 + MARGIN)
    assert seconds >= 0.5, seconds


def test_past_max_connections_new_ones_get_503_and_a_log_line(pyproxy_factory: ServerFactory,
                                                              tmp_path: Path) -> None:
    limit = 4
    server = pyproxy_factory.start(
        user=None, extra_args=config(tmp_path, max_connections=limit, header_timeout=60.0)
    )
    with ExitStack() as held:
        for _ in range(limit):  # connections that send nothing: each holds a place
            held.enter_context(connection(server))
        time.sleep(0.5)  # accepted by the worker
        with connection(server) as extra:
            _, received = closed_after(extra, MARGIN)
        assert received.startswith(b"HTTP/1.1 503 "), received
        assert b"too many connections" in received
        assert "connection limit reached" in server.stderr_text()
        assert "max_connections" in server.stderr_text()
    # the held ones are gone: a normal client is served again
    deadline = time.monotonic() + MARGIN
    while True:
        try:
            if get(f"{server.url}/health", timeout=5).status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "not served again after the connections went"
        time.sleep(0.1)
