"""The fake distant upstream of the benchmark: an aiohttp server over the corpus tree.

Every request waits `--latency-ms` before it is answered (a distant index) and is counted per
path. Project pages are PEP 691 JSON or PEP 503 HTML by the Accept header; files are sent with
sendfile. `GET /_bench/counts` returns {path: count} (itself not counted or delayed).

    python benchmarks/upstream.py --root TREE --port 0 --latency-ms 50
    # prints "upstream: listening on http://127.0.0.1:PORT" on stderr once it accepts requests

Self-contained (aiohttp only): it shares no code with pyproxy or the rest of the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path

from aiohttp import web

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("application/vnd.pypi.simple.v1+html", "text/html")
COUNTS = web.AppKey("counts", collections.Counter)


def wants_json(accept: str) -> bool:
    """JSON when its q-value is positive and not below the best HTML type's (ties: JSON)."""
    quality = {}
    for part in accept.split(","):
        media, *params = (item.strip() for item in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = q
    json_q = quality.get(JSON_TYPE, 0.0)
    html_q = max([quality.get(t, 0.0) for t in HTML_TYPES] + [quality.get("*/*", 0.0)])
    return json_q > 0 and json_q >= html_q


def build_app(root: Path, latency: float) -> web.Application:
    pages: dict[tuple[str, bool], bytes] = {}  # (page dir, json) -> body, read once

    @web.middleware
    async def count_and_delay(request: web.Request, handler):
        if not request.path.startswith("/_bench/"):
            request.app[COUNTS][request.path] += 1
            if latency:
                await asyncio.sleep(latency)
        return await handler(request)

    async def page(request: web.Request) -> web.StreamResponse:
        project = request.match_info.get("project", "")
        if project and (root / "simple" / project).resolve().parent != (root / "simple").resolve():
            raise web.HTTPNotFound()
        as_json = wants_json(request.headers.get("Accept", ""))
        key = (project, as_json)
        if key not in pages:
            path = root / "simple" / project / ("index.json" if as_json else "index.html")
            if not path.is_file():
                raise web.HTTPNotFound(text=f"no project {project}\n")
            pages[key] = path.read_bytes()
        content_type = JSON_TYPE if as_json else "text/html; charset=utf-8"
        return web.Response(body=pages[key], headers={"Content-Type": content_type,
                                                      "Vary": "Accept"})

    async def add_slash(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(request.path + "/")

    async def file(request: web.Request) -> web.StreamResponse:
        project, filename = request.match_info["project"], request.match_info["filename"]
        path = root / "files" / project / filename
        if "/" in project or "/" in filename or ".." in (project, filename) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(dict(request.app[COUNTS]))

    app = web.Application(middlewares=[count_and_delay])
    app[COUNTS] = collections.Counter()
    app.router.add_get("/simple/", page)
    app.router.add_get("/simple/{project}/", page)
    app.router.add_get("/simple/{project}", add_slash)
    app.router.add_get("/files/{project}/{filename}", file)
    app.router.add_get("/_bench/counts", counts)
    return app


async def _serve(root: Path, port: int, latency: float) -> None:
    runner = web.AppRunner(build_app(root, latency), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"upstream: listening on http://127.0.0.1:{bound}", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="corpus tree (simple/, files/)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    coroutine = _serve(args.root.resolve(), args.port, args.latency_ms / 1000)
    try:
        if uvloop is not None:
            uvloop.run(coroutine)
        else:
            asyncio.run(coroutine)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
