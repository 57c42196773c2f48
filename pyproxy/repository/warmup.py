"""Warm-up ahead of the client: when an upstream `.metadata` (or wheel) is served, fetch the
pages of the release's dependencies in the background, and optionally the `.metadata` of the
file the client will pick from each, so that they are cached by the time it asks.

Everything goes through the repository the web layer serves (PrivateWins over [policy] over the
routed upstreams), so the overlay, the routes and the policy apply as to a client's request. On
top of that a name is skipped before anything is asked when it is private (or under a private
prefix), when the upstream serving it is offline, when [policy] allow_only leaves it out or a
deny entry names the whole project, and when its page is fresh in this worker's memory or
already being warmed. Per worker: at most `concurrency` upstream requests at once, at most
`budget` per served file, at most _MAX_TASKS waiting; past that, warm-ups are skipped. It never
delays the request that triggered it (tasks kept in a set, cancelled on close); a failure is
logged at debug and counted.

`used` and `wasted` are counted per worker: a warmed page a client asks this worker for within
the page's TTL (or while it is being fetched: the client's request joins the earlier one) is
used; one not asked for by then (or pushed out of the record) is wasted. With
several workers a client's next request may reach another worker, which finds the page on disk
(no upstream request either) but counts nothing, so `wasted` overcounts there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from pyproxy import metrics
from pyproxy.formats.dependencies import (
    MAX_METADATA,
    Dependency,
    best_candidate,
    dependencies,
    wheel_metadata,
)
from pyproxy.formats.linehaul import ClientEnvironment, client_environment
from pyproxy.model import LocalFile, NormalizedName, Repository, StreamedFile
from pyproxy.repository.warmup_side import Budget, Side

__all__ = ["Side", "WarmUp"]

log = logging.getLogger("pyproxy.warmup")

_MAX_TASKS = 256  # warm-ups waiting or running in a worker
_REMEMBERED = 4096  # warmed pages and files not yet asked for, and files that triggered
LocalOf = Callable[[], Awaitable[LocalFile | None]]


def _read(path: Path, wheel: bool, environment: ClientEnvironment | None) -> list[Dependency]:
    """In a thread: the dependencies the served file's metadata names for the client."""
    if wheel:
        data = wheel_metadata(str(path))
    else:
        with open(path, "rb") as body:
            data = body.read(MAX_METADATA + 1)
    if data is None or len(data) > MAX_METADATA:
        return []
    return dependencies(data, environment)


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
    ) -> None:
        self.repository = repository
        self.side_for = side_for
        self.goes_upstream = goes_upstream
        self.budget = budget
        self.metadata = metadata
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # being warmed: page names and (project, filename) of .metadata
        self._warming: set[object] = set()
        self._joined: set[object] = set()  # asked for by a client while being warmed
        # warmed and not yet asked for: name or (project, filename) -> (kind, until when)
        self._warmed: OrderedDict[object, tuple[str, float]] = OrderedDict()
        # served files that triggered a warm-up: (project, filename) -> until when not again
        self._triggered: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ---- what the web layer tells it ----

    def served(
        self, project: NormalizedName, filename: str, local_of: LocalOf, *, wheel: bool,
        user_agent: str | None,
    ) -> None:
        """An upstream `.metadata` of `filename` (or, `wheel`, the wheel itself) was served:
        warm its dependencies, at most once per page TTL for the same file."""
        now = time.time()
        self._sweep(now)
        key = (project, filename)
        if self._triggered.get(key, 0.0) > now:
            return
        side = self.side_for(project)
        self._triggered[key] = now + (side.page_ttl if side is not None else 600.0)
        self._triggered.move_to_end(key)
        while len(self._triggered) > _REMEMBERED:
            self._triggered.popitem(last=False)
        self._spawn(self._release(local_of, wheel, user_agent))

    def page_requested(self, name: NormalizedName) -> None:
        self._claim(name, "page")

    def metadata_requested(self, project: NormalizedName, filename: str) -> None:
        self._claim((project, filename), "metadata")

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

    def _claim(self, key: object, kind: str) -> None:
        if key in self._warming:  # it joins the warm-up's request, which started earlier
            if key not in self._joined:
                self._joined.add(key)
                metrics.WARMUP_USED.labels(kind).inc()
            return
        entry = self._warmed.pop(key, None)
        if entry is not None:
            kind, until = entry
            (metrics.WARMUP_USED if time.time() < until else metrics.WARMUP_WASTED).labels(
                kind
            ).inc()

    def _remember(self, key: object, kind: str, ttl: float) -> None:
        self._warmed[key] = (kind, time.time() + ttl)
        self._warmed.move_to_end(key)
        while len(self._warmed) > _REMEMBERED:
            metrics.WARMUP_WASTED.labels(self._warmed.popitem(last=False)[1][0]).inc()

    def _sweep(self, now: float) -> None:
        while self._warmed:
            key, (kind, until) = next(iter(self._warmed.items()))
            if until > now:
                break
            del self._warmed[key]
            metrics.WARMUP_WASTED.labels(kind).inc()

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

    async def _release(self, local_of: LocalOf, wheel: bool, user_agent: str | None) -> None:
        environment = client_environment(user_agent)
        try:
            local = await local_of()
            if local is None:
                return
            wanted = await asyncio.to_thread(_read, local.path, wheel, environment)
        except Exception as exc:
            log.debug("warm-up: the metadata served could not be read: %s", exc)
            return
        budget = Budget(self.budget)
        for dependency in wanted:
            side = await self._may_warm(dependency.name)
            if side is None:
                continue
            if not budget.take():
                break
            self._warming.add(dependency.name)
            if not self._spawn(self._dependency(dependency, side, environment, budget)):
                self._warming.discard(dependency.name)
                break

    async def _may_warm(self, name: NormalizedName) -> Side | None:
        """The upstream to warm `name`'s page from, or None when it must not be, or need not."""
        if name in self._warming or name in self._warmed:
            return None
        side = self.side_for(name)
        if side is None or side.offline:
            return None
        if not await self.goes_upstream(name):
            metrics.WARMUP_SKIPPED.labels("private").inc()
            return None
        if side.refuses(name):
            metrics.WARMUP_SKIPPED.labels("policy").inc()
            return None
        return None if side.fresh(name) else side

    async def _dependency(
        self, dependency: Dependency, side: Side, environment: ClientEnvironment | None,
        budget: Budget,
    ) -> None:
        name = dependency.name
        try:
            async with self._slots:
                metrics.WARMUP_STARTED.labels("page").inc()
                page = await self.repository.project_page(name)
            if name not in self._joined:
                self._remember(name, "page", side.page_ttl)
        except Exception as exc:
            metrics.WARMUP_FAILED.labels("page").inc()
            log.debug("warm-up of the page of %s failed: %s", name, exc)
            return
        finally:
            self._warming.discard(name)
            self._joined.discard(name)
        if not self.metadata or environment is None:
            return
        dist = best_candidate(page, dependency.specifier, environment)
        if dist is None or (name, dist.filename) in self._warmed or not budget.take():
            return
        key = (name, dist.filename)
        self._warming.add(key)
        try:
            async with self._slots:
                source = await self.repository.open_metadata(name, dist.filename)
                if isinstance(source, StreamedFile):
                    metrics.WARMUP_STARTED.labels("metadata").inc()
                    async for _chunk in source.chunks:  # to its verified end
                        pass
                    if key not in self._joined:
                        self._remember(key, "metadata", side.page_ttl)
        except Exception as exc:
            metrics.WARMUP_FAILED.labels("metadata").inc()
            log.debug("warm-up of %s.metadata failed: %s", dist.filename, exc)
        finally:
            self._warming.discard(key)
            self._joined.discard(key)
