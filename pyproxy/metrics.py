"""Every Prometheus metric pyproxy records, defined once; a leaf module any layer may import.

prometheus-client decides when it is first imported whether values live in per-process files
(multiprocess mode, from PROMETHEUS_MULTIPROC_DIR, which `pyproxy serve` sets up: see
pyproxy/multiproc.py) or in memory. Modules import this one at start-up, before `serve` has read
its configuration, so the metrics below are declarations that create their prometheus-client
objects (all together) on first use, and only this module imports prometheus_client.
Gauges of state that all workers share (the cache size) are not stored: `scrape` computes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# label values are closed sets (route templates, never raw paths), so series stay bounded
CACHE_RESULTS = ("hit", "miss", "coalesced")
SERVED_SOURCES = ("cache", "upstream")
UPSTREAM_KINDS = ("page", "file", "range", "probe")
REFUSED_PAGE_REASONS = ("malformed", "not_a_page", "emptied")
CUT_SHORT_CAUSES = ("client", "aborted")
UPLOAD_REJECTIONS = (
    "unauthenticated", "forbidden", "too_large", "malformed", "invalid_metadata", "invalid_file",
    "duplicate", "upstream_unavailable", "no_space", "throttled", "other",
)
# the [policy] rules that hold upstream files back (pyproxy.policy.Reason's values)
POLICY_REASONS = ("allow_only", "deny", "not_after", "min_age", "missing_upload_time")
WARMUP_KINDS = ("page", "metadata", "file")
WARMUP_SKIPS = ("budget", "busy", "private", "policy", "size")
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_declared: list[_Metric] = []
_registry: Any = None  # the prometheus_client CollectorRegistry, once created
_lock = threading.Lock()  # the first use may come from a worker thread (eviction) too


class _Metric:
    """A counter or histogram whose prometheus-client object is made on first use."""

    __slots__ = ("_children", "_real", "histogram", "known", "labelnames", "name", "text")

    def __init__(
        self, name: str, text: str, labelnames: tuple[str, ...] = (), *,
        histogram: bool = False, known: Iterable[str] = (),
    ) -> None:
        self.name, self.text, self.labelnames = name, text, labelnames
        self.histogram = histogram
        self.known = tuple(known)  # values of the only label, shown (at 0) from the start
        self._real: Any = None
        # the labelled series by label values (closed sets): finding one costs more than using it
        self._children: dict[tuple[str, ...], Any] = {}
        _declared.append(self)

    def real(self) -> Any:
        if self._real is None:
            _create_all()
        return self._real

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.real().labels(*values)
        return child

    def inc(self, amount: float = 1) -> None:
        self.real().inc(amount)

    def observe(self, value: float) -> None:
        self.real().observe(value)


def _create_all() -> None:
    global _registry
    with _lock:
        if _registry is not None:
            return
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Histogram,
            disable_created_metrics,
        )

        # `_created` series double the output and multiprocess mode has none: one shape for both
        disable_created_metrics()
        registry = CollectorRegistry()
        for metric in _declared:
            real: Histogram | Counter
            if metric.histogram:
                real = Histogram(
                    metric.name, metric.text, metric.labelnames, buckets=_SECONDS, registry=registry
                )
            else:
                real = Counter(metric.name, metric.text, metric.labelnames, registry=registry)
            for value in metric.known:
                real.labels(value)
            metric._real = real
        _registry = registry


HTTP_REQUESTS = _Metric(
    "pyproxy_http_requests", "HTTP requests answered, by route template, method and status.",
    ("route", "method", "status"),
)
HTTP_DURATION = _Metric(
    "pyproxy_http_request_duration_seconds",
    "From a request's arrival until its response was sent, by route template.",
    ("route", "method"), histogram=True,
)
CUT_SHORT = _Metric(
    "pyproxy_http_responses_cut_short",
    "Responses whose body did not go out whole: the client went away (client), or pyproxy"
    " aborted the connection because the body failed, upstream or on disk (aborted).",
    ("cause",), known=CUT_SHORT_CAUSES,
)
CACHE_REQUESTS = _Metric(
    "pyproxy_cache_requests",
    "Requests for upstream files and .metadata: hit (on disk), miss (started the download),"
    " coalesced (joined a download already in progress, in any worker).",
    ("result",), known=CACHE_RESULTS,
)
SERVED_BYTES = _Metric(
    "pyproxy_served_bytes",
    "Body bytes of upstream files sent to clients: from the cache, or as they arrived from"
    " upstream.",
    ("source",), known=SERVED_SOURCES,
)
CACHE_EVICTIONS = _Metric(
    "pyproxy_cache_evictions", "Files evicted to keep the cache within its size bound."
)
CACHE_EVICTED_BYTES = _Metric(
    "pyproxy_cache_evicted_bytes", "Bytes of the files evicted from the cache."
)
UPSTREAM_REQUESTS = _Metric(
    "pyproxy_upstream_requests",
    "Requests to upstream: pages (project pages, the index), files, readiness probes.",
    ("kind",), known=UPSTREAM_KINDS,
)
UPSTREAM_ERRORS = _Metric(
    "pyproxy_upstream_errors",
    "Upstream requests without a usable answer (timeout, refused, 5xx, unexpected status).",
    ("kind",), known=UPSTREAM_KINDS,
)
UPSTREAM_DURATION = _Metric(
    "pyproxy_upstream_request_duration_seconds",
    "Upstream latency: a whole page, or until a file's response headers.",
    ("kind",), histogram=True,
)
STALE_PAGES = _Metric(
    "pyproxy_stale_pages_served",
    "Failed revalidations of a cached page that were answered with the stale copy.",
)
REFUSED_PAGES = _Metric(
    "pyproxy_upstream_pages_refused",
    "Upstream answers of 200 that were not the page asked for, so the cached copy (if any) was"
    " kept: malformed, not_a_page (HTML with nothing of a simple page: a maintenance, login or"
    " block page), emptied (suddenly no files or projects where the copy had some).",
    ("reason",), known=REFUSED_PAGE_REASONS,
)
UPLOADS_ACCEPTED = _Metric(
    "pyproxy_uploads_accepted", "Uploads answered 200 (stored, or an identical re-upload)."
)
UPLOADS_REJECTED = _Metric(
    "pyproxy_uploads_rejected", "Uploads refused, by reason.", ("reason",), known=UPLOAD_REJECTIONS
)

POLICY_HIDDEN = _Metric(
    "pyproxy_policy_hidden_files",
    "Upstream files left off the project pages served, by the [policy] rule that holds them"
    " back (a page served counts each file it hides).",
    ("reason",), known=POLICY_REASONS,
)
POLICY_REFUSED = _Metric(
    "pyproxy_policy_refused_requests",
    "Requests for an upstream file or .metadata answered 403, or for a project answered 404,"
    " by the [policy] rule that refused them.",
    ("reason",), known=POLICY_REASONS,
)

WARMUP_STARTED = _Metric(
    "pyproxy_warmup_started",
    "Upstream fetches started ahead of the client for the dependencies of a served .metadata or"
    " wheel: project pages, and the .metadata of the file the client will likely pick; and"
    " files pip resolved, downloaded ahead of it (kind file).",
    ("kind",), known=WARMUP_KINDS,
)
WARMUP_USED = _Metric(
    "pyproxy_warmup_used",
    "Warmed pages, .metadata and files that a client then asked the same worker for within the"
    " page TTL.", ("kind",), known=WARMUP_KINDS,
)
WARMUP_WASTED = _Metric(
    "pyproxy_warmup_wasted",
    "Warmed pages, .metadata and files no client asked the same worker for within the page TTL"
    " (with several workers, some were asked of another worker).",
    ("kind",), known=WARMUP_KINDS,
)
WARMUP_FAILED = _Metric(
    "pyproxy_warmup_failed", "Warm-up fetches that failed (logged at debug).",
    ("kind",), known=WARMUP_KINDS,
)
WARMUP_SKIPPED = _Metric(
    "pyproxy_warmup_skipped",
    "Dependencies not warmed: past the per-file budget, too many warm-ups waiting (busy), a"
    " private name, one [policy] never serves or holds back now, or a file over"
    " warm_up_max_file_size (size).",
    ("reason",), known=WARMUP_SKIPS,
)


def multiprocess() -> bool:
    """Whether values live in per-process files (decided when prometheus_client was imported)."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


