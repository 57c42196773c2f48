"""web/sendfile.py: the kernel's sendfile on uvloop (which has none of its own) and on asyncio's
loop, against a real aiohttp server and client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from aiohttp import ClientPayloadError, ClientSession, web

from pyproxy.web.sendfile import ClientGone, send_fd, sendfile
from tests.servers.postgres import free_port

MiB = 1024 * 1024
LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}

Scenario = Callable[[str, list[BaseException | int]], Awaitable[None]]


Sender = Callable[[asyncio.Transport, Path, int, int], Awaitable[int]]


async def _with_sendfile(transport: asyncio.Transport, path: Path, offset: int, count: int) -> int:
    with open(path, "rb") as fobj:
        sent = await sendfile(transport, fobj, offset, count)
        assert fobj.tell() == offset + sent  # left after the bytes sent
    return sent


async def _with_send_fd(transport: asyncio.Transport, path: Path, offset: int, count: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return await send_fd(transport, fd, offset, count)
    finally:
        os.close(fd)


def _serve(path: Path, scenario: Scenario, loop_factory: Callable[[], asyncio.AbstractEventLoop],
           send: Sender = _with_sendfile) -> list[BaseException | int]:
    """Run `scenario(url, outcomes)` against a server whose handler sends the span asked for
    (`?offset=&count=`) with `send`; each handler's return value or exception lands in
    `outcomes`."""
    outcomes: list[BaseException | int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        offset, count = int(request.query["offset"]), int(request.query["count"])
        response = web.StreamResponse(headers={"Content-Length": str(count)})
        await response.prepare(request)
        assert request.transport is not None
        try:
            sent = await send(request.transport, path, offset, count)
        except BaseException as exc:
            outcomes.append(exc)
            raise
        outcomes.append(sent)
        if sent < count:  # as web/files.py does: never a short body that looks whole
            request.transport.abort()
        return response

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await scenario(f"http://127.0.0.1:{port}/", outcomes)
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    return outcomes


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(24 * MiB))
    return path


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_whole_files_and_spans_arrive_intact_also_to_a_slow_reader(big: Path, loop: str) -> None:
    body = big.read_bytes()

    async def scenario(url: str, outcomes: list[BaseException | int]) -> None:
        async with ClientSession() as session:
            for offset, count, slow in ((0, len(body), False), (0, len(body), True),
                                        (5 * MiB + 3, 7 * MiB, False)):
                digest = hashlib.sha256()
                async with session.get(url, params={"offset": offset, "count": count}) as got:
                    async for chunk in got.content.iter_chunked(256 * 1024):
                        digest.update(chunk)
                        if slow:  # the socket fills up: the sender waits for it to drain
                            await asyncio.sleep(0.002)
                assert digest.hexdigest() == hashlib.sha256(body[offset:offset + count]).hexdigest()

    assert _serve(big, scenario, LOOPS[loop]) == [len(body), len(body), 7 * MiB]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_file_shorter_than_asked_sends_what_it_has(big: Path, loop: str) -> None:
    size = big.stat().st_size

    async def scenario(url: str, outcomes: list[BaseException | int]) -> None:
        async with ClientSession() as session:
            with pytest.raises(ClientPayloadError):  # the body ends short of Content-Length
                async with session.get(url, params={"offset": size - MiB, "count": 2 * MiB}) as got:
                    await got.read()
            for _ in range(100):
                if outcomes:
                    break
                await asyncio.sleep(0.05)

    assert _serve(big, scenario, LOOPS[loop]) == [MiB]


def test_a_client_gone_mid_file_ends_the_send_and_leaves_no_descriptor(big: Path) -> None:
    async def scenario(url: str, outcomes: list[BaseException | int]) -> None:
        before = len(os.listdir("/proc/self/fd"))
        async with ClientSession() as session:
            got = await session.get(url, params={"offset": 0, "count": big.stat().st_size})
            await got.content.readexactly(MiB)
            got.close()  # the client goes away with most of the file unsent
            for _ in range(100):
                if outcomes:
                    break
                await asyncio.sleep(0.05)
            async with session.get(url, params={"offset": 0, "count": 10}) as after:
                assert await after.read() == big.read_bytes()[:10]  # the server goes on
        await asyncio.sleep(0.1)
        assert len(os.listdir("/proc/self/fd")) <= before

    outcomes = _serve(big, scenario, uvloop.new_event_loop)
    assert isinstance(outcomes[0], ConnectionResetError) and outcomes[1:] == [10]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_send_fd_sends_from_a_descriptor_and_counts_what_went_before_a_client_left(
    big: Path, loop: str
) -> None:
    """send_fd (a download's file, followed as it is written) on either loop: the span asked
    for; a client gone mid-file raises ClientGone with what was sent."""
    body = big.read_bytes()

    async def scenario(url: str, outcomes: list[BaseException | int]) -> None:
        async with ClientSession() as session:
            async with session.get(url, params={"offset": 3, "count": 5 * MiB}) as got:
                assert await got.read() == body[3 : 3 + 5 * MiB]
            got = await session.get(url, params={"offset": 0, "count": len(body)})
            await got.content.readexactly(MiB)
            got.close()
            for _ in range(100):
                if len(outcomes) == 2:
                    break
                await asyncio.sleep(0.05)

    outcomes = _serve(big, scenario, LOOPS[loop], _with_send_fd)
    assert outcomes[0] == 5 * MiB
    gone = outcomes[1]
    assert isinstance(gone, ClientGone) and MiB <= gone.sent < len(body)
