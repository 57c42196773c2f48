"""In-process memory of results (pyproxy/lru.py): the bounded LRU and single flight."""

from __future__ import annotations

import asyncio
import gc

import pytest

from pyproxy.lru import BoundedLRU, SingleFlight

# ---------------------------------------------------------------------------- BoundedLRU


@pytest.mark.parametrize(
    ("capacity", "steps", "kept"),
    [
        (2, ["put a", "put b", "put c"], ["b", "c"]),
        (2, ["put a", "put b", "get a", "put c"], ["a", "c"]),  # a read is a use
        (2, ["put a", "put b", "put a", "put c"], ["a", "c"]),  # so is a rewrite
        (2, ["put a", "put b", "get x", "put c"], ["b", "c"]),  # a miss changes nothing
        (1, ["put a", "put b"], ["b"]),
        (3, ["put a", "put b", "pop a", "put c", "put d"], ["b", "c", "d"]),
    ],
)
def test_bounded_lru_keeps_the_most_recently_used(
    capacity: int, steps: list[str], kept: list[str]
) -> None:
    lru: BoundedLRU[str, str] = BoundedLRU(capacity)
    for step in steps:
        action, key = step.split()
        if action == "put":
            lru.put(key, key.upper())
        elif action == "get":
            lru.get(key)
        else:
            assert lru.pop(key) == key.upper()
    assert len(lru) == len(kept) <= capacity
    assert [key for key in "abcdx" if lru.get(key) is not None] == kept


def test_bounded_lru_rewrites_and_misses() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(4)
    lru.put("a", 1)
    lru.put("a", 2)
    assert lru.get("a") == 2 and len(lru) == 1
    assert lru.get("b") is None and lru.pop("b") is None


@pytest.mark.parametrize("capacity", [0, -1])
def test_bounded_lru_needs_room_for_one(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedLRU(capacity)


def test_bounded_lru_by_weight_drops_the_least_recently_used_until_it_fits() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(100, weigh=len, max_weight=10)
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    lru.get("a")
    lru.put("c", b"123")  # 11 > 10: b, the least recently used, goes
    assert [key for key in "abc" if lru.get(key) is not None] == ["a", "c"]
    assert lru.weight == 7
    lru.put("a", b"1")  # a rewrite weighs what the new value weighs
    assert lru.weight == 4
    assert lru.pop("c") == b"123" and lru.weight == 1
    lru.put("d", b"x" * 10)  # exactly the bound: everything else goes
    assert len(lru) == 1 and lru.weight == 10


def test_bounded_lru_keeps_no_entry_heavier_than_the_bound() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(100, weigh=len, max_weight=10)
    lru.put("small", b"12")
    lru.put("huge", b"x" * 11)
    assert lru.get("huge") is None and lru.get("small") == b"12" and lru.weight == 2
    lru.put("small", b"x" * 11)  # nor does a too heavy rewrite keep the old value
    assert lru.get("small") is None and len(lru) == 0 and lru.weight == 0


def test_bounded_lru_weight_needs_both_settings() -> None:
    with pytest.raises(ValueError, match="together"):
        BoundedLRU(4, max_weight=10)
    with pytest.raises(ValueError, match="together"):
        BoundedLRU(4, weigh=len)


# ---------------------------------------------------------------------------- SingleFlight


class Gate:
    """A run that waits until the test opens the gate, counting how often it was started."""

    def __init__(self, result: str = "done", error: Exception | None = None) -> None:
        self.opened = asyncio.Event()
        self.started = 0
        self.result, self.error = result, error

    async def __call__(self) -> str:
        self.started += 1
        await self.opened.wait()
        if self.error is not None:
            raise self.error
        return self.result


@pytest.mark.parametrize("callers", [1, 2, 50])
async def test_concurrent_callers_share_one_run(callers: int) -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = Gate()
    waiting = [asyncio.ensure_future(flights.run("k", gate)) for _ in range(callers)]
    await asyncio.sleep(0)
    assert "k" in flights and len(flights) == 1
    gate.opened.set()
    assert await asyncio.gather(*waiting) == ["done"] * callers
    assert gate.started == 1
    assert "k" not in flights and len(flights) == 0


async def test_other_keys_run_on_their_own() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    first, second = Gate("one"), Gate("two")
    a = asyncio.ensure_future(flights.run("a", first))
    b = asyncio.ensure_future(flights.run("b", second))
    await asyncio.sleep(0)
    assert len(flights) == 2
    first.opened.set()
    second.opened.set()
    assert (await a, await b) == ("one", "two")


async def test_a_finished_run_is_not_remembered() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = Gate()
    gate.opened.set()
    assert await flights.run("k", gate) == "done"
    assert await flights.run("k", gate) == "done"
    assert gate.started == 2


async def test_every_waiter_gets_the_exception() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = Gate(error=RuntimeError("upstream down"))
    waiting = [asyncio.ensure_future(flights.run("k", gate)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.opened.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "upstream down" for r in results)
    assert gate.started == 1 and len(flights) == 0


async def test_a_cancelled_waiter_leaves_the_run_to_the_others() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = Gate()
    leaving = asyncio.ensure_future(flights.run("k", gate))
    staying = asyncio.ensure_future(flights.run("k", gate))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert "k" in flights  # the run goes on
    gate.opened.set()
    assert await staying == "done" and gate.started == 1


async def test_a_failed_run_whose_waiters_left_logs_nothing() -> None:
    """asyncio reports "exception was never retrieved" when a failed future nobody looked at is
    collected; a run all of whose waiters were cancelled must not be one."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        flights: SingleFlight[str, str] = SingleFlight()
        gate = Gate(error=RuntimeError("nobody listens"))
        waiter = asyncio.ensure_future(flights.run("k", gate))
        await asyncio.sleep(0)
        waiter.cancel()
        gate.opened.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(flights) == 0
        del waiter, gate, flights
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []


def test_clear_forgets_every_entry_and_its_weight() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(4, weigh=len, max_weight=10)
    lru.put("a", b"1234")
    lru.put("b", b"56")
    lru.clear()
    assert len(lru) == 0 and lru.weight == 0 and lru.get("a") is None
    lru.put("c", b"1234567890")  # the whole bound is free again
    assert lru.get("c") == b"1234567890"