def worker_exited(pid: int) -> None:
    """Multiprocess bookkeeping for a worker that ended (its counters keep counting)."""
    if multiprocess():
        from prometheus_client import multiprocess as prometheus_multiprocess

        prometheus_multiprocess.mark_process_dead(pid)


@contextmanager
def upstream_request(kind: str) -> Iterator[None]:
    """Counts and times one upstream request; an exception out of the block counts as an error
    (cancellation does not: that is the client going away, not upstream failing)."""
    UPSTREAM_REQUESTS.labels(kind).inc()
    started = time.monotonic()
    try:
        yield
    except Exception:
        UPSTREAM_ERRORS.labels(kind).inc()
        raise
    finally:
        UPSTREAM_DURATION.labels(kind).observe(time.monotonic() - started)


Gauges = Callable[[], Iterable[tuple[str, str, float]]]


def scrape(accept: str, gauges: Gauges) -> tuple[bytes, str]:
    """The exposition (body, content type) the Accept header asks for: every worker's values
    in multiprocess mode, this process's otherwise, plus `gauges()` as (name, help, value)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.metrics_core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector

    _create_all()
    encode, content_type = choose_encoder(accept)
    registry = CollectorRegistry()
    if multiprocess():
        MultiProcessCollector(registry)  # the files of all workers, exited ones included
    else:
        registry.register(_Collector(_registry.collect))

    def collect_gauges() -> Iterator[Any]:
        for name, text, value in gauges():
            yield GaugeMetricFamily(name, text, value=value)

    registry.register(_Collector(collect_gauges))
    return encode(registry), content_type


class _Collector:
    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self.collect = collect


def counter_values(directory: Path, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """A counter's values, summed over the workers, read from a server's value directory
    (for `pyproxy cache stats`, which runs beside the server): labels -> value."""
    from prometheus_client import multiprocess

    values: dict[tuple[tuple[str, str], ...], float] = {}
    for family in multiprocess.MultiProcessCollector(None, path=str(directory)).collect():
        for sample in family.samples:
            if sample.name == f"{name}_total":
                labels = tuple(sorted(sample.labels.items()))
                values[labels] = values.get(labels, 0.0) + sample.value
    return values
