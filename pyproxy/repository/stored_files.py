"""One file of an upstream page that this process holds no fresh copy of, read from the stored
copy without parsing the page whole (repository/upstream.py asks before it parses).

Another worker, or the process before a restart, fetched and parsed the page and stored it; a
page of thousands of files takes tens of milliseconds to parse again, on a cold install's path,
where reading its one file takes a fraction of that (formats.parse.find_listed_file). The page
is parsed whole meanwhile and kept, so the next request finds it in memory; one that comes
while that parse runs waits for it rather than parsing twice. Once per stored revision: after
that (the parsed page was evicted from memory), requests take the whole parse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pyproxy.formats.parse import find_listed_file
from pyproxy.lru import BoundedLRU
from pyproxy.model import DistFile, NormalizedName, NotFound
from pyproxy.repository.downloads import Origins, origins_of
from pyproxy.stores.pages import PageCache, PageRecord, UpstreamFormatError

__all__ = ["StoredFiles"]

log = logging.getLogger("pyproxy.upstream")

_PAGES = 4096  # pages whose stored revision one file was read from

LoadRecord = Callable[[str], Awaitable[PageRecord | None]]


class StoredFiles:
    """Files read from `pages`' stored copies while fresh (`ttl`), loaded by `load`."""

    def __init__(self, pages: PageCache, ttl: float, load: LoadRecord) -> None:
        self._pages = pages
        self._ttl = ttl
        self._load = load
        self._read: BoundedLRU[str, str] = BoundedLRU(_PAGES)  # page -> stored revision
        self._parsing: dict[str, asyncio.Task[None]] = {}

    async def find(self, project: NormalizedName, filename: str) -> tuple[DistFile, Origins] | None:
        """The file as its page lists it, and the origins of the page's links; None: take the
        page (in memory, being parsed meanwhile, stale, or already read from once); NotFound
        if the page does not offer it."""
        known = self._pages.known(project)
        if known is not None and time.time() - known.fetched_at < self._ttl:
            return None
        if (parsing := self._parsing.get(project)) is not None:
            await asyncio.shield(parsing)  # then in memory
            return None
        record = await self._load(project)
        if (record is None or record.status != 200 or self._read.get(project) == record.revision
                or time.time() - record.fetched_at >= self._ttl):
            return None
        self._read.put(project, record.revision)
        try:
            listed = await asyncio.to_thread(
                find_listed_file, record.body, record.content_type, record.url, filename
            )
        except UpstreamFormatError:
            return None  # stored by a pyproxy with laxer checks: the whole parse decides
        parsing = asyncio.get_running_loop().create_task(self._keep_parsed(project, record))
        self._parsing[project] = parsing
        parsing.add_done_callback(lambda _done: self._parsing.pop(project, None))
        if listed.dist is None or not listed.status.offers_files:
            raise NotFound(f"no file {filename!r} in project {project!r}")
        origins = origins_of(directory + "/" for directory in listed.directories)
        return listed.dist, lambda: origins

    async def close(self) -> None:
        """Cancel the whole parses still running."""
        for parsing in self._parsing.values():
            parsing.cancel()
        await asyncio.gather(*self._parsing.values(), return_exceptions=True)

    async def _keep_parsed(self, key: str, record: PageRecord) -> None:
        try:
            parsed = await self._pages.parsed(key, record)
        except UpstreamFormatError as exc:
            log.warning("the cached page of %s is unusable: %s", key, exc)
            return
        known = self._pages.known(key)
        if known is None or known.fetched_at < record.fetched_at:  # else refreshed meanwhile
            self._pages.keep(key, parsed)
