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
    """A map of at most `capacity` entries, or, given `weigh`, of entries whose weights add up
    to at most `capacity` (e.g. bytes). Reading or writing an entry makes it the most recently
    used; when one too many is written, the least recently used go. An entry heavier than the
    whole capacity is not kept at all (rather than pushing out everything else)."""

    def __init__(self, capacity: int, weigh: Callable[[V], int] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._weigh = weigh
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}
        self.weight = 0  # of the entries held: their number, or the sum of their weights

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        weight = 1 if self._weigh is None else max(1, self._weigh(value))
        if weight > self.capacity:
            return
        self._entries[key] = value
        self._weights[key] = weight
        self.weight += weight
        while self.weight > self.capacity:
            oldest, _ = self._entries.popitem(last=False)
            self.weight -= self._weights.pop(oldest)

    def pop(self, key: K) -> V | None:
        value = self._entries.pop(key, None)
        if key in self._weights:
            self.weight -= self._weights.pop(key)
        return value


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
