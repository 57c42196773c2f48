"""pyproxy/web/runner.py: the supervisor of several workers."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading

import pytest

from pyproxy.settings import Settings
from pyproxy.web import runner


def test_a_stop_while_workers_start_starts_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    forks: list[int] = []

    def no_fork() -> int:
        forks.append(1)
        raise AssertionError("forked after the stop")

    monkeypatch.setattr(os, "fork", no_fork)
    reserved = socket.socket()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        # to this thread, pending until the supervisor takes it: as a SIGTERM sent while it
        # forks its workers one by one
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        supervisor = runner._Supervisor(
            dataclasses.replace(Settings(), workers=16), reserved, "127.0.0.1", 0
        )
        assert supervisor.run() == 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    assert forks == [] and supervisor.stopping
    assert reserved.fileno() == -1  # the port it held is given back
