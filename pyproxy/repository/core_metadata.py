"""A served `.metadata` (PEP 658), read whole within a bound, as bytes or parsed: for the JSON
API and the release pages, and for anything else that reads dependencies (the warm-up). It goes
through the repository like a client's request, so an upstream one is fetched (or made from its
wheel) once and cached."""

from __future__ import annotations

import asyncio
from email.errors import MessageError

from packaging.metadata import RawMetadata, parse_email

from pyproxy.model import LocalFile, NormalizedName, Repository

__all__ = ["MAX_METADATA_BYTES", "parsed_metadata", "read_metadata"]

MAX_METADATA_BYTES = 16 * 1024 * 1024  # a METADATA file is small; anything bigger is not read


async def read_metadata(
    repository: Repository, project: NormalizedName, filename: str
) -> bytes | None:
    """The `.metadata` of `filename` (a file of `project` whose page offers one); None if it
    is larger than MAX_METADATA_BYTES. Raises what `open_metadata` raises (NotFound,
    Unavailable, Forbidden), and Unavailable or OSError when its body breaks off."""
    source = await repository.open_metadata(project, filename)
    if isinstance(source, LocalFile):
        if source.size > MAX_METADATA_BYTES:
            return None
        return await asyncio.to_thread(source.path.read_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in source.chunks:
        size += len(chunk)
        if size > MAX_METADATA_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def parsed_metadata(
    repository: Repository, project: NormalizedName, filename: str
) -> RawMetadata | None:
    """`read_metadata`, parsed leniently (fields that do not parse are left out); None if it
    is too large or not core metadata at all (e.g. the empty body of a wheel without any)."""
    data = await read_metadata(repository, project, filename)
    if not data:
        return None
    try:
        raw, _unparsed = parse_email(data)
    except (ValueError, MessageError):
        return None
    return raw if raw.get("name") else None
