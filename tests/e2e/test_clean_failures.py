"""End to end, `pyproxy serve` (uvloop, so cached files go out in chunks rather than with
sendfile) meeting malformed requests and clients that give up mid-download: one warning line
each and never a traceback on stderr, and an access record and metrics that count the bytes
that really went out."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import struct
import time

from tests.access_log import access_records
from tests.e2e.clients import raw_request
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.e2e.test_operations import counter

BIG = 16 * 1024 * 1024  # well past what the kernel buffers between a server and a slow client
MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic " + b"c2VjcmV0" * 2_000 + b"\r\n\r\n",
]
FILES_ROUTE = "/files/{project}/{filename}"


def exchange(server: PyproxyServer, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def abandon(server: PyproxyServer, path: str, read: int) -> int:
    """GET `path` with a small receive window, read about `read` bytes, then reset the
    connection; returns the bytes read (headers included)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    got = 0
    while got < read and (chunk := sock.recv(65536)):
        got += len(chunk)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
    sock.close()
    return got


def wait_for(server: PyproxyServer, method: str, path: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 20
    while True:
        found = [r for r in server.access_records() if (r["method"], r["path"]) == (method, path)]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, server.stderr_text()
        time.sleep(0.05)


def warnings(server: PyproxyServer) -> list[str]:
    return [line for line in server.stderr_text().splitlines()
            if " WARNING " in line or " ERROR " in line]


def test_malformed_requests(pyproxy_factory: ServerFactory) -> None:
    server = pyproxy_factory.start(user=None)
    for data in MALFORMED:
        assert exchange(server, data).startswith(b"HTTP/1.0 400 Bad Request\r\n")
    labels = {"route": "unmatched", "method": "other", "status": "400"}
    deadline = time.monotonic() + 10
    while counter(server, "pyproxy_http_requests_total", **labels) != len(MALFORMED):
        assert time.monotonic() < deadline, server.stderr_text()
        time.sleep(0.05)
    server.stop()

    stderr = server.stderr_text()
    assert "Traceback" not in stderr and "c2VjcmV0" not in stderr
    lines = warnings(server)
    assert len(lines) == len(MALFORMED), stderr
    assert all(" WARNING pyproxy.web: refused a malformed request from 127.0.0.1 with 400: "
               in line for line in lines), stderr
    assert [r["status"] for r in access_records(stderr) if r["method"] != "GET"] == [400] * 4


def test_abandoned_downloads(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory
) -> None:
    fake = fake_factory()
    dist = fake.add_generated_file("big", "big-1.0.tar.gz", BIG)
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url])
    path = f"/files/big/{dist.filename}"

    fake.chunk_delay = 0.005  # upstream is still sending when the client gives up
    read_miss = abandon(server, path, 200_000)
    [miss] = wait_for(server, "GET", path, 1)
    fake.chunk_delay = 0
    # the download goes on without the client, and is cached
    deadline = time.monotonic() + 30
    while raw_request("HEAD", server.url + path).headers["x-pyproxy-cache"] != "hit":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    read_hit = abandon(server, path, 200_000)
    hit = wait_for(server, "GET", path, 2)[1]

    stderr = server.stderr_text()
    assert "Traceback" not in stderr
    lines = warnings(server)
    assert len(lines) == 2, stderr
    sent = []
    for line, record, read in ((lines[0], miss, read_miss), (lines[1], hit, read_hit)):
        match = re.search(rf"GET {path}: the client went away after (\d+) of {BIG} body bytes$",
                          line)
        assert match and " WARNING pyproxy.web: " in line, line
        body = int(match[1])
        assert record["status"] == 200 and record["cut"] == "client"
        assert read - 1000 < body < BIG  # at least what the client read (less its headers)
        assert 100 < record["bytes"] - body < 1000  # the head, and nothing counted twice
        sent.append(body)
    assert (miss["cache"], hit["cache"]) == ("miss", "hit")

    assert counter(server, "pyproxy_http_responses_cut_short_total", cause="client") == 2
    assert counter(server, "pyproxy_served_bytes_total", source="upstream") == sent[0]
    assert counter(server, "pyproxy_served_bytes_total", source="cache") == sent[1]
    labels = {"route": FILES_ROUTE, "method": "GET", "status": "200"}
    assert counter(server, "pyproxy_http_requests_total", **labels) == 2


def test_a_download_whose_body_fails_its_check_is_logged_as_cut_short(
    pyproxy_factory: ServerFactory, fake_factory: FakeFactory
) -> None:
    """Its 200 went out before the last byte showed the body wrong: the access record says the
    response was aborted, so a log reader does not count it a success."""
    fake = fake_factory()
    dist = fake.add_generated_file("wrong", "wrong-1.0.tar.gz", 2 * 1024 * 1024)
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url])
    path = f"/files/wrong/{dist.filename}"
    assert raw_request("GET", server.simple_url + "wrong/").status == 200
    fake.wrong_bytes = True
    with contextlib.suppress(OSError, http.client.HTTPException):
        raw_request("GET", server.url + path)
    [record] = wait_for(server, "GET", path, 1)
    assert (record["status"], record["cut"], record["cache"]) == (200, "aborted", "miss")
    assert f"path={path} status=200 " in server.stderr_text()
    assert counter(server, "pyproxy_http_responses_cut_short_total", cause="aborted") == 1
    assert "Traceback" not in server.stderr_text()
