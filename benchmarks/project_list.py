"""A cold `/simple/` of a million synthetic names: the worker's peak RSS and the worst delay of
other requests on that worker while the list is fetched, read and rendered.

    python benchmarks/project_list.py [--names 1000000] [--format json|html] [--unsorted]

Starts a synthetic upstream (in a process of its own, streaming the list as it generates it,
with an ETag) and `pyproxy serve --workers 1` on a fresh data directory, then GETs `/simple/`
(gzip accepted, as pip and browsers send it) while another client asks `/health` every 10 ms
(and for 10 s before, with nothing else going on, to show what the machine's load costs),
and samples the server's RSS every 5 ms. Prints one JSON object: times, RSS before / peak /
after (of the worker process), the worst and p99 `/health` latency during the cold list, and
the warm list and its 304. Everything listens on 127.0.0.1 and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_upstream(port: int, count: int, unsorted: bool, fmt: str) -> None:
    """The synthetic index: `/simple/` lists `count` names, generated as they are sent."""

    def name(n: int) -> str:
        # sorted by normalised name, as large indexes send it; or numbered, which is not
        return f"Project_{n}" if unsorted else f"project-{n:07d}"

    async def root(request: web.Request) -> web.StreamResponse:
        as_json = fmt == "json" and JSON_TYPE in request.headers.get("Accept", "")
        etag = f'"synthetic-{count}-{as_json}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        content_type = JSON_TYPE if as_json else "text/html"
        response = web.StreamResponse(headers={"ETag": etag, "Content-Type": content_type})
        await response.prepare(request)
        head = (b'{"meta": {"api-version": "1.4"}, "projects": [' if as_json else
                b'<html><head><meta name="pypi:repository-version" content="1.4"></head><body>\n')
        await response.write(head)
        for start in range(0, count, 5000):
            names = [name(n) for n in range(start, min(start + 5000, count))]
            if as_json:
                part = ",".join(f'{{"name": "{n}", "_last-serial": 1}}' for n in names)
                await response.write((("," if start else "") + part).encode())
            else:
                await response.write("".join(
                    f'<a href="/simple/{n.lower()}/">{n}</a><br/>\n' for n in names).encode())
        await response.write(b"]}" if as_json else b"</body></html>\n")
        return response

    async def project(request: web.Request) -> web.Response:
        return web.json_response({"meta": {"api-version": "1.4"}, "name": "x", "files": []},
                                 content_type=JSON_TYPE)

    app = web.Application()
    app.router.add_get("/simple/", root)
    app.router.add_get("/simple/{name}/", project)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_pid(server: int) -> int:
    """The process that serves: the server itself, or its one child when it has workers."""
    try:
        children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    except OSError:
        children = []
    return int(children[0]) if len(children) == 1 else server


async def measure(base: str, pid: int) -> dict[str, object]:
    delays: list[float] = []
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            try:
                samples.append(rss_of(pid))
            except OSError:
                return

    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for _ in range(20):  # warm the worker up: its first requests import and open things
            async with session.get(f"{base}/health") as response:
                await response.read()
        # and its upstream client (its first request builds a TLS context, on the loop)
        async with session.get(f"{base}/simple/warm-up/", headers={"Accept": JSON_TYPE}) as r:
            await r.read()
        # the same probe with nothing else going on: what the machine's own load costs
        idle: list[float] = []
        until = time.perf_counter() + 10
        while time.perf_counter() < until:
            started = time.perf_counter()
            async with session.get(f"{base}/health") as response:
                await response.read()
            idle.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        idle.sort()
        before = rss_of(pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        done = asyncio.Event()

        async def health_loop() -> None:
            while not done.is_set():
                started = time.perf_counter()
                async with session.get(f"{base}/health") as response:
                    await response.read()
                delays.append(time.perf_counter() - started)
                if delays[-1] > 0.05:
                    slow.append((round(started - cold_start, 2), round(delays[-1] * 1000)))
                await asyncio.sleep(0.01)

        slow: list[tuple[float, int]] = []
        cold_start = time.perf_counter()
        prober = asyncio.create_task(health_loop())
        started = time.perf_counter()
        headers = {"Accept": JSON_TYPE, "Accept-Encoding": "gzip"}
        async with session.get(f"{base}/simple/", headers=headers) as response:
            first_byte = time.perf_counter() - started
            size = 0
            async for chunk in response.content.iter_chunked(1 << 20):
                size += len(chunk)
            etag = response.headers.get("ETag", "")
            status = response.status
        cold = time.perf_counter() - started
        done.set()
        await prober
        stop.set()
        sampler.join()
        await asyncio.sleep(2)
        after = rss_of(pid)
        started = time.perf_counter()
        async with session.get(f"{base}/simple/", headers=headers) as response:
            await response.read()
        warm = time.perf_counter() - started
        started = time.perf_counter()
        async with session.get(f"{base}/simple/", headers={**headers, "If-None-Match": etag}) as r:
            not_modified = r.status
        revalidated = time.perf_counter() - started
    delays.sort()
    mib = 1024 * 1024
    return {
        "status": status, "gzip_bytes": size, "cold_s": round(cold, 2),
        "cold_first_byte_s": round(first_byte, 2), "warm_s": round(warm, 3),
        "conditional_status": not_modified, "conditional_s": round(revalidated, 4),
        "rss_before_mib": round(before / mib, 1), "rss_peak_mib": round(max(samples) / mib, 1),
        "rss_peak_growth_mib": round((max(samples) - before) / mib, 1),
        "rss_after_growth_mib": round((after - before) / mib, 1),
        "health_idle_worst_ms": round(idle[-1] * 1000, 1),
        "health_idle_p99_ms": round(idle[int(len(idle) * 0.99)] * 1000, 1),
        "health_requests": len(delays),
        "health_worst_ms": round(delays[-1] * 1000, 1),
        "health_p99_ms": round(delays[int(len(delays) * 0.99)] * 1000, 1),
        "health_over_50ms": slow[:40],  # (s after the cold request began, ms)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["json", "html"], default="json",
                        help="what the upstream answers (pyproxy asks for JSON first)")
    parser.add_argument("--unsorted", action="store_true",
                        help="names not in normalised order (the slower build)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--pyproxy", default=str(Path(sys.executable).with_name("pyproxy")))
    args = parser.parse_args()
    upstream_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--_upstream", str(upstream_port),
                                 str(args.names), "1" if args.unsorted else "0",
                                 args.format])
    with tempfile.TemporaryDirectory(prefix="pyproxy-list-") as data_dir:
        server = subprocess.Popen(
            [args.pyproxy, "serve", "--data-dir", data_dir, "--port", str(port), "--workers", "1",
             "--upstream", f"http://127.0.0.1:{upstream_port}/simple/", "--log-level", args.log_level],
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.1)
            time.sleep(1)
            result = asyncio.run(measure(base, worker_pid(server.pid)))
            result.update(names=args.names, upstream_format=args.format, unsorted=args.unsorted)
            print(json.dumps(result))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            upstream.send_signal(signal.SIGTERM)
            upstream.wait(30)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--_upstream":
        _, _, port_arg, count_arg, unsorted_arg, fmt_arg = sys.argv
        serve_upstream(int(port_arg), int(count_arg), unsorted_arg == "1", fmt_arg)
    else:
        main()
