"""Warm-up ahead of the client: fetch in the background what pip or uv will ask for next, so
that it is cached by the time they do. Two triggers: a client got an upstream project's page
(`page_served`): warm the `.metadata` of the file it will likely pick (the newest its
environment can install); a client got an upstream `.metadata` or wheel (`served`): warm its
release's dependencies. Each `.metadata` the warm-up fetches warms that release's dependencies
in turn: their pages, and the `.metadata` of the file the client will pick from each under the
requirement, and so on down the tree, within the trigger's budget. So a cold install's chain of
round trips (page, then metadata, then the next level's pages...) runs ahead of the client from
its first request, and no level waits for the client's request of the level before. A third:
pip asks for the first file it resolved: the others are downloaded ahead (warmup_files.py).

Everything goes through the repository the web layer serves (PrivateWins over [policy] over the
routed upstreams), so the overlay, the routes and the policy apply as to a client's request, and
a request the client makes meanwhile joins the warm-up's (one upstream request). On top of that
a name is skipped before anything is asked when it is private (or under a private prefix), when
the upstream serving it is offline, when [policy] allow_only leaves it out or a deny entry names
the whole project; no file over `max_file_size` is downloaded whole (ahead of pip, or for the
METADATA of a wheel whose host does no ranges); a page fresh in this worker's memory is not
fetched again, and what is being warmed is not warmed twice. Per worker: at most `concurrency`
upstream requests at once, at most `budget` per trigger (its whole tree), a release expanded at
most once per page TTL, at most _MAX_TASKS waiting; past that, warm-ups are skipped. It never
delays the request that triggered it (tasks kept in a set, cancelled on close); a failure is
logged at debug and counted.

`used` and `wasted` are counted per worker: a warmed page or `.metadata` a client asks this
worker for within the page's TTL (or while it is being fetched: the client's request joins the
earlier one) is used; one not asked for by then (or pushed out of the record) is wasted. With
several workers a client's next request may reach another worker, which finds the file on disk
(no upstream request either) but counts nothing, so `wasted` overcounts there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from packaging.specifiers import SpecifierSet

from pyproxy import metrics
from pyproxy.formats.dependencies import (
    Dependency,
    best_candidate,
    dependencies,
)
from pyproxy.formats.linehaul import ClientEnvironment, client_environment
from pyproxy.model import (
    Forbidden,
    LocalFile,
    NormalizedName,
    ProjectPage,
    Repository,
    StreamedFile,
)
from pyproxy.repository.warmup_files import AheadOfPip
from pyproxy.repository.warmup_ledger import Ledger
from pyproxy.repository.warmup_read import collect_metadata, read_metadata
from pyproxy.repository.warmup_side import Budget, Side
from pyproxy.repository.wheel_metadata import WHOLE_WHEEL_LIMIT, TooBigToWarm

__all__ = ["Side", "WarmUp"]

log = logging.getLogger("pyproxy.warmup")

_MAX_TASKS = 256  # warm-ups waiting or running in a worker
_INLINE_FILES = 200  # a page with more files is searched for the client's pick in a thread
LocalOf = Callable[[], Awaitable[LocalFile | None]]


class WarmUp:
    def __init__(
        self,
        repository: Repository,
        side_for: Callable[[NormalizedName], Side | None],
        goes_upstream: Callable[[NormalizedName], Awaitable[bool]],
        *,
        concurrency: int,
        budget: int,
        metadata: bool,
        downloads: bool = True,
        max_file_size: int = 64 * 1024**2,
    ) -> None:
        self.repository = repository
        self.side_for = side_for
        self.goes_upstream = goes_upstream
        self.budget = budget
        self.metadata = metadata
        self.downloads = downloads
        self.max_file_size = max_file_size
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ledger = Ledger(side_for)
        self._pip = AheadOfPip(
            repository, self._ledger, self._slots, self._allowed, budget, max_file_size
        )

    # ---- what the web layer tells it ----

    def served(
        self, project: NormalizedName, filename: str, local_of: LocalOf, *, wheel: bool,
        user_agent: str | None,
    ) -> None:
        """An upstream `.metadata` of `filename` (or, `wheel`, the wheel itself) was served:
        warm its dependencies, at most once per page TTL for the same file."""
        self._ledger.sweep(time.time())
        if self._ledger.first((project, filename)):
            self._spawn(self._release(local_of, wheel, user_agent))

    def page_served(self, name: NormalizedName, user_agent: str | None) -> None:
        """A client got `name`'s page: warm the `.metadata` of the file its environment (from
        its User-Agent) will likely pick, and from it the release's dependencies; at most once
        per page TTL for the same name."""
        self.page_requested(name)
        environment = client_environment(user_agent)
        if not self.metadata or environment is None:
            return
        self._ledger.sweep(time.time())
        if self._ledger.first((name, "")):
            self._spawn(self._from_page(name, environment))

    def page_requested(self, name: NormalizedName) -> None:
        self._ledger.claim(name, "page")

    def metadata_requested(
        self, project: NormalizedName, filename: str, client: str | None = None
    ) -> None:  # client: who got it, if pip
        self._ledger.claim((project, filename), "metadata")
        if client is not None and self.downloads:
            self._pip.got_metadata(client, project, filename)

    def file_requested(self, project: NormalizedName, filename: str, client: str | None) -> None:
        """A client asks for a file; if pip (`client`) asks for one it resolved, download the
        others it resolved ahead of it."""
        self._ledger.claim(("file", project, filename), "file")
        if client is not None and self.downloads and (
            work := self._pip.download_starts(client, project, filename)
        ):
            self._spawn(work)

    async def idle(self) -> None:
        """Until no warm-up runs (for tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- bookkeeping ----

    def _spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        if len(self._tasks) >= _MAX_TASKS:
            work.close()
            metrics.WARMUP_SKIPPED.labels("busy").inc()
            return False
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    # ---- the work ----

    async def _from_page(self, name: NormalizedName, environment: ClientEnvironment) -> None:
        side = await self._allowed(name, count=False)  # a page, not a dependency, skipped
        if side is None:
            return
        try:
            page = await self.repository.project_page(name)  # the one the client just got
        except Exception as exc:
            log.debug("warm-up: the page of %s could not be had: %s", name, exc)
            return
        await self._candidate(name, page, SpecifierSet(), side, environment, Budget(self.budget))

    async def _release(self, local_of: LocalOf, wheel: bool, user_agent: str | None) -> None:
        try:
            local = await local_of()
            if local is None:
                return
            data = await asyncio.to_thread(read_metadata, local.path, wheel)
        except Exception as exc:
            log.debug("warm-up: the metadata served could not be read: %s", exc)
            return
        if data is not None:
            await self._expand(data, client_environment(user_agent), Budget(self.budget))

    async def _expand(
        self, metadata: bytes, environment: ClientEnvironment | None, budget: Budget
    ) -> None:
        """Warm the dependencies `metadata` names for the client: each one's page (unless
        fresh), then the file it would pick from it (see _candidate)."""
        try:
            wanted = await asyncio.to_thread(dependencies, metadata, environment)
        except Exception as exc:
            log.debug("warm-up: the metadata could not be read: %s", exc)
            return
        for dependency in wanted:
            # its requirement picks its file: its page served later picks none without one
            self._ledger.first((dependency.name, ""))
            verdict = await self._may_warm(dependency.name)
            if verdict is None:
                continue
            side, fetch = verdict
            if fetch and not budget.take():
                break
            if fetch:
                self._ledger.warming.add(dependency.name)
            if not self._spawn(self._dependency(dependency, side, environment, budget, fetch)):
                self._ledger.warming.discard(dependency.name)
                break

    async def _allowed(self, name: NormalizedName, *, count: bool = True) -> Side | None:
        """The upstream to warm `name` from, or None when it must not be."""
        side = self.side_for(name)
        if side is None or side.offline:
            return None
        reason = "private" if not await self.goes_upstream(name) else (
            "policy" if side.refuses(name) else None)
        if reason is not None and count:
            metrics.WARMUP_SKIPPED.labels(reason).inc()
        return None if reason is not None else side

    async def _may_warm(self, name: NormalizedName) -> tuple[Side, bool] | None:
        """The upstream to warm `name` from and whether its page must be fetched (it is not
        fresh), or None when it must not be warmed, or another warm-up has it."""
        if name in self._ledger.warming or name in self._ledger.warmed:
            return None
        side = await self._allowed(name)
        return None if side is None else (side, not side.fresh(name))

    async def _dependency(
        self, dependency: Dependency, side: Side, environment: ClientEnvironment | None,
        budget: Budget, fetch: bool,
    ) -> None:
        name = dependency.name
        try:
            if fetch:
                async with self._slots:
                    metrics.WARMUP_STARTED.labels("page").inc()
                    page = await self.repository.project_page(name)
                if name not in self._ledger.joined:
                    self._ledger.remember(name, "page", side.page_ttl)
            else:
                page = await self.repository.project_page(name)  # fresh in memory
        except Exception as exc:
            if fetch:
                metrics.WARMUP_FAILED.labels("page").inc()
            log.debug("warm-up of the page of %s failed: %s", name, exc)
            return
        finally:
            if fetch:
                self._ledger.warming.discard(name)
                self._ledger.joined.discard(name)
        if self.metadata and environment is not None:
            await self._candidate(name, page, dependency.specifier, side, environment, budget)

    async def _candidate(
        self, name: NormalizedName, page: ProjectPage, specifier: SpecifierSet, side: Side,
        environment: ClientEnvironment, budget: Budget,
    ) -> None:
        """Warm the `.metadata` of the file the client would pick from `page` under
        `specifier`, then (once per TTL) the dependencies it names."""
        if len(page.files) > _INLINE_FILES:  # thousands of files: not on the event loop
            dist = await asyncio.to_thread(best_candidate, page, specifier, environment)
        else:
            dist = best_candidate(page, specifier, environment)
        if dist is None:
            return
        key = (name, dist.filename)
        if key in self._ledger.warming or key in self._ledger.warmed or not budget.take():
            return
        self._ledger.warming.add(key)
        limit = WHOLE_WHEEL_LIMIT.set(self.max_file_size)
        try:
            async with self._slots:
                source = await self.repository.open_metadata(name, dist.filename)
                if isinstance(source, StreamedFile):
                    metrics.WARMUP_STARTED.labels("metadata").inc()
                data = await collect_metadata(source)
            if isinstance(source, StreamedFile) and key not in self._ledger.joined:
                self._ledger.remember(key, "metadata", side.page_ttl)
        except TooBigToWarm:
            metrics.WARMUP_SKIPPED.labels("size").inc()
            return
        except Forbidden:
            metrics.WARMUP_SKIPPED.labels("policy").inc()
            return
        except Exception as exc:
            metrics.WARMUP_FAILED.labels("metadata").inc()
            log.debug("warm-up of %s.metadata failed: %s", dist.filename, exc)
            return
        finally:
            WHOLE_WHEEL_LIMIT.reset(limit)
            self._ledger.warming.discard(key)
            self._ledger.joined.discard(key)
        if data is not None and self._ledger.first(key):
            await self._expand(data, environment, budget)
