"""What a release's metadata says (`ReleaseMetadata`), for the JSON API and the release pages:
of a private release, from its upload form; of an upstream one, from the PEP 658 metadata of one
of its files (a wheel's, if any), read through the repository, so fetched once."""

from __future__ import annotations

import asyncio
import logging

from pyproxy.formats import legacy_json
from pyproxy.formats.legacy_json import ReleaseMetadata
from pyproxy.model import (
    DistFile,
    LocalFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectPage,
    Unavailable,
)
from pyproxy.web.context import Services

log = logging.getLogger("pyproxy.web.metadata")

_MAX_METADATA = 16 * 1024 * 1024  # a METADATA file is small; anything bigger is not read


async def release_metadata(
    services: Services, page: ProjectPage, files: list[DistFile]
) -> tuple[ReleaseMetadata, bool]:
    """The release's metadata, and whether it is all there is to know (False: it could not be
    read right now)."""
    for dist in files:
        if dist.origin is Origin.PRIVATE:
            fields = services.catalog.file_fields(dist.filename)
            if fields is not None:
                return legacy_json.metadata_from_fields(fields), True
    source = legacy_json.metadata_file(files)
    if source is None:
        return ReleaseMetadata(), True
    try:
        data = await _read_metadata(services, page.name, source.filename)
    except (NotFound, Unavailable, OSError) as exc:
        log.warning("info of %s without metadata of %s: %s", page.name, source.filename, exc)
        return ReleaseMetadata(), False
    if data is None:
        log.warning(
            "metadata of %s is larger than %d bytes; not read", source.filename, _MAX_METADATA
        )
        return ReleaseMetadata(), True
    return legacy_json.metadata_from_core(data), True


async def _read_metadata(
    services: Services, project: NormalizedName, filename: str
) -> bytes | None:
    source = await services.repository.open_metadata(project, filename)
    if isinstance(source, LocalFile):
        if source.size > _MAX_METADATA:
            return None
        return await asyncio.to_thread(source.path.read_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in source.chunks:
        size += len(chunk)
        if size > _MAX_METADATA:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
