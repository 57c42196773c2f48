"""pyproxy.web.request_metrics: requests recorded once per loop iteration, values exact."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram

from pyproxy import metrics
from pyproxy.web import request_metrics

BOUNDS = (0.005, 0.01, 0.1, 1.0)


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in histogram.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_observe_all_is_observe_for_each() -> None:
    registry = CollectorRegistry()
    one_by_one = Histogram("one", "x", buckets=BOUNDS, registry=registry)
    together = Histogram("together", "x", buckets=BOUNDS, registry=registry)
    values = [0.0, 0.005, 0.0051, 0.01, 0.5, 1.0, 7.0, 0.002, 0.2]
    for value in values:
        one_by_one.observe(value)
    request_metrics.observe_all(together, values)
    request_metrics.observe_all(together, [0.3])  # one value: observe itself
    one_by_one.observe(0.3)
    expected = {(name.replace("one", "together", 1), le): v
                for (name, le), v in _samples(one_by_one).items()}
    assert _samples(together) == pytest.approx(expected)  # the sum is added in another order


def _count(route: str, status: str) -> float:
    value = metrics.HTTP_REQUESTS.real().labels(route, "GET", status)._value.get()
    return float(value)


async def test_requests_of_one_iteration_are_recorded_right_after_it() -> None:
    route = "/test/{request_metrics}"
    before = _count(route, "200"), _count(route, "404")
    for _ in range(3):
        request_metrics.request_done(route, "GET", 200, 0.001)
    request_metrics.request_done(route, "GET", 404, 0.002)
    assert (_count(route, "200"), _count(route, "404")) == before
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (_count(route, "200"), _count(route, "404")) == (before[0] + 3, before[1] + 1)
    request_metrics.request_done(route, "BREW", 200, 0.001)  # any other method: "other"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    other = metrics.HTTP_REQUESTS.real().labels(route, "other", "200")._value.get()
    assert other == 1


async def test_counts_are_added_after_the_iteration() -> None:
    series = metrics.SERVED_BYTES.labels("cache")
    before = series._value.get()
    request_metrics.count(series, 100)
    request_metrics.count(series, 23)
    assert series._value.get() == before
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert series._value.get() == before + 123
