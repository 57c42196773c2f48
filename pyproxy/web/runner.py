"""Running the app: one process, or N forked workers sharing one port via SO_REUSEPORT, each
replaced when it dies; a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import os
import pickle
import resource
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from pyproxy import metrics, soon
from pyproxy.compose import (
    build_services,
    describe_storage,
    describe_upstream,
    open_stores,
    private_bodies,
)
from pyproxy.datadir import DataDir
from pyproxy.settings import Settings
from pyproxy.stores.space import Spare, is_disk_full, with_room
from pyproxy.web.access_log import runner_options
from pyproxy.web.app import build_app
from pyproxy.web.connections import ConnectionGuard, GuardedSite
from pyproxy.web.lifecycle import CAPACITY, IN_FLIGHT, InFlight, WorkerCapacity

log = logging.getLogger("pyproxy")
BACKLOG = 1024  # connections the kernel queues for a worker before it accepts them
RESTART_FIRST_S = 1.0  # a dead worker's first replacement starts after this; doubling
RESTART_MAX_S = 30.0  # up to this, while replacements keep dying
STABLE_S = 60.0  # a worker that ran this long starts its slot's back-off afresh
_FDS_PER_CONNECTION = 3  # its socket, a file being sent, an upstream connection
_FDS_RESERVED = 64  # stores, logs, the listening socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _refuse_a_port_in_use(host: str, port: int) -> None:
    """OSError if a server listens on the port: with SO_REUSEPORT the workers would share it
    with that one (an older pyproxy not stopped yet, a second one started by mistake), each
    taking a part of the connections. A bind without it is refused then, as one worker's is."""
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no server
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OSError(errno.EADDRINUSE, f"{host}:{port} is in use by another server"
                      " (a pyproxy still running?)") from None
    finally:
        probe.close()


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


@dataclass(frozen=True)
class _Worker:
    """What a worker process is told: its place among the workers, if there are several."""

    capacity: WorkerCapacity | None = None
    index: int = 0

    def serving(self, serving: bool) -> None:
        if self.capacity is not None:
            self.capacity.mark(self.index, serving)


async def _serve(settings: Settings, sock: socket.socket, worker: _Worker) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (see `_stop_gracefully`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # a worker that starts on a full disk (a replacement, say) needs room to open the caches,
    # whose databases write as they open
    spare = Spare(DataDir(settings.data_dir).spare)
    services = with_room(spare, lambda: build_services(settings), "start a worker")
    app = build_app(services)
    # what the worker holds from now on is not garbage: out of the collector's full passes,
    # which otherwise walk all of it (40-60 ms with the GIL held, stalling every request)
    # whenever a thread allocating many objects (the project list's renderer) sets one off
    gc.collect()
    gc.freeze()
    if worker.capacity is not None:
        app[CAPACITY] = worker.capacity
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_grace,
        keepalive_timeout=settings.keepalive_timeout, **runner_options(),
    )
    deadline = None
    try:
        await runner.setup()
        assert runner.server is not None
        guard = ConnectionGuard(runner.server, limit=settings.max_connections,
                                header_timeout=settings.header_timeout)
        await GuardedSite(runner, sock, guard, BACKLOG).start()
        worker.serving(True)
        await stop.wait()
        worker.serving(False)  # /ready says 503 from now on, through the grace period
        deadline = await _stop_gracefully(runner, app[IN_FLIGHT], settings.shutdown_grace)
    finally:
        worker.serving(False)
        server = runner.server
        transports = [c.transport for c in server.connections if c.transport] if server else []
        await runner.cleanup()
        soon.flush_all()  # the last requests' access lines and metrics: the loop stops soon
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


def _run_worker(settings: Settings, sock: socket.socket, worker: _Worker) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(settings, sock, worker))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, sock, worker))


