"""Which files the warm-up (repository/warmup.py) downloads ahead of pip: the ones pip resolved.

pip resolves on `.metadata` alone and only then downloads the wheels, one at a time, so a cold
install waits one upstream round trip per file after resolving. The files it will download are
known by then: per project, the one whose `.metadata` it got last (a version it rejected while
backtracking had its `.metadata` fetched before the one it settled on). So when pip asks for
the file of a `.metadata` it got, resolution is over: the others are downloaded ahead, once,
and what pip asks for next is cached or on its way. A client is its address and User-Agent;
only pip's agent counts (uv downloads in parallel on its own), and a record not completed by a
download within _TTL_S is forgotten. What it still downloads for nothing (pip stopped, a
project left the resolution while backtracking) the warm-up counts as wasted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pyproxy import metrics
from pyproxy.model import Forbidden, NormalizedName, RemoteFile, Repository, StreamedFile
from pyproxy.repository.warmup_ledger import Ledger
from pyproxy.repository.warmup_side import Budget, Side

__all__ = ["AheadOfPip", "Resolved", "download_whole", "is_pip"]

log = logging.getLogger("pyproxy.warmup")

_TTL_S = 600.0
_CLIENTS = 256
_FILES = 1024  # per client


def is_pip(user_agent: str | None) -> bool:
    return user_agent is not None and user_agent.startswith("pip/")


class Resolved:
    """Per client, the file whose `.metadata` it got last, per project, in the order got."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # client -> (when last added to, project -> filename)
        self._clients: OrderedDict[str, tuple[float, OrderedDict[NormalizedName, str]]] = (
            OrderedDict()
        )

    def got_metadata(self, client: str, project: NormalizedName, filename: str) -> None:
        now = self._clock()
        held = self._clients.pop(client, None)
        files = held[1] if held is not None and now - held[0] < _TTL_S else OrderedDict()
        files.pop(project, None)
        files[project] = filename
        while len(files) > _FILES:
            files.popitem(last=False)
        self._clients[client] = (now, files)
        while len(self._clients) > _CLIENTS:
            self._clients.popitem(last=False)

    def download_starts(
        self, client: str, project: NormalizedName, filename: str
    ) -> list[tuple[NormalizedName, str]]:
        """The client asks for `filename`: if it is the file of the `.metadata` it got last for
        `project`, the other files of its record (which is then emptied); else none."""
        held = self._clients.get(client)
        if held is None or held[1].get(project) != filename:
            return []
        del self._clients[client]
        if self._clock() - held[0] >= _TTL_S:
            return []
        return [(name, file) for name, file in held[1].items() if name != project]


async def download_whole(
    repository: Repository, project: NormalizedName, filename: str, max_size: int
) -> bool:
    """Have `filename` downloaded into the cache, unless it is cached, someone else's download
    of it is under way, or it is bigger than `max_size` or of a size not known without asking
    upstream (the page's, or learnt from ranges: a probe would be one more request of the file):
    whether this one downloaded it. Raises what the download raises."""
    opened = await repository.open_file(project, filename)
    if not isinstance(opened, RemoteFile):
        return False  # cached, or (a cluster node) already arriving
    size = opened.known_size()
    if size is None or size > max_size:
        metrics.WARMUP_SKIPPED.labels("size").inc()
        return False
    whole = await opened.whole()
    if not isinstance(whole, StreamedFile) or whole.cache != "miss":
        return False
    metrics.WARMUP_STARTED.labels("file").inc()
    async for _chunk in whole.chunks:  # to its verified end, read back from the part file
        pass
    return True


class AheadOfPip:
    """The warm-up's downloads ahead of pip, with its ledger, slots and rules (`allowed`)."""

    def __init__(
        self, repository: Repository, ledger: Ledger, slots: asyncio.Semaphore,
        allowed: Callable[[NormalizedName], Awaitable[Side | None]], budget: int, max_size: int,
    ) -> None:
        self.repository, self.ledger, self.slots = repository, ledger, slots
        self.allowed, self.budget, self.max_size = allowed, budget, max_size
        self.resolved = Resolved()

    def got_metadata(self, client: str, project: NormalizedName, filename: str) -> None:
        self.resolved.got_metadata(client, project, filename)

    def download_starts(
        self, client: str, project: NormalizedName, filename: str
    ) -> Coroutine[Any, Any, None] | None:
        """The work to run if the client's downloads start with this file, else None."""
        files = self.resolved.download_starts(client, project, filename)
        return self._ahead(files, Budget(self.budget)) if files else None

    async def _ahead(self, files: list[tuple[NormalizedName, str]], budget: Budget) -> None:
        wanted: list[tuple[tuple[str, NormalizedName, str], Side]] = []
        for project, filename in files:
            key = ("file", project, filename)
            if key in self.ledger.warming or key in self.ledger.warmed or (
                side := await self.allowed(project)) is None:
                continue
            if not budget.take():
                break
            self.ledger.warming.add(key)
            wanted.append((key, side))
        await asyncio.gather(*(self._download(key, side) for key, side in wanted))

    async def _download(self, key: tuple[str, NormalizedName, str], side: Side) -> None:
        try:
            async with self.slots:
                done = await download_whole(self.repository, key[1], key[2], self.max_size)
            if done and key not in self.ledger.joined:
                self.ledger.remember(key, "file", side.page_ttl)
        except Forbidden:  # the policy holds it back now: nothing went wrong
            metrics.WARMUP_SKIPPED.labels("policy").inc()
        except Exception as exc:
            metrics.WARMUP_FAILED.labels("file").inc()
            log.debug("warm-up download of %s failed: %s", key[2], exc)
        finally:
            self.ledger.warming.discard(key)
            self.ledger.joined.discard(key)
