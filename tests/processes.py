"""Processes a test or the benchmark started in their own session, found through /proc."""

from __future__ import annotations

from pathlib import Path


def session_members(sid: int) -> list[int]:
    """PIDs of live (non-zombie) processes whose session id is `sid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...
        rest = stat[stat.rfind(")") + 2:].split()
        if rest[0] != "Z" and int(rest[3]) == sid:
            members.append(int(entry.name))
    return members
