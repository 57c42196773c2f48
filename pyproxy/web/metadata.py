"""What a release's metadata says (`ReleaseMetadata`), for the JSON API and the release pages:
of a private release, from its upload form; of an upstream one, from the PEP 658 metadata of one
of its files (a wheel's, if any), read through the repository, so fetched once."""

from __future__ import annotations

import logging

from pyproxy.formats import legacy_json
from pyproxy.formats.legacy_json import ReleaseMetadata
from pyproxy.model import DistFile, NotFound, Origin, ProjectPage, Unavailable
from pyproxy.repository.core_metadata import MAX_METADATA_BYTES, read_metadata
from pyproxy.web.context import Services

log = logging.getLogger("pyproxy.web.metadata")


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
        data = await read_metadata(services.repository, page.name, source.filename)
    except (NotFound, Unavailable, OSError) as exc:
        log.warning("info of %s without metadata of %s: %s", page.name, source.filename, exc)
        return ReleaseMetadata(), False
    if data is None:
        log.warning(
            "metadata of %s is larger than %d bytes; not read", source.filename,
            MAX_METADATA_BYTES,
        )
        return ReleaseMetadata(), True
    return legacy_json.metadata_from_core(data), True
