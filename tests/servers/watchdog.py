"""A watchdog that stops a test server when the pytest process that started it is gone, however it
went: a normal exit, Ctrl-C, a CI timeout's SIGTERM or SIGKILL.

`Watchdog(...)` runs this file as a small process of its own (in a session of its own, so a signal
to pytest's process group does not take it too) whose stdin is a pipe; pytest holds the write end,
which the kernel closes when pytest dies. The watchdog waits for EOF on it, or for its parent to
change (a forked child of pytest holding the pipe open must not keep it waiting), and then reaps
by command line, not by a PID told earlier:

- every process whose command line holds the server's own words (the data directory, for
  PostgreSQL: the postmaster, and initdb, pg_ctl or runuser caught half way through a start;
  `moto_server ... -p PORT` for moto) is the server, whichever one runs *then*: one a test stopped
  and started again, one pytest was still starting when it died. PIDs never come into it, so a
  stale PID file or a reused PID can not make it kill anything else;
- each gets a first signal (SIGINT, PostgreSQL's fast shutdown; SIGTERM), SIGKILL after a grace
  period, and the watchdog goes on looking until none has been seen for `SETTLE` seconds (a
  process forked but not yet exec'd when pytest died shows up a moment later);
- then it removes the server's temporary directory, if it has one.

A normal teardown stops the server itself and then `close()`s the watchdog, which tells it so and
it exits at once. Only the standard library here: this file also runs as a script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL = 0.2  # how often the parent is checked while the pipe stays open (seconds)
SETTLE = 0.5  # reaping ends once no matching process was seen for this long (seconds)
GIVE_UP = 60.0  # and in any case after this long (seconds)
DONE = b"done\n"  # what `close()` says: the server is stopped and its directory gone


class Watchdog:
    """The pytest side: starts the watchdog process; `close()` when the server is torn down."""

    def __init__(self, *, match: str, first_signal: signal.Signals, grace: float = 5.0,
                 remove: Path | None = None) -> None:
        command = [sys.executable, "-I", __file__, "--parent", str(os.getpid()),  # stdlib only
                   "--match", match.encode().hex(),  # hex: its own command line must not match
                   "--signal", first_signal.name, "--grace", str(grace)]
        if remove is not None:
            command += ["--remove", str(remove)]
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(DONE)
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(30)
            self.proc = None


# ---- the watchdog process ----


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (not reaped yet by its new parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")


def matching(words: str) -> list[int]:
    """The live processes (but this one) whose command line holds `words`, as whole words."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        # argv's words, and words in quotes too (pg_ctl's `sh -c 'exec postgres -D "dir"'`)
        line = " " + argv.replace(b"\0", b" ").replace(b'"', b" ").decode(errors="replace") + " "
        if f" {words} " in line and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for_parent_to_go(parent: int) -> bool:
    """Block until pytest is gone (EOF on stdin, or a new parent); False after `close()`."""
    said = b""
    while os.getppid() == parent:
        ready, _, _ = select.select([0], [], [], POLL)
        if ready:
            chunk = os.read(0, 4096)
            if not chunk:
                break
            said += chunk
    return said != DONE


def reap(words: str, first_signal: signal.Signals, grace: float) -> None:
    signalled: dict[int, float] = {}  # pid -> when it got the first signal
    last_seen = started = time.monotonic()
    while time.monotonic() - last_seen < SETTLE and time.monotonic() - started < GIVE_UP:
        now = time.monotonic()
        for pid in matching(words):
            last_seen = now
            sig = first_signal if pid not in signalled else signal.SIGKILL
            if pid not in signalled or now - signalled[pid] > grace:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                signalled.setdefault(pid, now)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--match", required=True)
    parser.add_argument("--signal", required=True)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--remove", type=Path)
    args = parser.parse_args()
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # Ctrl-C or a closed terminal: pytest first
    if not wait_for_parent_to_go(args.parent):
        return
    reap(bytes.fromhex(args.match).decode(), signal.Signals[args.signal], args.grace)
    if args.remove is not None:
        shutil.rmtree(args.remove, ignore_errors=True)


if __name__ == "__main__":
    main()
