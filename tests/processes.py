"""What the tests and the benchmark learn about processes, read from /proc: the processes of a
session, a process's children, the processes whose command line mentions a path, and resident
memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Process:
    pid: int
    state: str  # "R", "S", ... "Z" for a zombie
    ppid: int
    sid: int

    @property
    def alive(self) -> bool:
        return self.state != "Z"


def processes() -> Iterator[Process]:
    """Every process /proc shows now (one that exits meanwhile is skipped)."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may itself hold spaces and parentheses
        rest = stat[stat.rfind(")") + 2:].split()
        yield Process(int(entry.name), rest[0], int(rest[1]), int(rest[3]))


def session_members(sid: int) -> list[int]:
    """PIDs of live (non-zombie) processes whose session id is `sid`."""
    return [p.pid for p in processes() if p.alive and p.sid == sid]


def children(pid: int) -> list[int]:
    """PIDs of the processes whose parent is `pid` (zombies included: a child that has not been
    waited for is still one)."""
    return [p.pid for p in processes() if p.ppid == pid]


def processes_mentioning(text: str) -> list[str]:
    """"PID: command line" of every live process whose command line contains `text`."""
    found = []
    for process in processes():
        try:
            cmdline = (PROC / str(process.pid) / "cmdline").read_bytes()
        except OSError:
            continue
        command = cmdline.replace(b"\0", b" ").decode(errors="replace")
        if text in command:
            found.append(f"{process.pid}: {command}")
    return found


def rss_kib(pid: int) -> int | None:
    """Resident memory of `pid` in KiB (VmRSS), None once it has gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None
