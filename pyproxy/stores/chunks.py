"""Byte streams as the caches pass them on: a stream without its first bytes, a file read in
chunks off the loop, bytes held in memory (as a stream, and as a blob cache's opener)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

__all__ = ["held", "once", "read_file", "skip"]

CHUNK = 256 * 1024


async def skip(chunks: AsyncIterator[bytes], count: int) -> AsyncIterator[bytes]:
    """`chunks` without its first `count` bytes (those a consumer has had from elsewhere)."""
    async for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        if count:
            chunk, count = chunk[count:], 0
        yield chunk


async def read_file(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes, opened at once (a later unlink cannot take them away), read in threads."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while chunk := await asyncio.to_thread(os.pread, fd, CHUNK, offset):
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


async def once(data: bytes) -> AsyncIterator[bytes]:
    """`data` as a stream of one chunk."""
    yield data


def held(data: bytes) -> Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]:
    """Bytes made in memory (a `.metadata`), as the opener of a body the blob cache downloads."""

    @asynccontextmanager
    async def body() -> AsyncIterator[AsyncIterator[bytes]]:
        yield once(data)

    return body
