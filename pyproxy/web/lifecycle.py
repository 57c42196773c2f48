"""Requests in flight, for a graceful shutdown that lets uploads finish; and how many of the
configured workers serve, for /ready.

aiohttp's own graceful shutdown (AppRunner.cleanup) marks every connection as closing first, and
a closing connection drops the bytes that still arrive: an upload whose body is still coming in
would stall until the grace period is over and then be cut off. So the server first stops
listening and waits, through this module, until no handler is running (an upload handler runs
until it has read the whole body), and only then lets aiohttp close the connections and wait for
the responses still being sent (files go out after their handler has returned).
"""

from __future__ import annotations

import asyncio
import mmap

from aiohttp import hdrs, web


class InFlight:
    """How many handlers are running; `stopping` makes every later response close its
    connection, so keep-alive clients reconnect (to another instance) instead."""

    def __init__(self) -> None:
        self.running = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.running += 1
        self._idle.clear()

    def end(self) -> None:
        self.running -= 1
        if self.running == 0:
            self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Stop: wait up to `timeout` seconds until no handler runs; False if some still do."""
        self.stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


IN_FLIGHT = web.AppKey("in_flight", InFlight)


class WorkerCapacity:
    """Which of `--workers N` serve now: one byte per worker, set by the worker once it listens
    and cleared by the supervisor when it reaps it (a killed worker cannot clear its own).
    An anonymous shared mapping, made before the workers are forked and inherited by them: no
    file to name, lock or clean up, and two servers on one data directory cannot mix theirs."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._serving = mmap.mmap(-1, workers)  # MAP_SHARED | MAP_ANONYMOUS

    def mark(self, worker: int, serving: bool) -> None:
        self._serving[worker] = 1 if serving else 0

    @property
    def serving(self) -> int:
        return sum(self._serving[:])

    def problem(self) -> str | None:
        """None at full capacity, else what /ready says: "1 of 2 workers serving"."""
        serving = self.serving
        return None if serving >= self.workers else f"{serving} of {self.workers} workers serving"


CAPACITY = web.AppKey("worker_capacity", WorkerCapacity)  # only with more than one worker


def close_when_stopping(request: web.Request, response: web.StreamResponse) -> None:
    """Before any response goes out (app.py's one response hook)."""
    if request.app[IN_FLIGHT].stopping:
        response.force_close()  # the connection ends after this response
        # aiohttp has already chosen the Connection header when this hook runs
        response.headers[hdrs.CONNECTION] = "close"


def install(app: web.Application) -> InFlight:
    """The app's count of requests in flight (kept by middleware.errors, the outermost
    middleware); app.py calls close_when_stopping on every response, which answers
    `Connection: close` once stopping."""
    in_flight = app[IN_FLIGHT] = InFlight()
    return in_flight
