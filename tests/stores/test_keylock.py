"""The per-key lock across processes (pyproxy/stores/keylock.py): one holder at a time, waiters
that poll, failure notes for those who waited, a dead holder's lock released, and going on
without a lock when none can be had. flock locks of separate opens conflict within one process
too, so two KeyLocks here stand for two processes (and a real subprocess for a dying holder).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyproxy.stores.keylock import KeyLocks


async def test_one_holder_at_a_time_and_the_waiter_sees_its_failure(tmp_path: Path) -> None:
    first, second = KeyLocks(tmp_path / "locks"), KeyLocks(tmp_path / "locks")
    order: list[str] = []
    holding = asyncio.Event()

    async def hold_and_fail() -> None:
        async with first.turn("proj", patience=5) as turn:
            assert turn.locked and turn.failure is None
            holding.set()
            order.append("first in")
            await asyncio.sleep(0.2)
            turn.fail("answered HTTP 503\nand more")
            order.append("first out")

    async def wait_for_it() -> str | None:
        await holding.wait()
        async with second.turn("proj", patience=5) as turn:
            order.append("second in")
            assert turn.locked
            return turn.failure

    _, failure = await asyncio.gather(hold_and_fail(), wait_for_it())
    assert order == ["first in", "first out", "second in"]
    assert failure == "answered HTTP 503 and more"  # one line
    # a later turn did not wait through that failure: it is not told of it
    async with second.turn("proj", patience=5) as turn:
        assert turn.locked and turn.failure is None
    async with second.turn("other", patience=5) as turn:  # keys do not share a lock
        assert turn.locked and turn.failure is None


async def test_past_its_patience_a_waiter_goes_on_without_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locks = KeyLocks(tmp_path / "locks")
    async with (
        locks.turn("proj", patience=5),
        KeyLocks(tmp_path / "locks").turn("proj", patience=0.1) as turn,
    ):
        assert not turn.locked and turn.failure is None
        turn.fail("ignored")  # nothing to write into
    assert "going on without the lock" in caplog.text
    assert os.path.getsize(locks.path("proj")) == 0


async def test_without_a_usable_directory_there_is_no_lock_and_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "locks").write_text("a file where the directory should be")
    locks = KeyLocks(tmp_path / "locks")
    for _ in range(3):
        async with locks.turn("proj", patience=5) as turn:
            assert not turn.locked
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "going on without one" in warnings[0].getMessage()


async def test_a_dead_holders_lock_is_free_at_once(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path / "locks")
    locks.directory.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n",
         str(locks.path("proj"))],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        async with locks.turn("proj", patience=0.1) as turn:
            assert not turn.locked  # it is held
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        async with locks.turn("proj", patience=5) as turn:
            assert turn.locked and turn.failure is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
