"""A small file server for blobcache tests, and a worker script that uses a BlobCache.

Bodies are generated on the fly (a block repeated), so a 200 MB file costs no memory. Each blob can
be told to wait before its headers, pause part-way (for seconds or until an asyncio.Event is set),
drop the connection early, or send wrong bytes of the right length.

As a script (`python -m tests.blob_server DIR URL KEY SHA256 SIZE CONCURRENCY [--hold]`) it opens a
BlobCache on DIR, prints "ready", waits for a line on stdin, runs CONCURRENCY fetches of URL at
once and prints one JSON line with the results. With --hold it prints "streaming" after the first
chunk and then sleeps, to be killed mid-download.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from pyproxy.model import LocalFile, Unavailable
from pyproxy.stores.blobcache import BlobCache, OpenUpstream

PIECE = 64 * 1024


@dataclass
class Blob:
    block: bytes
    repeat: int = 1
    delay: float = 0.0  # before the headers
    pause_at: int | None = None  # byte offset where the body stops for a while
    pause: float = 0.0  # ... for this long
    gate: asyncio.Event | None = None  # ... or until this is set
    cut_at: int | None = None  # send this many bytes (of a full Content-Length), then hang up
    corrupt: bool = False  # flip the last byte
    status: int = 200

    @property
    def size(self) -> int:
        return len(self.block) * self.repeat

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for _ in range(self.repeat):
            digest.update(self.block)
        return digest.hexdigest()


class BlobServer:
    """Serves /blob/{name}; `requests` counts the requests per name."""

    def __init__(self) -> None:
        self.blobs: dict[str, Blob] = {}
        self.requests: Counter[str] = Counter()
        self.app = web.Application()
        self.app.router.add_get("/blob/{name}", self._serve)

    def add(self, name: str, blob: Blob) -> Blob:
        self.blobs[name] = blob
        return blob

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests[name] += 1
        blob = self.blobs.get(name)
        if blob is None:
            raise web.HTTPNotFound()
        if blob.delay:
            await asyncio.sleep(blob.delay)
        if blob.status != 200:
            return web.Response(status=blob.status, text="told to fail")
        response = web.StreamResponse()
        response.content_length = blob.size
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        sent = 0
        limit = blob.size if blob.cut_at is None else blob.cut_at
        paused = blob.pause_at is None
        for index in range(blob.repeat):
            block = blob.block
            if blob.corrupt and index == blob.repeat - 1:
                block = block[:-1] + bytes([block[-1] ^ 0xFF])
            for start in range(0, len(block), PIECE):
                piece = block[start : start + PIECE]
                if not paused and sent + len(piece) > blob.pause_at:  # type: ignore[operator]
                    head = blob.pause_at - sent  # type: ignore[operator]
                    await response.write(piece[:head])
                    sent += head
                    piece = piece[head:]
                    paused = True
                    if blob.gate is not None:
                        await blob.gate.wait()
                    await asyncio.sleep(blob.pause)
                if sent + len(piece) > limit:
                    await response.write(piece[: limit - sent])
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(piece)
                sent += len(piece)
        await response.write_eof()
        return response


def opener(session: aiohttp.ClientSession, url: str) -> OpenUpstream:
    """An OpenUpstream for `url`, as the upstream module would build one."""

    @asynccontextmanager
    async def open_upstream() -> AsyncIterator[AsyncIterator[bytes]]:
        try:
            response = await session.get(url)
        except aiohttp.ClientError as exc:
            raise Unavailable(f"upstream unreachable: {exc}") from exc
        async with response:
            if response.status != 200:
                raise Unavailable(f"upstream answered {response.status}")
            yield response.content.iter_chunked(256 * 1024)

    return open_upstream


async def _worker(argv: list[str]) -> None:
    directory, url, key, sha256, size, concurrency = argv[:6]
    hold = "--hold" in argv
    cache = BlobCache(Path(directory), max_size=1 << 30)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async with aiohttp.ClientSession() as session:
        upstream = opener(session, url)

        async def one() -> dict[str, object]:
            source = await cache.fetch(key, sha256=sha256, size=int(size), open_upstream=upstream)
            if isinstance(source, LocalFile):
                return {"kind": "local", "sha256": source.sha256, "size": source.size}
            digest = hashlib.sha256()
            count = 0
            async for chunk in source.chunks:
                digest.update(chunk)
                count += len(chunk)
                if hold:
                    print("streaming", flush=True)
                    await asyncio.sleep(3600)
            return {"kind": "streamed", "sha256": digest.hexdigest(), "size": count}

        results = await asyncio.gather(
            *(one() for _ in range(int(concurrency))), return_exceptions=True
        )
    print(
        json.dumps([r if isinstance(r, dict) else {"error": repr(r)} for r in results]), flush=True
    )
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(_worker(sys.argv[1:]))