def _open_files_for(connections: int) -> None:
    """Raise the soft limit on open files to the hard one, and say so when even that leaves
    less than `[server] max_connections` needs: past the limit accept() fails and nobody is
    served, where the connection bound would have refused only the newcomers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = connections * _FDS_PER_CONNECTION + _FDS_RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit (%d) is below what [server] max_connections = %d may need (%d):"
            " raise it (ulimit -n, LimitNOFILE=) or lower max_connections", soft, connections,
            needed,
        )


def _open_before_fork(settings: Settings) -> int:
    if settings.workers == 1 or not settings.storage_objects:
        return _open_once(settings)
    # in a child: obstore's runtime, once started here, would hang every worker forked after it
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(reader)
        outcome: object
        try:
            outcome = _open_once(settings)
        except BaseException as exc:
            outcome = exc
        with os.fdopen(writer, "wb") as out:
            try:
                pickle.dump(outcome, out)
            except (pickle.PicklingError, TypeError, AttributeError):
                pickle.dump(RuntimeError(str(outcome)), out)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    outcome = pickle.loads(report) if report else RuntimeError("opening the stores failed")
    if isinstance(outcome, BaseException):
        raise outcome
    return int(outcome)


def _open_once(settings: Settings) -> int:
    """Open the stores once, so a bad data directory fails here with one message, and sweep
    what interrupted uploads left (how many). The workers open the rest (with room, too). A
    bucket ([storage] objects) that does not answer is BucketUnavailable, one line."""
    private_bodies(settings, check=True)
    private, users = open_stores(settings)
    try:
        return private.collect_garbage()
    finally:
        private.close()
        users.close()


def serve(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # on a full disk SQLite cannot even open a database nobody holds open: the spare file's
    # room lets the server start and serve what it has
    spare = Spare(DataDir(settings.data_dir).spare)
    removed = with_room(spare, lambda: _open_before_fork(settings), "start")
    if removed:
        log.info("removed %d leftovers of interrupted uploads", removed)
    spare.keep()  # room for deletes once the disk is full
    _open_files_for(settings.max_connections)
    workers = settings.workers
    if workers > 1 and not metrics.multiprocess():
        log.warning("metrics are per worker: there is no shared directory for their values")
    if workers > 1 and settings.port:
        _refuse_a_port_in_use(settings.host, settings.port)
    sock = _listening_socket(settings.host, settings.port, reuse_port=workers > 1)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"pyproxy: listening on http://{shown_host}:{port}", file=sys.stderr, flush=True)
    log.info(
        "data directory %s; storage: %s; upstream: %s; %d worker(s)",
        settings.data_dir, describe_storage(settings), describe_upstream(settings), workers,
    )
    if workers == 1:
        _run_worker(settings, sock, _Worker())
        return 0
    return _Supervisor(settings, sock, host, port).run()


@dataclass
class _Slot:
    index: int
    pid: int | None = None
    started: float = 0.0
    failures: int = 0  # replacements in a row that died before STABLE_S
    restart_at: float | None = None


_STOPS = {signal.SIGTERM, signal.SIGINT}
_SIGNALS = {signal.SIGCHLD, *_STOPS}


class _Supervisor:
    """Fork the workers, each with its own SO_REUSEPORT socket so the kernel spreads
    connections (the parent's socket only holds the port: it never listens); replace a worker
    that dies, after RESTART_FIRST_S doubling up to RESTART_MAX_S while replacements keep
    dying; on SIGTERM/SIGINT pass the signal on and wait for every worker to stop.

    The parent blocks the signals it waits for and takes them with sigtimedwait, so a death,
    a stop and a due restart are handled in one loop, without handlers racing it."""

    def __init__(self, settings: Settings, reserved: socket.socket, host: str, port: int) -> None:
        self.settings, self.reserved, self.host, self.port = settings, reserved, host, port
        self.capacity = WorkerCapacity(settings.workers)
        self.slots = [_Slot(index) for index in range(settings.workers)]
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for slot in self.slots:
                if signal.sigpending() & _STOPS:  # stopped while starting: start no more
                    break
                self._start(slot, previous)
            while not self.stopping or any(slot.pid is not None for slot in self.slots):
                due = [s.restart_at for s in self.slots if s.restart_at is not None]
                if due:
                    info = signal.sigtimedwait(_SIGNALS, max(min(due) - time.monotonic(), 0))
                else:
                    info = signal.sigwaitinfo(_SIGNALS)
                if info is None:
                    now = time.monotonic()
                    for slot in self.slots:
                        if slot.restart_at is not None and slot.restart_at <= now:
                            self._start(slot, previous)
                elif info.si_signo == signal.SIGCHLD:
                    self._reap()
                else:
                    self._stop(info.si_signo)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self.reserved.close()
        return self.status

    def _start(self, slot: _Slot, sigmask: Iterable[int]) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
            self.reserved.close()
            code = 0
            try:
                _stop_with(supervisor)
                sock = _listening_socket(self.host, self.port, reuse_port=True)
                _run_worker(self.settings, sock, _Worker(self.capacity, slot.index))
            except BaseException as exc:
                if is_disk_full(exc):  # not a bug: it is started again, and waits for room
                    log.error("worker %d cannot start: the disk is full (%s)", os.getpid(), exc)
                else:
                    log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            self.capacity.mark(slot.index, False)
            metrics.worker_exited(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if self.stopping:
                if code != 0:
                    self.status = 1
                continue
            ran = time.monotonic() - slot.started
            slot.failures = 1 if ran >= STABLE_S else slot.failures + 1
            delay = min(RESTART_FIRST_S * 2 ** (slot.failures - 1), RESTART_MAX_S)
            slot.restart_at = time.monotonic() + delay
            log.error("worker %d %s after %.0fs; starting another in %gs",
                      pid, _how_it_ended(code), ran, delay)

    def _stop(self, signum: int) -> None:
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)


_PR_SET_PDEATHSIG = 1


def _stop_with(supervisor: int) -> None:
    """A worker is told to stop (SIGTERM: a graceful stop) when its supervisor dies, however
    (a SIGKILL too): else it would go on serving, unsupervised, beside a restarted pyproxy."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("worker %d will not stop with its supervisor: prctl failed (%s)",
                    os.getpid(), os.strerror(ctypes.get_errno()))
    if os.getppid() != supervisor:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
