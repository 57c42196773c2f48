"""What the warm-up (repository/warmup.py) is warming, has warmed and has been triggered by, in
one worker: what keeps it from doing the same work twice, and counts `used` and `wasted`."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from pyproxy import metrics
from pyproxy.model import NormalizedName
from pyproxy.repository.warmup_side import Side

__all__ = ["Ledger"]

_REMEMBERED = 4096  # warmed pages and files not yet asked for, and files that triggered


class Ledger:
    """Keys: a page's name, or (project, filename) of a `.metadata`; a trigger's key is the
    (project, filename) of the file served, or (project, "") for a page served."""

    def __init__(self, side_for: Callable[[NormalizedName], Side | None]) -> None:
        self.side_for = side_for
        self.warming: set[object] = set()
        self.joined: set[object] = set()  # asked for by a client while being warmed
        # warmed and not yet asked for: key -> (kind, until when)
        self.warmed: OrderedDict[object, tuple[str, float]] = OrderedDict()
        # what triggered a warm-up: key -> until when not again
        self.triggered: OrderedDict[tuple[str, str], float] = OrderedDict()


    def claim(self, key: object, kind: str) -> None:
        if key in self.warming:  # it joins the warm-up's request, which started earlier
            if key not in self.joined:
                self.joined.add(key)
                metrics.WARMUP_USED.labels(kind).inc()
            return
        entry = self.warmed.pop(key, None)
        if entry is not None:
            kind, until = entry
            (metrics.WARMUP_USED if time.time() < until else metrics.WARMUP_WASTED).labels(
                kind
            ).inc()

    def first(self, key: tuple[str, str]) -> bool:
        """Whether `key` (a release's file; a page: filename "") triggers now: once per TTL."""
        now = time.time()
        if self.triggered.get(key, 0.0) > now:
            return False
        side = self.side_for(NormalizedName(key[0]))
        self.triggered[key] = now + (side.page_ttl if side is not None else 600.0)
        self.triggered.move_to_end(key)
        while len(self.triggered) > _REMEMBERED:
            self.triggered.popitem(last=False)
        return True

    def remember(self, key: object, kind: str, ttl: float) -> None:
        self.warmed[key] = (kind, time.time() + ttl)
        self.warmed.move_to_end(key)
        while len(self.warmed) > _REMEMBERED:
            metrics.WARMUP_WASTED.labels(self.warmed.popitem(last=False)[1][0]).inc()

    def sweep(self, now: float) -> None:
        while self.warmed:
            key, (kind, until) = next(iter(self.warmed.items()))
            if until > now:
                break
            del self.warmed[key]
            metrics.WARMUP_WASTED.labels(kind).inc()
