"""`GET /_internal/inflight/{key}?offset=N`: another node of the cluster follows a download
this node leads, from byte N (see stores.peers for who may ask and why). Only nodes built with
a cluster blob cache have it; it answers only for keys the database says this node is
downloading, and streams them as they are written, the last byte once verified.
"""

from __future__ import annotations

import logging

from aiohttp import web

from pyproxy.model import LocalFile, NotFound, StreamedFile
from pyproxy.stores.chunks import read_file, skip
from pyproxy.stores.peers import PEER_HEADER, ROUTE_PREFIX
from pyproxy.web.context import SERVICES
from pyproxy.web.middleware import text_error
from pyproxy.web.streamed import send_streamed

log = logging.getLogger("pyproxy.web")

ROUTE = ROUTE_PREFIX + "{key}"


async def follow(request: web.Request) -> web.StreamResponse:
    cluster = request.app[SERVICES].cluster_blobs
    if cluster is None:
        raise NotFound("this index is not a node of a cluster")
    try:
        offset = int(request.query.get("offset", "0"))
        if offset < 0:
            raise ValueError
    except ValueError:
        return text_error(400, "Bad Request: offset must be a whole number of bytes")
    source = await cluster.serve_inflight(
        request.match_info["key"], request.headers.get(PEER_HEADER)
    )
    chunks = read_file(source.path) if isinstance(source, LocalFile) else source.chunks
    rest = None if source.size is None else max(source.size - offset, 0)
    file = StreamedFile(chunks=skip(chunks, offset), size=rest, sha256=source.sha256)
    return await send_streamed(
        request, file, lambda exc: log.warning("aborted %s for a peer: %s", request.path, exc)
    )
