"""Following another node's download (pyproxy/stores/peers.py) against a real aiohttp server
on 127.0.0.1: a whole body arrives whole; a cut body, a refusal or a dead node is PeerFailed,
never a short body that ends as if complete."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pyproxy.stores.peers import PEER_HEADER, PeerFailed, Peers, peer_token, token_holds
from tests.servers.postgres import free_port

BODY = bytes(range(256)) * 4096  # 1 MiB


async def handler(request: web.Request) -> web.StreamResponse:
    if not token_holds("s", request.match_info["key"], request.headers.get(PEER_HEADER)):
        raise web.HTTPForbidden(text="not a node")
    offset = int(request.query["offset"])
    response = web.StreamResponse()
    response.content_length = len(BODY) - offset
    await response.prepare(request)
    if request.match_info["key"] == "cut":
        await response.write(BODY[offset : offset + 1000])
        assert request.transport is not None
        request.transport.abort()
        return response
    await response.write(BODY[offset:])
    return response


@pytest.fixture
async def node() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/_internal/inflight/{key}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def read(peers: Peers, url: str, key: str, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in peers.stream(url, key, offset=offset)])


async def test_whole_bodies_from_an_offset(node: str) -> None:
    peers = Peers("s")
    try:
        assert await read(peers, node, "k") == BODY
        assert await read(peers, node, "k", 5000) == BODY[5000:]
    finally:
        await peers.close()


async def test_cut_refused_or_gone_is_peer_failed(node: str) -> None:
    peers = Peers("s")
    strangers = Peers("another secret")
    try:
        with pytest.raises(PeerFailed):
            await read(peers, node, "cut")
        with pytest.raises(PeerFailed, match="403"):
            await read(strangers, node, "k")
        with pytest.raises(PeerFailed):
            await read(peers, f"http://127.0.0.1:{free_port()}", "k")
    finally:
        await peers.close()
        await strangers.close()


def test_tokens_name_their_key() -> None:
    assert token_holds("s", "k", peer_token("s", "k"))
    assert not token_holds("s", "k2", peer_token("s", "k"))
    assert not token_holds("s", "k", None)
