"""Running the app: one process, or N forked workers sharing one port via SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from pyproxy import metrics
from pyproxy.compose import build_services, describe_upstream, open_stores
from pyproxy.config import Settings
from pyproxy.web.access_log import runner_options
from pyproxy.web.app import build_app
from pyproxy.web.lifecycle import IN_FLIGHT, InFlight

log = logging.getLogger("pyproxy")


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def _serve(settings: Settings, sock: socket.socket) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (see `_stop_gracefully`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    services = build_services(settings)
    app = build_app(services)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_grace, **runner_options()
    )
    deadline = None
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await stop.wait()
        deadline = await _stop_gracefully(runner, app[IN_FLIGHT], settings.shutdown_grace)
    finally:
        server = runner.server
        transports = [c.transport for c in server.connections if c.transport] if server else []
        await runner.cleanup()
        if deadline is not None:
            await _flushed(transports, deadline)
        await services.close()
    log.info("stopped (pid %d)", os.getpid())


async def _stop_gracefully(runner: web.AppRunner, in_flight: InFlight, grace: float) -> float:
    """Refuse new connections at once; let running handlers finish (uploads still receiving
    their bodies among them); then leave the rest of `grace` to aiohttp's cleanup, which closes
    idle connections, waits for responses still being sent and cancels what remains. A cancelled
    upload leaves nothing behind (its temp file is removed), a cancelled download is not cached.
    Returns the loop time at which the grace period ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    for site in list(runner.sites):
        await site.stop()
    log.info(
        "stopping (pid %d): %d request(s) in flight get up to %gs to finish",
        os.getpid(), in_flight.running, grace,
    )
    if not await in_flight.drained(grace):
        log.warning("grace period over: cancelling %d request(s) in flight", in_flight.running)
    # AppRunner takes its timeout only at construction; what is left of the grace period
    # bounds the whole stop, not the grace period once more
    if hasattr(runner, "_shutdown_timeout"):
        runner._shutdown_timeout = max(deadline - loop.time(), 0.1)
    return deadline


async def _flushed(transports: list[asyncio.Transport], deadline: float) -> None:
    """aiohttp closes a connection as soon as its last response is written, which may still
    sit in the transport's buffer for a slow client: keep the loop running (until `deadline`)
    until those ends of responses have gone to the kernel, which delivers them after exit."""
    loop = asyncio.get_running_loop()
    while any(_unsent(t) for t in transports) and loop.time() < deadline:
        await asyncio.sleep(0.05)


def _unsent(transport: asyncio.Transport) -> bool:
    try:
        return transport.get_write_buffer_size() > 0
    except (AttributeError, RuntimeError):  # a transport already torn down
        return False


def _run_worker(settings: Settings, sock: socket.socket) -> None:
    sock.listen(1024)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(settings, sock))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, sock))


def serve(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # open once up front so a bad data directory fails here, with one message
    private, users = open_stores(settings.data_dir)
    removed = private.collect_garbage()
    if removed:
        log.info("removed %d leftovers of interrupted uploads", removed)
    private.close()
    users.close()
    workers = settings.workers
    if workers > 1 and not metrics.multiprocess():
        log.warning("metrics are per worker: prometheus_client was imported too early")
    sock = _listening_socket(settings.host, settings.port, reuse_port=workers > 1)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"pyproxy: listening on http://{shown_host}:{port}", file=sys.stderr, flush=True)
    log.info(
        "data directory %s; upstream: %s; %d worker(s)",
        settings.data_dir, describe_upstream(settings), workers,
    )
    if workers == 1:
        _run_worker(settings, sock)
        return 0
    return _run_workers(settings, sock, host, port)


def _run_workers(settings: Settings, reserved: socket.socket, host: str, port: int) -> int:
    """Fork workers, each with its own SO_REUSEPORT socket so the kernel spreads connections;
    the parent's socket only holds the port (it never listens)."""
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            reserved.close()
            code = 0
            try:
                _run_worker(settings, _listening_socket(host, port, reuse_port=True))
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        metrics.worker_exited(child)
        if os.waitstatus_to_exitcode(code) != 0:
            status = 1
    reserved.close()
    return status
