"""Running `pyproxy` commands from an async test, as a shell would."""

from __future__ import annotations

import asyncio

import pytest

from pyproxy.cli import main as cli


async def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr); in a thread: import runs its own event loop, as it does
    from a shell. A traceback is never an answer."""
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err
