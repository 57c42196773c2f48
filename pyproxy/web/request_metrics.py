"""The per-request HTTP metrics (pyproxy_http_requests and its duration histogram), which the
access log records for every answered request.

Recorded once per event loop iteration (pyproxy.soon): with multiprocess metrics every
increment is a locked write into a shared file, so the requests of one iteration for the same
series cost one increment of the counter and one per histogram bucket they fall in, not three
writes each."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from pyproxy.metrics import HTTP_DURATION, HTTP_REQUESTS
from pyproxy.soon import Soon

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# the labelled series by (route, method, status): finding one costs more than using it
_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_pending: list[tuple[str, str, int, float]] = []
_counts: dict[Any, float] = {}  # counter series -> what to add


def request_done(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request; `route` must be a route template (or another closed set)."""
    _pending.append((route, method, status, seconds))
    _SOON.due()


def count(series: Any, amount: float = 1) -> None:
    """`series.inc(amount)` (a counter's labelled series), recorded with the requests of this
    iteration: for the counts every request of a kind makes (cache hits, bytes served)."""
    _counts[series] = _counts.get(series, 0) + amount
    _SOON.due()


def _record() -> None:
    if _counts:
        counted = list(_counts.items())
        _counts.clear()
        for series, amount in counted:
            series.inc(amount)
    if not _pending:
        return
    done = _pending[:]
    _pending.clear()
    grouped: dict[tuple[str, str, int], list[float]] = {}
    for route, method, status, seconds in done:
        method = method if method in _METHODS else "other"  # clients may send any method name
        grouped.setdefault((route, method, status), []).append(seconds)
    for key, durations in grouped.items():
        series = _request_series.get(key)
        if series is None:
            route, method, status = key
            series = (
                HTTP_REQUESTS.labels(route, method, str(status)),
                HTTP_DURATION.labels(route, method),
            )
            _request_series[key] = series
        series[0].inc(len(durations))
        observe_all(series[1], durations)


def observe_all(histogram: Any, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for each of `values`, with one write per bucket they fall in
    (prometheus-client's Histogram has no such call: its bucket bounds and values are used)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) == 1:
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value (the last is +Inf)
    total.inc(sum(values))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


_SOON = Soon(_record)
