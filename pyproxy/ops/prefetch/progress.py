"""What a prefetch shows while it runs: a rich progress bar on a terminal, one line per file
otherwise."""

from __future__ import annotations

import sys
from typing import Any, Literal, Protocol

from pyproxy.ops.prefetch.locks import Pinned
from pyproxy.units import human_size

Outcome = Literal["fetched", "cached", "failed"]


class Progress(Protocol):
    def start(self) -> None: ...
    def note(self, line: str) -> None: ...
    def add_files(self, count: int) -> None: ...
    def advance_bytes(self, count: int) -> None: ...
    def done(self, pinned: Pinned, outcome: Outcome, size: int, reason: str) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """One line per file, for logs and pipes."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def start(self) -> None:
        pass

    def note(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def add_files(self, count: int) -> None:
        pass

    def advance_bytes(self, count: int) -> None:
        pass

    def done(self, pinned: Pinned, outcome: Outcome, size: int, reason: str) -> None:
        if outcome == "fetched":
            self.note(f"fetched  {pinned.label} ({human_size(size)})")
        elif outcome == "cached":
            self.note(f"cached   {pinned.label}")
        else:
            self.note(f"FAILED   {pinned.label}: {reason.splitlines()[0] if reason else ''}")

    def close(self) -> None:
        pass


class BarProgress:
    """A rich progress bar on a terminal: files done of files known, bytes moved."""

    def __init__(self) -> None:
        # imported only on a terminal
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=Console(stderr=True), transient=False,
        )
        # the total size is unknown (pip's report gives none): bytes so far and the speed
        self._bytes_bar = Progress(TextColumn("  {task.description} {task.fields[moved]}"),
                                   TransferSpeedColumn(), console=self._bar.console)
        self._files = self._bar.add_task("files", total=0)
        self._bytes = self._bytes_bar.add_task("received", total=None, moved=human_size(0))
        self._moved = 0
        self._live = Live(Group(self._bar, self._bytes_bar), console=self._bar.console,
                          refresh_per_second=8)

    def start(self) -> None:
        self._live.start()

    def note(self, line: str) -> None:
        self._live.console.print(line, markup=False, highlight=False)

    def add_files(self, count: int) -> None:
        task = self._bar.tasks[0]
        self._bar.update(self._files, total=(task.total or 0) + count)

    def advance_bytes(self, count: int) -> None:
        self._moved += count
        self._bytes_bar.update(self._bytes, advance=count, moved=human_size(self._moved))

    def done(self, pinned: Pinned, outcome: Outcome, size: int, reason: str) -> None:
        self._bar.advance(self._files)
        if outcome == "failed":
            self.note(f"FAILED {pinned.label}: {reason.splitlines()[0] if reason else ''}")

    def close(self) -> None:
        self._live.stop()  # a no-op when it never started
