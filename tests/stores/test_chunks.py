"""Byte streams (pyproxy/stores/chunks.py): a prefix skipped across chunk borders, a file read
whole even when it is unlinked while being read."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from pyproxy.stores.chunks import CHUNK, read_file, skip


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_skip_across_chunk_borders() -> None:
    for count in range(0, 12):
        got = b"".join([c async for c in skip(chunks(b"abc", b"", b"defg", b"hij"), count)])
        assert got == b"abcdefghij"[count:]


async def test_read_file_survives_an_unlink(tmp_path: Path) -> None:
    path = tmp_path / "f"
    body = os.urandom(2 * CHUNK + 5)
    path.write_bytes(body)
    reader = read_file(path)
    first = await anext(reader)
    path.unlink()
    assert first + b"".join([c async for c in reader]) == body
