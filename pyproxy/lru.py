"""In-process memory of results: a bounded least-recently-used map for finished ones, and
single flight for ones in progress. A leaf: it imports nothing of pyproxy.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

__all__ = ["BoundedLRU", "SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """A map of at most `capacity` entries, and, given `weigh`, of at most `max_weight` in all
    (e.g. bytes). Reading or writing an entry makes it the most recently used; when a write
    goes past a bound, the least recently used go until it holds. An entry heavier than
    `max_weight` on its own is not kept (it would push out everything and still not fit)."""

    def __init__(
        self,
        capacity: int,
        *,
        weigh: Callable[[V], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if (weigh is None) != (max_weight is None):
            raise ValueError("weigh and max_weight go together")
        self.capacity = capacity
        self.max_weight = max_weight
        self._weigh = weigh
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}  # only with `weigh`
        self.weight = 0  # sum of the entries' weights

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        if self._weigh is not None and self.max_weight is not None:
            weight = self._weigh(value)
            if weight > self.max_weight:
                return
            self._weights[key] = weight
            self.weight += weight
        self._entries[key] = value
        while len(self._entries) > self.capacity or (
            self.max_weight is not None and self.weight > self.max_weight
        ):
            self._forget(next(iter(self._entries)))

    def pop(self, key: K) -> V | None:
        if key not in self._entries:
            return None
        return self._forget(key)

    def clear(self) -> None:
        self._entries.clear()
        self._weights.clear()
        self.weight = 0

    def _forget(self, key: K) -> V:
        self.weight -= self._weights.pop(key, 0)
        return self._entries.pop(key)


class SingleFlight(Generic[K, V]):
    """At most one run per key at a time: a caller asking for a key in flight waits for that
    run's result (or exception) instead of starting another.

    The run is a task of its own: a waiter that is cancelled does not cancel it (the others
    still get their answer), and its exception is retrieved even if every waiter went away,
    so asyncio never logs it as unretrieved. Once it has finished, the next caller starts a new one:
    remembering results is the caller's business (e.g. a BoundedLRU)."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    async def run(self, key: K, start: Callable[[], Awaitable[V]]) -> V:
        """The result of `start()`, or of the run already in flight for `key`."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(start())
            self._flights[key] = flight
            flight.add_done_callback(partial(self._landed, key))
        return await asyncio.shield(flight)

    def _landed(self, key: K, flight: asyncio.Future[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved, should no waiter be left to (shield does it too)
