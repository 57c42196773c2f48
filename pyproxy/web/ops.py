"""For operators: /health (liveness), /ready (readiness) and /metrics (Prometheus).

None of them needs credentials or sends caching headers. /ready answers 200 only when the data
directory takes a new file, its disk has `[server] min_free_space` free and, unless pyproxy is
offline or serves private packages only, upstream answered recently: a request to it succeeded
within READY_WINDOW_S with no failure since, or else a HEAD of the upstream index (with the
configured timeout) succeeds; a probe's outcome is reused for PROBE_TTL_S, and concurrent /ready
requests share one probe.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from pathlib import Path

from aiohttp import hdrs, web

from pyproxy import metrics
from pyproxy.health import Health
from pyproxy.lru import SingleFlight
from pyproxy.stores.space import free_bytes
from pyproxy.units import human_size
from pyproxy.web.context import SERVICES
from pyproxy.web.lifecycle import CAPACITY

READY_WINDOW_S = 60.0
PROBE_TTL_S = 5.0


class Readiness:
    """One per application: the last probe of upstream and the probe in flight."""

    def __init__(self) -> None:
        self._checked_at = -math.inf
        self._problem: str | None = None
        self._probing: SingleFlight[str, str | None] = SingleFlight()

    async def upstream_problem(self, health: Health) -> str | None:
        if health.upstream_answered_within(READY_WINDOW_S):
            return None
        if time.monotonic() - self._checked_at < PROBE_TTL_S:
            return self._problem
        return await self._probing.run("upstream", lambda: self._run_probe(health))

    async def _run_probe(self, health: Health) -> str | None:
        problem = await health.probe_upstream()
        self._checked_at, self._problem = time.monotonic(), problem
        return problem


READINESS = web.AppKey("readiness", Readiness)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


async def health(request: web.Request) -> web.Response:
    return _text(200, "ok")


def _data_dir_problem(data_dir: Path, min_free: int) -> str | None:
    """Creating (and removing) a file is what uploads and downloads need; os.access would
    not tell, e.g. for root or on a read-only mount. A full disk still takes an empty file."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ready-", dir=data_dir)
        os.close(fd)
        os.unlink(name)
        free = free_bytes(data_dir)
    except OSError as exc:
        return f"the data directory is not writable ({exc.strerror or exc})"
    if free < min_free:
        return (
            f"only {human_size(free)} free on the data directory's disk"
            f" (below [server] min_free_space, {human_size(min_free)})"
        )
    return None


async def ready(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    problem = await asyncio.to_thread(
        _data_dir_problem, settings.data_dir, settings.min_free_space
    )
    if problem is None and CAPACITY in request.app:  # only with --workers N: all N serving?
        problem = request.app[CAPACITY].problem()
    if problem is None and services.health.watches_upstream:
        problem = await request.app[READINESS].upstream_problem(services.health)
    if problem is not None:
        return _text(503, f"not ready: {problem}")
    return _text(200, "ready")


async def metrics_page(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body, content_type = await asyncio.to_thread(  # reads every worker's file: off the loop
        metrics.scrape, request.headers.get(hdrs.ACCEPT, ""), services.health.cache_gauges
    )
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
