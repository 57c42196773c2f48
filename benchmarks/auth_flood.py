"""A flood of wrong Basic passwords against a token-authenticated reader (issue 14, item 6).

    .venv/bin/python benchmarks/auth_flood.py [--seconds 5] [--flooders 16] [--workers 1]

Starts `pyproxy serve --no-upstream` with `[auth] read = "authenticated"` on a fresh data dir
(user `alice`, one API token, one small private wheel), then measures one token client's median
latency downloading that wheel (sequential GETs on one keep-alive connection; serving a file
opens it in the default thread pool, which is what a password flood used to fill):

- baseline: nothing else going on;
- flood: `--flooders` connections from another process send random passwords for alice as fast
  as they are answered, with the per-address failure limit at its default;
- flood, no limit: the same with `password_failures_per_minute = 0`, so every wrong password
  costs a real scrypt and only the password pool stands between the flood and the reader.

Prints each phase's median and p90, the flood's answers by status, and flood ÷ baseline (the
goal: at most 2). Asserts nothing; not part of the test suite. Every process it starts runs in
its own session and is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)  # run as a script: import this directory as the `benchmarks` package
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.measure import median
from benchmarks.servers import Proc, clean_env, wait_http
from tests.dists import make_wheel
from tests.e2e.clients import raw_upload

USER, PASSWORD = "alice", "alice-secret-pw"
PROJECT = "bench-auth"
WHEEL = "bench_auth-1.0-py3-none-any.whl"
FILE_PATH = f"/files/{PROJECT}/{WHEEL}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def pyproxy_command() -> list[str]:
    exe = REPO / ".venv" / "bin" / "pyproxy"
    return [str(exe)] if exe.exists() else [shutil.which("pyproxy") or "pyproxy"]


def cli(data: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*pyproxy_command(), *args, "--data-dir", str(data)], input=stdin,
                          capture_output=True, text=True, env=clean_env(), cwd=data, check=True)
    return done.stdout.strip()


def start(work: Path, name: str, data: Path, workers: int, env: dict[str, str]) -> tuple[Proc, str]:
    proc = Proc(name, [*pyproxy_command(), "serve", "--host", "127.0.0.1", "--port", "0",
                       "--data-dir", data, "--no-upstream", "--workers", str(workers),
                       "--log-level", "warning"],
                work / "logs", env=clean_env({"PYPROXY_AUTH_READ": "authenticated", **env}),
                cwd=data).start()
    origin = proc.wait_for_output(r"pyproxy: listening on (http://127\.0\.0\.1:\d+)").group(1)
    wait_http(origin + "/health", proc)
    return proc, origin


def reader(origin: str, token: str, seconds: float) -> tuple[list[float], Counter[int]]:
    """Sequential token-authenticated downloads on one keep-alive connection: latencies in ms."""
    host, port = origin.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": basic("__token__", token)}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            connection.request("GET", FILE_PATH, headers=headers)
            response = connection.getresponse()
            response.read()
            latencies.append((time.perf_counter() - began) * 1000)
            statuses[response.status] += 1
    finally:
        connection.close()
    return latencies, statuses


async def _flood(origin: str, seconds: float, connections: int) -> dict[str, int]:
    import aiohttp

    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            headers = {"Authorization": basic(USER, secrets.token_hex(8))}
            try:
                async with session.get(origin + "/simple/", headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(connections)))
    return {str(status): count for status, count in sorted(statuses.items())}


def flooding(origin: str, seconds: float, connections: int, work: Path) -> subprocess.Popen:
    """The flood in a process of its own, so it does not share the reader's GIL."""
    out = (work / "flood.json").open("w")
    return subprocess.Popen(
        [sys.executable, __file__, "--flood-child", origin, str(seconds), str(connections)],
        stdout=out, env=clean_env(), start_new_session=True,
    )


def phase(origin: str, token: str, seconds: float, flooders: int, work: Path) -> dict:
    flood = flooding(origin, seconds + 1, flooders, work) if flooders else None
    try:
        if flood is not None:
            time.sleep(1.0)  # let the flood fill the queue first
        latencies, statuses = reader(origin, token, seconds)
    finally:
        if flood is not None:
            flood.wait(seconds + 60)
    ordered = sorted(latencies)
    result = {
        "requests": len(latencies),
        "median_ms": median(latencies),
        "p90_ms": ordered[int(len(ordered) * 0.9)] if ordered else None,
        "statuses": {str(k): v for k, v in statuses.items()},
    }
    if flood is not None:
        result["flood"] = json.loads((work / "flood.json").read_text() or "{}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each phase (default 5)")
    parser.add_argument("--flooders", type=int, default=16, help="flood connections (default 16)")
    parser.add_argument("--workers", type=int, default=1, help="pyproxy workers (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers here")
    parser.add_argument("--flood-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood_child:
        origin, seconds, connections = args.flood_child
        print(json.dumps(asyncio.run(_flood(origin, float(seconds), int(connections)))))
        return 0

    work = Path(tempfile.mkdtemp(prefix="pyproxy-auth-flood-"))
    data = work / "data"
    data.mkdir()
    cli(data, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    token = cli(data, "token", "create", USER)
    results: dict[str, dict] = {}
    cases = [("default limits", {}), ("no failure limit", {"PYPROXY_AUTH_PASSWORD_FAILURES_PER_MINUTE": "0"})]
    try:
        for label, env in cases:
            proc, origin = start(work, label.replace(" ", "-"), data, args.workers, env)
            try:
                if not results:
                    wheel = make_wheel(work / "dist", PROJECT, "1.0")
                    uploaded = raw_upload(origin + "/legacy/", wheel, USER, PASSWORD)
                    assert uploaded.status == 200, str(uploaded)
                reader(origin, token, 0.5)  # warm: the token's verification is remembered
                if not results:
                    results["baseline"] = phase(origin, token, args.seconds, 0, work)
                results[f"flood, {label}"] = phase(origin, token, args.seconds, args.flooders, work)
            finally:
                proc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["baseline"]["median_ms"]
    print(f"token reader downloading {WHEEL}, {args.workers} worker(s), {args.flooders} flood connections,"
          f" {args.seconds:g} s per phase")
    for label, result in results.items():
        ratio = "" if label == "baseline" or not base else f"  ratio {result['median_ms'] / base:.2f}x"
        flood = f"  flood answers {result['flood']}" if "flood" in result else ""
        print(f"  {label:28} median {result['median_ms']:8.2f} ms  p90 {result['p90_ms']:8.2f} ms"
              f"  ({result['requests']} requests {result['statuses']}){ratio}{flood}")
        if base:
            result["ratio"] = result["median_ms"] / base
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
