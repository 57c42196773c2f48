"""Requests in flight (pyproxy/web/lifecycle.py), over real HTTP on 127.0.0.1. The whole
SIGTERM sequence is tested on a subprocess in tests/e2e/test_shutdown.py."""

from __future__ import annotations

import asyncio

from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestClient

from pyproxy.web.context import Services
from pyproxy.web.lifecycle import IN_FLIGHT, InFlight
from tests.conftest import PASSWORD, USER


async def test_counts_running_handlers_and_drains(client: TestClient, services: Services) -> None:
    in_flight = client.app[IN_FLIGHT]
    assert isinstance(in_flight, InFlight) and in_flight.running == 0
    assert (await client.get("/health")).status == 200
    assert in_flight.running == 0
    assert await in_flight.drained(0.1)


async def test_drained_waits_for_a_slow_handler_and_times_out() -> None:
    in_flight = InFlight()
    in_flight.begin()
    assert not await in_flight.drained(0.05)
    asyncio.get_running_loop().call_later(0.05, in_flight.end)
    assert await in_flight.drained(5)
    assert in_flight.running == 0


async def test_an_upload_still_receiving_counts(client: TestClient) -> None:
    """A handler reading a request body is in flight until the body is read."""
    in_flight = client.app[IN_FLIGHT]
    gate = asyncio.Event()

    async def body():  # type: ignore[no-untyped-def]
        yield b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nfoo\r\n'
        await gate.wait()
        yield b"--x--\r\n"

    headers = {"Content-Type": "multipart/form-data; boundary=x",
               "Authorization": encode_basic_auth(USER, PASSWORD)}
    request = asyncio.create_task(client.post("/legacy/", data=body(), headers=headers))
    for _ in range(100):
        if in_flight.running:
            break
        await asyncio.sleep(0.01)
    assert in_flight.running == 1
    gate.set()
    response = await request
    assert response.status == 400  # no file in it, but read to the end first
    assert in_flight.running == 0


async def test_stopping_closes_keep_alive_connections(client: TestClient) -> None:
    response = await client.get("/health")
    assert response.headers.get("Connection", "").lower() != "close"
    client.app[IN_FLIGHT].stopping = True
    response = await client.get("/health")
    assert response.status == 200
    assert response.headers["Connection"].lower() == "close"


def test_the_counting_middleware_is_outermost(client: TestClient) -> None:
    """middleware.errors keeps the count: preflights and errors are counted too."""
    from pyproxy.web import middleware

    app: web.Application = client.app
    assert app.middlewares[0] is middleware.errors


def test_worker_capacity_is_shared_with_forked_workers() -> None:
    """Written in a forked child (as a worker marks itself serving), read in the parent."""
    import os

    from pyproxy.web.lifecycle import WorkerCapacity

    capacity = WorkerCapacity(2)
    assert capacity.serving == 0 and capacity.problem() == "0 of 2 workers serving"
    pid = os.fork()
    if pid == 0:
        capacity.mark(1, True)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert capacity.serving == 1 and capacity.problem() == "1 of 2 workers serving"
    capacity.mark(0, True)
    assert capacity.problem() is None
    capacity.mark(1, False)  # the supervisor, reaping a dead worker
    assert capacity.problem() == "1 of 2 workers serving"
