"""/files/<project>/<filename> and <filename>.metadata (PEP 658): which sender answers."""

from __future__ import annotations

import logging

from aiohttp import web

from pyproxy.model import LocalFile, OpenedFile, RemoteFile, StreamedFile, normalize
from pyproxy.web import warmup
from pyproxy.web.cold import send_remote
from pyproxy.web.context import SERVICES
from pyproxy.web.files import outcome
from pyproxy.web.local_files import send_local
from pyproxy.web.streamed import send_streamed

log = logging.getLogger("pyproxy.web")
METADATA_SUFFIX = ".metadata"


async def download(request: web.Request) -> web.StreamResponse:
    """/files/<project>/<filename> and <filename>.metadata (PEP 658)."""
    services = request.app[SERVICES]
    project = normalize(request.match_info["project"])
    filename = request.match_info["filename"]
    source: OpenedFile
    for attempt in (1, 2):
        if filename.endswith(METADATA_SUFFIX):
            source = await services.repository.open_metadata(
                project, filename[: -len(METADATA_SUFFIX)]
            )
        else:
            if attempt == 1:
                warmup.file_requested(request, project, filename)
            source = await services.repository.open_file(project, filename)
        if isinstance(source, RemoteFile):  # not on disk: HEAD and Range need no download
            response, whole = await send_remote(request, source)
            if whole is not None:
                warmup.file_served(request, project, filename, whole)
            return response
        outcome(request, source.cache)
        if not isinstance(source, LocalFile):
            break
        try:
            response = await send_local(request, source)
        except FileNotFoundError:
            if attempt == 2:
                raise
            # evicted between lookup and open, or deleted by hand (send_local had the index
            # forget it): looking it up again misses, and fetches it anew
            continue
        warmup.file_served(request, project, filename, source)
        return response
    assert isinstance(source, StreamedFile)
    response = await send_streamed(
        request, source, lambda exc: log.warning("aborted %s: %s", request.path, exc)
    )
    warmup.file_served(request, project, filename, source)
    return response
