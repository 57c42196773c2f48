"""The file-download rules (pyproxy/repository/downloads.py) on their own: origins, where a
redirect may lead, and the throughput meter fed by a scripted reader. Through real servers:
tests/repository/test_http.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest

from pyproxy.model import Unavailable
from pyproxy.repository.downloads import (
    Targets,
    host_rule,
    metered,
    origin_of,
    redirect_target,
)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Files.Example.test/a/b.whl", ("https", "files.example.test", 443)),
        ("http://127.0.0.1:8080/x", ("http", "127.0.0.1", 8080)),
        ("HTTP://host/", ("http", "host", 80)),
        ("https://u:p@host:8443/", ("https", "host", 8443)),
        ("ftp://host/x", None),
        ("file:///etc/passwd", None),
        ("/relative/path", None),
        ("http://host:99999/", None),  # no such port
        ("http://[::1/", None),  # unparsable
    ],
)
def test_origin_of(url: str, origin: object) -> None:
    assert origin_of(url) == origin


def test_files_from_entries_are_host_rules_as_for_routed_upstreams() -> None:
    assert host_rule("CDN.example.test") == ("cdn.example.test", None)
    assert host_rule("cdn.example.test:8443") == ("cdn.example.test", 8443)
    assert host_rule("[::1]:9000") == ("::1", 9000)
    assert host_rule("[::1]") == ("::1", None)


ALLOWED = Targets(
    {("https", "files.example.test", 443)}, [("cdn.example.test", None), ("127.0.0.1", 8080)]
)


def test_redirect_targets() -> None:
    here = "https://files.example.test/packages/a.whl"
    assert redirect_target(here, "/other/a.whl", ALLOWED) == "https://files.example.test/other/a.whl"
    assert redirect_target(here, " http://127.0.0.1:8080/a ", ALLOWED) == "http://127.0.0.1:8080/a"
    for location in ("https://cdn.example.test/a", "http://cdn.example.test:8443/a"):
        assert redirect_target(here, location, ALLOWED) == location  # a host: any port
    for location, shown in [
        ("https://evil.example.test/a.whl", "https://evil.example.test"),
        ("http://files.example.test/a.whl", "http://files.example.test"),  # another scheme
        ("http://127.0.0.1:8081/a", "http://127.0.0.1:8081"),  # another port
        ("file:///etc/passwd", "a URL that is not http(s)"),
    ]:
        with pytest.raises(Unavailable, match=re.escape(f"a file to {shown}, which is neither")):
            redirect_target(here, location, ALLOWED)


def _reader(script: list[tuple[float, bytes]]) -> Callable[[], Awaitable[bytes]]:
    """Each chunk arrives `delay` s after the previous one was read, then b"" (the end). Like
    a socket's buffer, a read cancelled by the meter's timeout loses nothing."""
    steps = list(script)
    due: list[float] = []  # when the next chunk arrives, once someone is waiting for it

    async def read() -> bytes:
        if not steps:
            return b""
        clock = asyncio.get_running_loop().time
        if not due:
            due.append(clock() + steps[0][0])
        await asyncio.sleep(max(0.0, due[0] - clock()))
        due.clear()
        return steps.pop(0)[1]

    return read


async def _drain(read: Callable[[], Awaitable[bytes]], too_slow: Callable[[], None]) -> bytes:
    chunks = metered(read, min_rate=1000, window=0.1, too_slow=too_slow)
    return b"".join([chunk async for chunk in chunks])


async def test_a_body_fast_enough_in_every_window_passes() -> None:
    slow: list[bool] = []
    body = await _drain(_reader([(0.03, b"x" * 1000)] * 8), lambda: slow.append(True))
    assert body == b"x" * 8000 and not slow  # ~33,000 bytes/s against 1,000


async def test_a_body_that_stalls_is_aborted_at_the_end_of_the_window() -> None:
    slow: list[bool] = []
    script = [(0.0, b"x" * 50), (5.0, b"never")]  # 50 bytes, then nothing for 5 s
    with pytest.raises(Unavailable, match=r"sent 50 bytes in 0\.1 s, less than"):
        await asyncio.wait_for(_drain(_reader(script), lambda: slow.append(True)), 2)
    assert slow == [True]


async def test_a_body_that_drips_is_aborted() -> None:
    with pytest.raises(Unavailable, match="min_rate"):
        await _drain(_reader([(0.02, b"x")] * 20), lambda: None)  # 50 bytes/s


async def test_only_the_time_spent_waiting_for_upstream_counts() -> None:
    """A consumer that takes its time between chunks does not make upstream slow."""
    chunks = metered(_reader([(0.01, b"x" * 500)] * 6), min_rate=1000, window=0.1,
                     too_slow=lambda: None)
    received = b""
    async for chunk in chunks:
        received += chunk
        await asyncio.sleep(0.6)  # the disk, or a slow client
    # 50,000 bytes/s of waiting for upstream; 830 bytes/s of wall time, below min_rate
    assert received == b"x" * 3000


async def test_a_small_body_that_ends_within_the_first_window_is_never_judged() -> None:
    assert await _drain(_reader([(0.05, b"tiny")]), lambda: None) == b"tiny"
