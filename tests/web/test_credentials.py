"""pyproxy/web/credentials.py on its own: the per-address failure limit, on a clock the test
moves; the pool's refusals once it is closed. The pool and the remembered answers are tested
through HTTP in test_readauth.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pyproxy.web.credentials import FailureLimit, PasswordPool, Refused


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(limit: FailureLimit, address: str) -> Refused | None:
    try:
        limit.check(address)
    except Refused as refused:
        return refused
    return None


def test_an_address_is_refused_for_the_rest_of_its_minute() -> None:
    clock = Clock()
    limit = FailureLimit(3, clock=clock)
    for _ in range(3):
        assert refusal(limit, "192.0.2.1") is None
        limit.failed("192.0.2.1")
        clock.now += 10
    refused = refusal(limit, "192.0.2.1")
    assert refused is not None and refused.status == 429 and refused.retry_after == 30
    assert "3 wrong passwords from this address" in refused.message
    assert refusal(limit, "192.0.2.2") is None  # others are not affected
    clock.now += 29.5
    assert refusal(limit, "192.0.2.1").retry_after == 1  # type: ignore[union-attr]
    clock.now += 0.5
    assert refusal(limit, "192.0.2.1") is None
    limit.failed("192.0.2.1")  # a new minute starts with this failure
    assert refusal(limit, "192.0.2.1") is None


def test_failures_older_than_a_minute_do_not_count() -> None:
    clock = Clock()
    limit = FailureLimit(2, clock=clock)
    limit.failed("192.0.2.1")
    clock.now += 61
    limit.failed("192.0.2.1")
    assert refusal(limit, "192.0.2.1") is None
    limit.failed("192.0.2.1")
    assert refusal(limit, "192.0.2.1") is not None


def test_zero_means_no_limit() -> None:
    limit = FailureLimit(0)
    for _ in range(1000):
        limit.failed("192.0.2.1")
    assert refusal(limit, "192.0.2.1") is None


def test_only_so_many_addresses_are_followed() -> None:
    limit = FailureLimit(1, capacity=2, clock=Clock())
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        limit.failed(address)
    assert refusal(limit, "192.0.2.1") is None  # the least recently failing, forgotten
    assert refusal(limit, "192.0.2.2") is not None and refusal(limit, "192.0.2.3") is not None


@pytest.mark.parametrize("per_minute", [1, 5])
def test_the_limit_is_exact(per_minute: int) -> None:
    limit = FailureLimit(per_minute, clock=Clock())
    for _ in range(per_minute - 1):
        limit.failed("192.0.2.1")
    assert refusal(limit, "192.0.2.1") is None
    limit.failed("192.0.2.1")
    assert refusal(limit, "192.0.2.1") is not None


async def test_a_check_after_the_pool_closed_is_refused_with_503() -> None:
    pool = PasswordPool(1, 4)
    pool.close()
    with pytest.raises(Refused) as refused:
        await pool.check("secret", None)
    assert refused.value.status == 503 and "stopping" in refused.value.message


async def test_a_check_still_queued_when_the_pool_closes_is_refused_with_503() -> None:
    pool = PasswordPool(1, 4)
    started, release = threading.Event(), threading.Event()

    def occupy() -> None:
        started.set()
        release.wait(10)

    pool._executor.submit(occupy)  # the one thread is busy: the next check waits in the queue
    assert started.wait(10)
    queued = asyncio.create_task(pool.check("secret", None))
    await asyncio.sleep(0)
    pool.close()
    release.set()
    with pytest.raises(Refused) as refused:
        await queued
    assert refused.value.status == 503
