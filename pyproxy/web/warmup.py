"""Where the web layer tells the warm-up (repository/warmup.py) what clients ask for: a served
upstream page, `.metadata` or wheel starts one, and a page or `.metadata` asked for may be one
that was warmed (the `used` metric), and pip asking for a file it resolved downloads the others
it resolved ahead (repository/warmup_files.py). Nothing here waits for the warm-up."""

from __future__ import annotations

from aiohttp import hdrs, web

from pyproxy import metrics
from pyproxy.model import FileSource, LocalFile, NormalizedName
from pyproxy.repository.warmup_files import is_pip
from pyproxy.web.access_log import CUT_SHORT
from pyproxy.web.context import SERVICES
from pyproxy.web.readauth import READ_ACCESS, client_address

METADATA_SUFFIX = ".metadata"


def page_requested(request: web.Request, name: NormalizedName) -> None:
    """A project page was had for the client: warm the `.metadata` it will likely ask next."""
    warmup = request.app[SERVICES].warmup
    if warmup is not None:
        warmup.page_served(name, request.headers.get(hdrs.USER_AGENT))


def _pip_client(request: web.Request) -> str | None:
    """Who the client is, for the downloads ahead of pip: its address (behind a trusted proxy,
    the one it forwards) and agent; None if not pip."""
    agent = request.headers.get(hdrs.USER_AGENT)
    if not is_pip(agent):
        return None
    access = request.app.get(READ_ACCESS)
    address = request.remote if access is None else client_address(request, access)
    return f"{address} {agent}"


def file_requested(request: web.Request, project: NormalizedName, filename: str) -> None:
    """Before a file (not a `.metadata`) is looked up for a GET."""
    warmup = request.app[SERVICES].warmup
    if warmup is not None and request.method == hdrs.METH_GET:
        warmup.file_requested(project, filename, _pip_client(request))


def file_served(
    request: web.Request, project: NormalizedName, filename: str, source: FileSource
) -> None:
    """After a download's response: warm the dependencies of an upstream `.metadata` or wheel
    sent whole (a streamed one only once it arrived whole: it is then complete on disk)."""
    services = request.app[SERVICES]
    warmup = services.warmup
    if warmup is None or source.cache not in metrics.CACHE_RESULTS:  # off, or a private file
        return
    metadata = filename.endswith(METADATA_SUFFIX)
    served = filename[: -len(METADATA_SUFFIX)] if metadata else filename
    if metadata:
        warmup.metadata_requested(project, served, _pip_client(request))
    if request.method != hdrs.METH_GET or not (metadata or filename.endswith(".whl")):
        return
    if not isinstance(source, LocalFile) and CUT_SHORT in request:
        return  # it did not arrive whole

    async def local_of() -> LocalFile | None:
        if isinstance(source, LocalFile):
            return source
        opened = await (
            services.repository.open_metadata(project, served) if metadata
            else services.repository.open_file(project, served)
        )
        return opened if isinstance(opened, LocalFile) else None  # else: gone again meanwhile

    warmup.served(
        project, served, local_of, wheel=not metadata,
        user_agent=request.headers.get(hdrs.USER_AGENT),
    )
