"""The per-request HTTP metrics (pyproxy_http_requests and its duration histogram), which the
access log records for every answered request."""

from __future__ import annotations

from typing import Any

from pyproxy.metrics import HTTP_DURATION, HTTP_REQUESTS

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# the labelled series by (route, method, status): finding one costs more than using it
_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def request_done(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request; `route` must be a route template (or another closed set)."""
    method = method if method in _METHODS else "other"  # clients may send any method name
    key = (route, method, status)
    series = _request_series.get(key)
    if series is None:
        series = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_DURATION.labels(route, method),
        )
        _request_series[key] = series
    series[0].inc()
    series[1].observe(seconds)

