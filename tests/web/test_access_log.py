"""The access log (pyproxy.web.access): one record per request, in text and in JSON, with no
credential in it, whatever the request carried; malformed requests and clients that go away
mid-response get one warning line (never a traceback) and a record of what was sent."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp.web_protocol
import pytest
from aiohttp import encode_basic_auth
from aiohttp.http_exceptions import (
    BadHttpMessage,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    TransferEncodingError,
)
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.test_utils import TestClient

from pyproxy.logs import TEXT_FORMAT, JsonFormatter
from pyproxy.web.access_log import describe_refusal
from tests.access_log import access_records
from tests.conftest import PASSWORD, USER, MakeClient, upload
from tests.dists import make_wheel
from tests.fake_upstream import FakeUpstream
from tests.test_metrics import FILES_ROUTE, durations, http, s, scrape, settle

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


async def test_header_bytes_that_are_not_utf8_are_logged_escaped(
    logged: TestClient, log_output: io.StringIO
) -> None:
    """A User-Agent of bytes that are not UTF-8 (aiohttp hands them on as lone surrogates) is
    written as \\xNN escapes, in text and in JSON: the logger does not fail, so the request
    gets its record and the next request on the connection (pipelined) its answer."""
    answer = await raw_exchange(
        logged,
        b"GET /health HTTP/1.1\r\nHost: h\r\nUser-Agent: pip \xff\xfe\x80 \xc3\xa9\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2, answer
    first, second = await records(log_output, 2)
    assert (first["path"], first["status"]) == ("/health", 200)
    assert first["agent"] == "pip \\xff\\xfe\\x80 \u00e9"  # valid UTF-8 stays as it is
    assert (second["path"], second["status"]) == ("/health", 200)
    assert len(log_output.getvalue().splitlines()) == 2


async def test_metrics_are_recorded_when_the_log_is_off(
    logged: TestClient, log_output: io.StringIO
) -> None:
    logging.getLogger("pyproxy.access").setLevel(logging.WARNING)  # --log-level warning
    assert (await logged.get("/health")).status == 200
    assert (await logged.get("/health")).status == 200
    text = await (await logged.get("/metrics")).text()
    assert 'pyproxy_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert log_output.getvalue() == ""


# ------------------------------------------------------------- clean failures (issue 14 item 15)

MALFORMED = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "bad version": b"GET /simple/ HTTP/9.x\r\nHost: h\r\n\r\n",
    "bad header": b"GET /simple/ HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n",
    "oversized request line": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    "oversized header": b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic "
    + b"c2VjcmV0" * 2_000 + b"\r\n\r\n",
}
BIG = 16 * 1024 * 1024  # well past what the kernel buffers between a server and a slow client


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """Everything the app logs at INFO and up, formatted as `pyproxy serve` writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]


