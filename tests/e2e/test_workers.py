"""`pyproxy serve --workers N` replaces a worker that dies (pyproxy/web/runner.py): SIGKILL one,
and /ready answers 503 "1 of 2 workers serving" until its replacement listens; a replacement that
dies soon after waits longer (back-off); SIGTERM still stops everything with exit status 0.
"""

from __future__ import annotations

import os
import re
import signal

from tests.e2e.clients import get
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.waiting import wait_until


def workers_of(server: PyproxyServer) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    stat = file.read()
            except OSError:
                continue
            state, ppid = stat[stat.rfind(")") + 2:].split()[:2]
            if int(ppid) == server.pid and state != "Z":
                found.add(int(entry))
    return found


def ready(server: PyproxyServer) -> tuple[int, str]:
    """/ready's status and text; (0, why) for a connection that a worker's death reset (one
    queued for the killed worker, or landing on its socket as it closes)."""
    try:
        response = get(f"{server.url}/ready", timeout=10)
    except OSError as exc:
        return 0, str(exc)
    return response.status, response.body.strip()


def test_a_killed_worker_is_replaced_and_ready_says_so_meanwhile(
    pyproxy_factory: ServerFactory,
) -> None:
    server = pyproxy_factory.start(user=None, extra_args=["--workers", "2"])
    wait_until(lambda: ready(server) == (200, "ready"), 20, "both workers serving")
    first = wait_until(lambda: len(workers_of(server)) == 2 and workers_of(server), 10,
                       "two workers")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    _, text = wait_until(lambda: (r := ready(server))[0] == 503 and r, 10,
                         "/ready to report the lost worker")
    assert text == "not ready: 1 of 2 workers serving"
    assert get(f"{server.url}/simple/").status == 200  # the other one serves meanwhile
    wait_until(lambda: ready(server) == (200, "ready"), 30, "the replacement to serve")
    second = workers_of(server)
    assert len(second) == 2 and victim not in second and first - {victim} <= second
    log = server.stderr_text()
    assert re.search(rf"worker {victim} was killed by SIGKILL after \d+s; starting another in 1s",
                     log), log[-2000:]

    # the replacement dies too, soon: the next one waits twice as long
    replacement = (second - first).pop()
    os.kill(replacement, signal.SIGKILL)
    wait_until(lambda: f"worker {replacement} was killed" in server.stderr_text(), 10,
               "the second death to be logged")
    assert re.search(rf"worker {replacement} was killed by SIGKILL after \d+s; starting another"
                     r" in 2s", server.stderr_text())
    wait_until(lambda: ready(server) == (200, "ready"), 30, "the second replacement to serve")

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert server.stop() == []  # no worker left behind


def test_sigterm_while_a_replacement_is_due_stops_everything(
    pyproxy_factory: ServerFactory,
) -> None:
    """SIGTERM during the back-off (1 s; on a slow machine the replacement may have started):
    no replacement outlives the stop, and the exit status is 0."""
    server = pyproxy_factory.start(user=None, extra_args=["--workers", "2"])
    wait_until(lambda: ready(server) == (200, "ready"), 20, "both workers serving")
    victim = min(workers_of(server))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: f"worker {victim} was killed" in server.stderr_text(), 10, "the death")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert server.stop() == []
