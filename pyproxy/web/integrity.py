"""PEP 740 provenance: /integrity/<project>/<version>/<filename>/provenance.

Simple pages link a file's provenance object here (`provenance` in JSON, `data-provenance` in
HTML) when the file has one: an upstream file's as fetched once from upstream and kept like a
file, a private file's as built from the attestations uploaded with it. The path is the one the
public index's Integrity API uses; the read rules are those of the project's other routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import hdrs, web

from pyproxy.model import DistFile, FileSource, LocalFile, NormalizedName, NotFound, normalize
from pyproxy.stores.proof import INTEGRITY_TYPE, MAX_PROVENANCE_BYTES
from pyproxy.web.conditional import none_match
from pyproxy.web.context import SERVICES

ROUTE = "/integrity/{project}/{version}/{filename}/provenance"


def provenance_url(base: str, project: NormalizedName) -> Callable[[DistFile], str | None]:
    """For the page renderers: where a file's provenance is served (None without a version)."""
    prefix = f"{base}/integrity/{project}/"

    def url(dist: DistFile) -> str | None:
        version = dist.version
        if version is None:
            return None
        return f"{prefix}{quote(version)}/{quote(dist.filename)}/provenance"

    return url


async def _body(source: FileSource) -> bytes:
    """The provenance object: small (bounded by the proof, or by the upload's check), so it is
    answered whole, and a download that fails on the way is a clean 503."""
    if isinstance(source, LocalFile):
        return await asyncio.to_thread(source.path.read_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in source.chunks:
        size += len(chunk)
        if size > MAX_PROVENANCE_BYTES:
            raise NotFound("the provenance object is larger than any pyproxy serves")
        chunks.append(chunk)
    return b"".join(chunks)


async def provenance(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    project = normalize(request.match_info["project"])
    filename = request.match_info["filename"]
    page = await services.repository.project_page(project)
    dist = page.file(filename)
    if dist is None or dist.version != request.match_info["version"]:
        raise NotFound(f"no file {filename!r} of version {request.match_info['version']!r}")
    source = await services.repository.open_provenance(project, filename)
    body = await _body(source)
    headers = {hdrs.CACHE_CONTROL: "max-age=86400"}
    if source.sha256:
        headers[hdrs.ETAG] = f'"{source.sha256}"'
        if none_match(request.headers.get(hdrs.IF_NONE_MATCH), headers[hdrs.ETAG]):
            return web.Response(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = INTEGRITY_TYPE
    return web.Response(body=body, headers=headers)
