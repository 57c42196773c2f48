"""pyproxy.soon: work done once per event loop iteration."""

from __future__ import annotations

import asyncio

from pyproxy import soon


def test_without_a_running_loop_it_runs_at_once() -> None:
    runs: list[int] = []
    later = soon.Soon(lambda: runs.append(1))
    later.due()
    later.due()
    assert runs == [1, 1]


async def test_once_per_iteration_after_its_callbacks() -> None:
    runs: list[str] = []
    later = soon.Soon(lambda: runs.append("flush"))
    for _ in range(3):
        later.due()
    runs.append("same iteration")
    assert runs == ["same iteration"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert runs == ["same iteration", "flush"]
    later.due()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert runs == ["same iteration", "flush", "flush"]


def test_due_on_a_loop_closed_before_it_ran_is_done_by_the_next_one() -> None:
    pending: list[int] = []
    flushed: list[list[int]] = []

    def flush() -> None:
        flushed.append(pending[:])
        pending.clear()

    later = soon.Soon(flush)

    async def add(value: int) -> None:
        pending.append(value)
        later.due()

    first = asyncio.new_event_loop()
    first.run_until_complete(add(1))  # stops before the flush's turn: the callback is dropped
    first.close()
    asyncio.run(add(2))
    assert [value for batch in flushed for value in batch] == [1, 2]


async def test_flush_all_runs_what_is_pending() -> None:
    runs: list[int] = []
    later = soon.Soon(lambda: runs.append(1))
    later.due()
    soon.flush_all()
    assert runs == [1]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert runs == [1, 1]  # the scheduled call still comes (with nothing left, a flush is a no-op)
