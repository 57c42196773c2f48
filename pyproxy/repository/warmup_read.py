"""How the warm-up (repository/warmup.py) reads a release's metadata: from a served file (a
`.metadata`, or a wheel's own METADATA) or from the `.metadata` it fetched."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pyproxy.formats.dependencies import MAX_METADATA, wheel_metadata
from pyproxy.model import FileSource, LocalFile

__all__ = ["collect_metadata", "read_metadata"]


def read_metadata(path: Path, wheel: bool) -> bytes | None:
    """In a thread: the served file's metadata (a wheel's own METADATA); None if too big."""
    if wheel:
        data = wheel_metadata(str(path))
    else:
        with open(path, "rb") as body:
            data = body.read(MAX_METADATA + 1)
    return None if data is None or len(data) > MAX_METADATA else data


async def collect_metadata(source: FileSource) -> bytes | None:
    """A `.metadata` as the warm-up fetched it (streamed to its verified end) or found it."""
    if isinstance(source, LocalFile):
        return await asyncio.to_thread(read_metadata, source.path, False)
    parts: list[bytes] = []
    size = 0
    async for chunk in source.chunks:
        size += len(chunk)
        if size <= MAX_METADATA:
            parts.append(chunk)
    return b"".join(parts) if size <= MAX_METADATA else None
