"""Following another node's download: `GET {node_url}/_internal/inflight/{key}?offset=N`.

The leader of a download serves the bytes it has written so far from its local part file (the
route is web/inflight.py). Who may ask: a node proves it is one with `X-Pyproxy-Peer`, an HMAC of
the key under the secret every node reads from the cluster database (stores.pg.blobindex), so
only a holder of the database's contents can ask, and only for the key it names; and the route
answers only for a key the database says this node is downloading now. Upstream files are what
any reader of the index may have anyway; the check keeps the route from being a way around read
auth or a probe of what is in flight.

A body ends normally only when complete and verified: the leader withholds its last byte until
the hash matched and aborts the connection on any failure, so a short or broken body here
always raises PeerFailed, never ends as if whole.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp

__all__ = ["PEER_HEADER", "ROUTE_PREFIX", "PeerFailed", "Peers", "peer_token"]

PEER_HEADER = "X-Pyproxy-Peer"
ROUTE_PREFIX = "/_internal/inflight/"
_CONNECT_TIMEOUT_S = 2.0
_READ_TIMEOUT_S = 60.0  # the leader's own upstream deadline is what bounds a slow download


class PeerFailed(Exception):
    """The other node did not give us the whole body (gone, refused, cut short)."""


def peer_token(secret: str, key: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def token_holds(secret: str, key: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(peer_token(secret, key), token)


class Peers:
    """The HTTP client of one process towards the other nodes (made in the loop that uses it)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=_CONNECT_TIMEOUT_S, sock_read=_READ_TIMEOUT_S
                ),
                auto_decompress=False,
            )
        return self._session

    async def stream(self, node_url: str, key: str, *, offset: int) -> AsyncIterator[bytes]:
        """The bytes of `key` from `offset`, as the node downloading it writes them."""
        url = f"{node_url.rstrip('/')}{ROUTE_PREFIX}{quote(key, safe='')}?offset={offset}"
        headers = {PEER_HEADER: peer_token(self._secret, key)}
        try:
            async with self._client().get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    reason = (await resp.content.read(300)).decode(errors="replace").strip()
                    raise PeerFailed(f"{node_url} answered {resp.status}: {reason}")
                async for chunk in resp.content.iter_any():
                    yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerFailed(f"{node_url}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
