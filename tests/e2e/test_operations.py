"""End to end, `pyproxy serve` as operators run it: /metrics adding up over worker processes,
and the access log on stderr holding no credential whatever the requests carried."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.config_values import available_cores
from tests.access_log import access_records
from tests.dists import make_wheel
from tests.e2e.clients import basic_auth, get, raw_request, raw_upload
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.processes import children
from tests.waiting import wait_until

RUN = uuid.uuid4().hex[:6]


def counter(server: PyproxyServer, name: str, **labels: str) -> float | None:
    response = get(f"{server.url}/metrics")
    assert response.status == 200, str(response)
    for family in text_string_to_metric_families(response.body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_metrics_add_up_over_two_workers(pyproxy_factory: ServerFactory) -> None:
    server = pyproxy_factory.start(user=None, extra_args=["--workers", "2"])
    workers = children(server.pid)
    assert len(workers) == 2
    requests = 40
    for _ in range(requests):  # a new connection each: the kernel spreads them over the workers
        assert get(f"{server.url}/health").status == 200
    # each worker keeps its values in files of its own, named by its pid
    files = {path.name for path in (server.data_dir / "metrics").glob("*/counter_*.db")}
    assert {f"counter_{pid}.db" for pid in workers} <= files, "a worker served nothing"

    labels = {"route": "/health", "method": "GET", "status": "200"}
    deadline = time.monotonic() + 5
    while (seen := counter(server, "pyproxy_http_requests_total", **labels)) != requests:
        assert time.monotonic() < deadline, f"{seen} requests counted, not {requests}"
        time.sleep(0.05)
    for _ in range(10):  # whichever worker answers the scrape
        assert counter(server, "pyproxy_http_requests_total", **labels) == requests

    metrics_dir = next((server.data_dir / "metrics").iterdir())
    assert server.stop() == []
    assert not metrics_dir.exists()  # a clean stop removes its values


def test_workers_auto_runs_one_worker_per_core(pyproxy_factory: ServerFactory) -> None:
    server = pyproxy_factory.start(user=None, extra_args=["--workers", "auto"])
    cores = available_cores()
    assert len(children(server.pid)) == (cores if cores > 1 else 0)  # one worker runs in place
    assert f"{cores} worker(s)" in server.stderr_text()
    deadline = time.monotonic() + 10  # the first worker may answer before the last one serves
    while (ready := get(f"{server.url}/ready")).status != 200:
        assert time.monotonic() < deadline, ready.body
        time.sleep(0.05)


def absolute_form_get(server: PyproxyServer, url: str, authorization: str) -> bytes:
    """A request line with a whole URL, user info included (what no client should send)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: {authorization}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_log_holds_no_credentials(
    pyproxy_factory: ServerFactory, log_format: str, tmp_path: Path
) -> None:
    server = pyproxy_factory.start(extra_args=["--log-format", log_format])
    assert server.user is not None and server.password is not None
    token = server.create_token(server.user)
    wheel = make_wheel(tmp_path, f"e2e-ops-{RUN}", "1.0")
    basic = basic_auth(server.user, server.password)
    url_basic = basic_auth("bob", "url-secret-77")

    assert get(f"{server.url}/health").status == 200
    response = raw_request("GET", f"{server.simple_url}?format=text/html&token=query-secret-77",
                           headers={"Authorization": basic})
    assert response.status == 200
    answer = absolute_form_get(
        server, f"http://bob:url-secret-77@127.0.0.1:{server.port}/ready", url_basic
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert raw_upload(server.upload_url, wheel, server.user, "wrong-secret-77").status == 403
    assert raw_upload(server.upload_url, wheel, "__token__", token).status == 200
    assert server.stop() == []  # everything is flushed

    stderr = server.stderr_text()
    secrets = [server.password, token, "url-secret-77", "query-secret-77", "wrong-secret-77",
               basic.split()[1], url_basic.split()[1],
               base64.b64encode(f"__token__:{token}".encode()).decode()]
    for secret in secrets:
        assert secret not in stderr, f"{secret!r} is in pyproxy's stderr:\n{stderr}"

    # from the test's first request on: the start-up checks (/simple/, /ready) come before
    records = server.access_records()
    records = records[[r["path"] for r in records].index("/health"):]
    assert [(r["method"], r["path"], r["status"], r["user"]) for r in records] == [
        ("GET", "/health", 200, None),
        ("GET", "/simple/?format=text%2Fhtml", 200, None),
        ("GET", "/ready", 200, None),
        ("POST", "/legacy/", 403, None),
        ("POST", "/legacy/", 200, server.user),  # the token's owner
    ]
    lines = stderr.splitlines()
    assert len(access_records(stderr)) == len([line for line in lines if "pyproxy.access" in line])
    if log_format == "json":  # every log line is one JSON object (the listening line is a print)
        for line in lines:
            if not line.startswith("pyproxy: listening on"):
                assert isinstance(json.loads(line), dict), line


def test_cache_stats_reports_the_running_servers_hit_ratio(pyproxy_factory: ServerFactory) -> None:
    from tests.fake_upstream import FakeUpstream

    with FakeUpstream.running_in_thread(formats="json") as fake:
        fake.add_file("lib", "lib-1.0-py3-none-any.whl", b"lib bytes")
        server = pyproxy_factory.start(extra_args=["--upstream", fake.index_url, "--workers", "2"])
        before = json.loads(server.cli("cache", "stats", "--json").stdout)
        assert (before["hits"], before["misses"]) == (0, 0)
        url = f"{server.url}/files/lib/lib-1.0-py3-none-any.whl"
        assert get(url).status == 200  # the miss
        # the client has all of it once its hash is checked, the commit follows: until then a
        # request in the other worker follows the download (coalesced), not a hit
        wait_until(lambda: json.loads(server.cli("cache", "stats", "--json").stdout)["files"] == 1,
                   20, "the download's commit")
        for _ in range(3):  # hits, spread over both workers (new connections)
            assert get(url).status == 200
        figures = json.loads(server.cli("cache", "stats", "--json").stdout)
        assert (figures["hits"], figures["misses"]) == (3, 1)
        text = server.cli("cache", "stats").stdout
        assert "75.0% since the server started (3 hits, 1 misses)" in text
        server.stop()
    stopped = json.loads(server.cli("cache", "stats", "--json").stdout)
    assert stopped["hits"] is None and stopped["files"] == 1