async def raw_exchange(client: TestClient, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def abandon(client: TestClient, path: str, read: int) -> int:
    """GET `path` with a small receive window, read about `read` bytes, then reset the
    connection; returns the bytes read (headers included)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    got = 0
    while got < read and (chunk := await reader.read(64 * 1024)):
        got += len(chunk)
    writer.transport.abort()
    return got


async def records_for(
    stream: io.StringIO, method: str, path: str, count: int = 1
) -> list[dict[str, Any]]:
    for _ in range(500):
        found = [
            r for r in access_records(stream.getvalue())
            if (r["method"], r["path"]) == (method, path)
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"no access record for {path}:\n{stream.getvalue()}")


async def test_malformed_requests_get_one_warning_and_an_access_record(
    logged: TestClient, server_log: io.StringIO
) -> None:
    before = await scrape(logged)
    for data in MALFORMED.values():
        assert (await raw_exchange(logged, data)).startswith(b"HTTP/1.0 400 Bad Request\r\n")
    expected = {**http("unmatched", "other", 400, len(MALFORMED)),
                **durations(other__unmatched=len(MALFORMED))}
    assert await settle(logged, before, expected) == expected

    text = server_log.getvalue()
    assert "Traceback" not in text and "c2VjcmV0" not in text
    lines = warnings_in(text)
    assert len(lines) == len(MALFORMED), text
    assert all(" WARNING pyproxy.web: refused a malformed request from 127.0.0.1 with 400: "
               in line for line in lines), text
    assert "a line of its head is longer than 8190 bytes" in lines[3]
    refused = [r for r in access_records(text) if r["status"] == 400]
    assert len(refused) == len(MALFORMED)


SECRET = "refusal-secret-42"
# a request aiohttp's parsers refuse, with a secret in it -> what the warning says, by parser
REFUSED: dict[str, tuple[bytes, str, str]] = {
    "duplicate Content-Length": (
        b"POST /simple/ HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\nContent-Length: 18\r\n\r\n"
        + SECRET.encode(),
        "duplicate Content-Length", "duplicate 'Content-Length' header found"),
    "missing Host": (
        f"GET /simple/?token={SECRET} HTTP/1.1\r\nUser-Agent: a\r\n\r\n".encode(),
        "missing 'Host' header in request", "missing 'Host' header in request"),
    "header line without a colon": (
        f"GET /simple/ HTTP/1.1\r\nHost: h\r\n{SECRET}\r\n\r\n".encode(),
        "invalid header token", "an invalid header"),
    "control character in a header value": (
        f"GET /simple/ HTTP/1.1\r\nHost: h\r\nAuthorization: {SECRET}\x01\r\n\r\n".encode(),
        "invalid header value char", "an invalid header"),
    "bad Content-Length": (
        f"POST /simple/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5{SECRET}\r\n\r\n".encode(),
        "invalid character in Content-Length", "an invalid Content-Length header"),
    "invalid method": (
        f"GE(T /simple/?{SECRET} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
        "a bad method in the request line", "a bad method in the request line"),
    "TLS on the HTTP port": (
        b"\x16\x03\x01\x00\xa5" + SECRET.encode() + b"\r\n\r\n",
        "HTTPS traffic on an HTTP port", "HTTPS traffic on an HTTP port"),
    "too long a request line": (
        f"GET /{SECRET}{'a' * 9000} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
        "a line of its head is longer than 8190 bytes",
        "a line of its head is longer than 8190 bytes"),
    "control character in the target": (
        f"GET /simple/\x01{SECRET} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
        "an invalid request target (invalid char in url path)", "an invalid request target"),
    "bad version": (
        f"GET /{SECRET} HTTP/9.x\r\nHost: h\r\n\r\n".encode(),
        "a bad request line (invalid minor version)", "a bad request line"),
    "bad chunk size": (
        f"POST /simple/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"zz{SECRET}\r\nabc\r\n0\r\n\r\n".encode(),
        "invalid character in chunk size", "a bad chunk size"),
    "Transfer-Encoding with Content-Length": (
        f"POST /simple/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Length: 3\r\n\r\n{SECRET}".encode(),
        "Content-Length can't be present with Transfer-Encoding",
        "Transfer-Encoding can't be present with Content-Length"),
    "bad Transfer-Encoding": (
        f"POST /simple/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {SECRET}\r\n\r\n".encode(),
        "request has invalid `Transfer-Encoding`", "request has invalid `Transfer-Encoding`"),
    "data after Connection: close": (
        f"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        f"GET /{SECRET} HTTP/1.1\r\n\r\n".encode(),
        "data after `Connection: close`", "data after `Connection: close`"),
}


@pytest.fixture(params=["C", "Python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """aiohttp's request parser for the server's new connections: its C one (llhttp, the
    default) or its pure-Python one (what runs without the C extension); their messages differ."""
    if request.param == "Python":
        monkeypatch.setattr(aiohttp.web_protocol, "HttpRequestParser", HttpRequestParserPy)
    else:
        assert aiohttp.web_protocol.HttpRequestParser is not HttpRequestParserPy
    return str(request.param)


async def test_refusals_say_why_in_words_and_quote_nothing_sent(
    logged: TestClient, server_log: io.StringIO, parser: str
) -> None:
    """Each refusal's warning line is the parser's reason in whole words, a header name it
    quotes kept, and nothing the client sent: no value, no URL, no body."""
    said = {}
    for name, (data, *_) in REFUSED.items():
        before = len(warnings_in(server_log.getvalue()))
        answer = await raw_exchange(logged, data)
        assert b"HTTP/1.0 400 Bad Request\r\n" in answer, (name, answer)
        [line] = warnings_in(server_log.getvalue())[before:]
        head, _, said[name] = line.partition(
            " WARNING pyproxy.web: refused a malformed request from 127.0.0.1 with 400: ")
        assert head, line
    text = server_log.getvalue()
    assert SECRET not in text and "Traceback" not in text
    column = 0 if parser == "C" else 1
    assert said == {name: expected[column] for name, (_, *expected) in REFUSED.items()}


@pytest.mark.parametrize(("refused", "said"), [
    # quoted: a short header name stays; bytes, values, lines go, escaped quotes and all
    (BadHttpMessage("Duplicate 'X-Api-Key' header found."), "duplicate 'X-Api-Key' header found"),
    (BadHttpMessage("Bad thing 'a secret value' here"), "bad thing here"),
    (BadHttpMessage("Bad thing 'x" + "y" * 40 + "' here"), "bad thing here"),
    (BadHttpMessage("Bad thing b'it\\'s: s3cret' here"), "bad thing here"),
    (BadHttpMessage("Bad thing bytearray(b\"s3cret\") here"), "bad thing here"),
    (BadHttpMessage("Bad thing 's3cret"), "bad thing"),  # a quote left open: all of it goes
    # an apostrophe is no quote; a backquoted constant keeps its colon
    (BadHttpMessage("Transfer-Encoding can't be present"), "Transfer-Encoding can't be present"),
    (BadHttpMessage("Data after `Connection: close`"), "data after `Connection: close`"),
    # the words stop at a colon (what follows quotes the request) or a line's end
    (BadHttpMessage("Unexpected LF in chunk-extension: b';s3cret'"),
     "unexpected LF in chunk-extension"),
    (BadHttpMessage("Invalid header token:\n\n  b'X(s3cret): v'\n     ^"), "invalid header token"),
    (BadHttpMessage("s3cret\x00"), "BadHttpMessage"),  # nothing readable left
    # the Python parser's messages that are the client's bytes alone
    (TransferEncodingError("s3cret"), "a bad chunk size"),
    (TransferEncodingError("Not enough data to satisfy transfer length header."),
     "not enough data to satisfy transfer length header"),
    (InvalidURLError("/s3cret"), "an invalid request target"),
    (InvalidURLError("/s3cret:\n\n  b'x'"), "an invalid request target"),
    (InvalidHeader(b"s3cret"), "an invalid header"),
    (InvalidHeader("Content-Length"), "an invalid Content-Length header"),
])
def test_a_refusal_quotes_only_the_parsers_own_words(
    refused: HttpProcessingError, said: str
) -> None:
    assert describe_refusal(refused) == said


async def test_abandoned_downloads_record_the_bytes_sent(
    fake: FakeUpstream, make_client: MakeClient, server_log: io.StringIO
) -> None:
    """A client that resets the connection mid-file, on a miss (streamed as it arrives) and on
    a hit (sendfile): one warning each, and the access log and metrics count what went out."""
    dist = fake.add_generated_file("big", "big-1.0.tar.gz", BIG)
    client, _ = await make_client(access_log=True, upstream_url=fake.index_url)
    path = f"/files/big/{dist.filename}"
    assert (await client.get("/simple/big/")).status == 200
    before = await scrape(client)

    fake.chunk_delay = 0.005  # upstream is still sending when the client gives up
    read_miss = await abandon(client, path, 200_000)
    [miss] = await records_for(server_log, "GET", path)
    fake.chunk_delay = 0
    # the download goes on without the client, and is cached
    while (await client.head(path)).headers["X-Pyproxy-Cache"] != "hit":
        await asyncio.sleep(0.05)
    read_hit = await abandon(client, path, 200_000)
    hit = (await records_for(server_log, "GET", path, 2))[1]
    heads = [r["cache"] for r in access_records(server_log.getvalue()) if r["method"] == "HEAD"]

    lines = warnings_in(server_log.getvalue())
    assert "Traceback" not in server_log.getvalue()
    assert len(lines) == 2, lines
    sent = []
    for line, record, read in ((lines[0], miss, read_miss), (lines[1], hit, read_hit)):
        match = re.search(rf"GET {path}: the client went away after (\d+) of {BIG} body bytes$",
                          line)
        assert match and " WARNING pyproxy.web: " in line, line
        body = int(match[1])
        assert record["status"] == 200
        assert read - 1000 < body < BIG  # at least what the client read (less its headers)
        assert 100 < record["bytes"] - body < 1000  # the head, and nothing sent twice
        sent.append(body)
    assert (miss["cache"], hit["cache"]) == ("miss", "hit")

    expected = {
        **http(FILES_ROUTE, "GET", 200, 2),
        **http(FILES_ROUTE, "HEAD", 200, len(heads)),
        **durations(GET__files=2, HEAD__files=len(heads)),
        # a HEAD before the file is cached is a miss too (answered from the page, see web/cold.py)
        s("pyproxy_cache_requests_total", result="miss"): 1 + heads.count("miss"),
        s("pyproxy_cache_requests_total", result="hit"): heads.count("hit") + 1,
        s("pyproxy_served_bytes_total", source="upstream"): sent[0],
        s("pyproxy_served_bytes_total", source="cache"): sent[1],
        s("pyproxy_http_responses_cut_short_total", cause="client"): 2,
        **({s("pyproxy_cache_requests_total", result="coalesced"): heads.count("coalesced")}
           if "coalesced" in heads else {}),
        s("pyproxy_upstream_requests_total", kind="file"): 1,
        s("pyproxy_upstream_request_duration_seconds_count", kind="file"): 1,
    }
    assert await settle(client, before, expected) == expected


async def test_a_client_gone_mid_upload_is_recorded_without_a_traceback(
    logged: TestClient, server_log: io.StringIO
) -> None:
    _, writer = await asyncio.open_connection(logged.server.host, logged.server.port)
    writer.write(
        b"POST /legacy/ HTTP/1.1\r\nHost: h\r\nAuthorization: "
        + encode_basic_auth(USER, PASSWORD).encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: 1000000\r\n\r\n"
        b'--XX\r\nContent-Disposition: form-data; name="content"; filename="a-1.0.tar.gz"\r\n\r\n'
        + b"x" * 5000
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    writer.transport.abort()
    [record] = await records_for(server_log, "POST", "/legacy/")

    assert (record["status"], record["bytes"], record["user"]) == (499, 0, USER)
    text = server_log.getvalue()
    assert "Traceback" not in text
    assert warnings_in(text) == [
        line for line in text.splitlines()
        if line.endswith(" WARNING pyproxy.web: POST /legacy/: the client went away before the"
                         " response was sent")
    ]
    assert len(warnings_in(text)) == 1


def test_a_line_quoted_once_per_client_and_thing_asked_keeps_its_own_values() -> None:
    from pyproxy.web.access_log import _Line
    from tests.access_log import parse_access_line

    base = {"method": "GET", "path": "/simple/a b/", "status": 200, "bytes": 10,
            "duration_ms": 1.5, "cache": "-", "remote": "127.0.0.1", "user": None,
            "agent": 'pip/25 {"x": "y"}', "cut": None}
    variants = [base, {**base, "duration_ms": 7.25}, {**base, "agent": "uv/0.9"},
                {**base, "user": "alice", "duration_ms": 0.1}, {**base, "status": 304},
                {**base, "cut": "aborted"}, base]
    for fields in variants * 2:
        line = f"2026-01-01 00:00:00,000 INFO pyproxy.access: {_Line(fields)}"
        assert parse_access_line(line) == fields
