"""Helpers for the repository tests: `Scripted`, a tiny upstream whose answers a test sets per
path (for what the FakeUpstream cannot do: record request headers, send garbage bodies), and
the `scripted_server` fixture: `await scripted_server() -> (scripted, "http://127.0.0.1:PORT")`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


class Scripted:
    """A tiny upstream whose answers the test sets per path; it records every request's headers."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, str | None]] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_route("GET", "/{tail:.*}", self._handle)

    def set(self, path: str, body: bytes | dict[str, Any], content_type: str | None = JSON_TYPE,
            status: int = 200) -> None:
        data = orjson.dumps(body) if isinstance(body, dict) else body
        self.answers[path] = (status, data, content_type)

    def headers_for(self, path: str) -> list[dict[str, str]]:
        return [headers for seen_path, headers in self.seen if seen_path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.headers)))
        if request.path not in self.answers:
            return web.Response(status=404)
        status, body, content_type = self.answers[request.path]
        headers = {"Content-Type": content_type} if content_type else {}
        response = web.Response(status=status, body=body, headers=headers)
        if content_type is None:
            response.headers.popall("Content-Type", None)
        return response


MakeScripted = Callable[[], Awaitable[tuple[Scripted, str]]]


@pytest.fixture
async def scripted_server() -> AsyncIterator[MakeScripted]:
    servers: list[TestServer] = []

    async def make() -> tuple[Scripted, str]:
        scripted = Scripted()
        server = TestServer(scripted.app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return scripted, f"http://127.0.0.1:{server.port}"

    yield make
    for server in servers:
        await server.close()


def good_page(origin: str) -> dict[str, Any]:
    """A valid PEP 691 page of project "proj" whose one file lives on `origin`."""
    return {
        "meta": {"api-version": "1.1"},
        "name": "proj",
        "versions": ["1.0"],
        "files": [{"filename": "proj-1.0.tar.gz", "url": f"{origin}/files/proj-1.0.tar.gz",
                   "hashes": {"sha256": "ab" * 32}, "size": 3}],
    }
