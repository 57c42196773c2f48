"""The access log (pyproxy.web.access): one record per request, in text and in JSON, with no
credential in it, whatever the request carried."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient

from pyproxy.logs import TEXT_FORMAT, JsonFormatter
from tests.access_log import access_records
from tests.conftest import PASSWORD, USER, MakeClient, upload
from tests.dists import make_wheel

SECRETS = ("wrong-password-42", "query-secret-42", "url-secret-42", PASSWORD)


@pytest.fixture(params=["text", "json"])
def log_format(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def log_output(log_format: str) -> Iterator[io.StringIO]:
    """What the access logger writes, formatted as `pyproxy serve --log-format` would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logger = logging.getLogger("pyproxy.access")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


@pytest.fixture
async def logged(make_client: MakeClient) -> TestClient:
    client, _ = await make_client(access_log=True)
    return client


async def records(stream: io.StringIO, count: int) -> list[dict[str, Any]]:
    """The access records, once there are `count` (each is written just after its response)."""
    for _ in range(100):
        found = access_records(stream.getvalue())
        if len(found) >= count:
            break
        await asyncio.sleep(0.01)
    return found


async def test_one_record_per_request_and_no_secret(
    logged: TestClient, log_output: io.StringIO, log_format: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "Private_Proj", "1.0")
    basic = {"Authorization": encode_basic_auth(USER, PASSWORD)}
    agent = {"User-Agent": 'pip/25.1 {"ci":null,"note":"a = b \\\\ c"}'}

    assert (await logged.get("/health", headers=agent)).status == 200
    query = "?format=application/vnd.pypi.simple.v1%2Bjson&token=query-secret-42"
    assert (await logged.get("/simple/" + query, headers=basic)).status == 200
    assert (await upload(logged, wheel, USER, "wrong-password-42")).status == 403
    assert (await upload(logged, wheel)).status == 200
    file_url = f"/files/private-proj/{wheel.name}"
    response = await logged.get(file_url, headers=basic)
    assert response.status == 200 and await response.read() == wheel.read_bytes()
    assert (await logged.head(file_url)).status == 200
    assert (await logged.get("/no/such/page")).status == 404

    found = await records(log_output, 7)
    assert [(r["method"], r["path"], r["status"]) for r in found] == [
        ("GET", "/health", 200),
        ("GET", "/simple/?format=application%2Fvnd.pypi.simple.v1%2Bjson", 200),
        ("POST", "/legacy/", 403),
        ("POST", "/legacy/", 200),
        ("GET", file_url, 200),
        ("HEAD", file_url, 200),
        ("GET", "/no/such/page", 404),
    ]
    assert found[0]["agent"] == agent["User-Agent"]  # quoted and escaped, read back whole
    assert [r["user"] for r in found] == [None, None, None, USER, None, None, None]
    assert [r["cache"] for r in found] == ["-", "-", "-", "-", "private", "private", "-"]
    assert all(r["remote"] == "127.0.0.1" for r in found)
    assert all(isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0 for r in found)
    # bytes sent, headers included: the file went out with sendfile and still counts
    assert found[4]["bytes"] > wheel.stat().st_size > found[5]["bytes"] > 0

    output = log_output.getvalue()
    assert len(output.splitlines()) == 7
    for secret in (*SECRETS, basic["Authorization"].split()[1]):
        assert secret not in output


async def test_url_credentials_are_not_logged(
    logged: TestClient, log_output: io.StringIO
) -> None:
    """A client that puts user:password in the URL sends them as a Basic header; one that
    (wrongly) sends an absolute URL with user info in the request line must not get them
    logged either."""
    host, port = logged.server.host, logged.server.port
    reader, writer = await asyncio.open_connection(host, port)
    token = base64.b64encode(b"bob:url-secret-42").decode()
    writer.write(
        f"GET http://bob:url-secret-42@{host}:{port}/health?token=query-secret-42 HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 200 ")
    writer.close()
    await writer.wait_closed()

    [record] = await records(log_output, 1)
    assert (record["method"], record["path"], record["status"]) == ("GET", "/health", 200)
    output = log_output.getvalue()
    for secret in ("url-secret-42", "query-secret-42", token, "bob"):
        assert secret not in output


async def test_metrics_are_recorded_when_the_log_is_off(
    logged: TestClient, log_output: io.StringIO
) -> None:
    logging.getLogger("pyproxy.access").setLevel(logging.WARNING)  # --log-level warning
    assert (await logged.get("/health")).status == 200
    assert (await logged.get("/health")).status == 200
    text = await (await logged.get("/metrics")).text()
    assert 'pyproxy_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert log_output.getvalue() == ""
