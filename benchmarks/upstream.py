"""The fake distant upstream of the benchmark: an aiohttp server over the corpus tree.

Every request waits `--latency-ms` before it is answered (a distant index) and is counted per
path. Project pages are PEP 691 JSON or PEP 503 HTML by the Accept header; files are sent with
sendfile. `GET /_bench/counts` returns {path: count}, `GET /_bench/kinds` {kind: count} (kind:
GET, HEAD, range or metadata); neither is counted or delayed. `--trace FILE` appends a line per
request: when it arrived and when it was answered (epoch seconds), its kind, path and Range.

`--html-only` makes it the real-world-shaped index many private and GPU indexes are: HTML pages
whatever the Accept header, no core metadata (no `data-core-metadata`, `.metadata` is 404) and
no ranges (a `Range` request gets the whole file, no `Accept-Ranges`). `--project-list DIR`
serves `/simple/` from DIR/index.html and DIR/index.json (and their `.gz`, with sendfile)
instead of the corpus' own list: the benchmark's million names.

    python benchmarks/upstream.py --root TREE --port 0 --latency-ms 50 [--html-only]
    # prints "upstream: listening on http://127.0.0.1:PORT" on stderr once it accepts requests

Self-contained (aiohttp only): it shares no code with pyproxy or the rest of the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from aiohttp import web

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("application/vnd.pypi.simple.v1+html", "text/html")
COUNTS = web.AppKey("counts", collections.Counter)
KINDS = web.AppKey("kinds", collections.Counter)
METADATA_SUFFIX = ".metadata"
_METADATA_ATTRS = re.compile(rb' data-(?:core|dist-info)-metadata="[^"]*"')


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


def request_kind(request: web.Request) -> str:
    if request.path.endswith(METADATA_SUFFIX):
        return "metadata"
    if request.method == "GET" and "Range" in request.headers:
        return "range"
    return request.method


async def whole_file(request: web.Request, path: Path, headers: dict) -> web.StreamResponse:
    """The whole file whatever the request's Range says, and no Accept-Ranges."""
    response = web.StreamResponse(headers=headers)
    response.content_length = path.stat().st_size
    await response.prepare(request)
    if request.method != "HEAD":
        with path.open("rb") as body:
            while chunk := body.read(256 * 1024):
                await response.write(chunk)
    await response.write_eof()
    return response


def build_app(root: Path, latency: float, *, html_only: bool = False,
              project_list: Path | None = None, trace: TextIO | None = None) -> web.Application:
    pages: dict[tuple[str, bool], bytes] = {}  # (page dir, json) -> body, read once

    @web.middleware
    async def count_and_delay(request: web.Request, handler):
        if request.path.startswith("/_bench/"):
            return await handler(request)
        request.app[COUNTS][request.path] += 1
        request.app[KINDS][request_kind(request)] += 1
        arrived = time.time()
        if latency:
            await asyncio.sleep(latency)
        response = await handler(request)
        if trace is not None:  # arrival, answer (headers sent or body written), what
            print(f"{arrived:.4f} {time.time():.4f} {request_kind(request)} {request.path}"
                  f" {request.headers.get('Range', '-')}", file=trace, flush=True)
        return response

    async def page(request: web.Request) -> web.StreamResponse:
        project = request.match_info.get("project", "")
        if project and (root / "simple" / project).resolve().parent != (root / "simple").resolve():
            raise web.HTTPNotFound()
        as_json = not html_only and wants_json(request.headers.get("Accept", ""))
        content_type = JSON_TYPE if as_json else "text/html; charset=utf-8"
        if not project and project_list is not None:  # big: from disk, gzip'd twin if accepted
            path = project_list / ("index.json" if as_json else "index.html")
            return web.FileResponse(path, headers={"Content-Type": content_type, "Vary": "Accept"})
        key = (project, as_json)
        if key not in pages:
            path = root / "simple" / project / ("index.json" if as_json else "index.html")
            if not path.is_file():
                raise web.HTTPNotFound(text=f"no project {project}\n")
            body = path.read_bytes()
            pages[key] = _METADATA_ATTRS.sub(b"", body) if html_only else body
        return web.Response(body=pages[key], headers={"Content-Type": content_type,
                                                      "Vary": "Accept"})

    async def add_slash(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(request.path + "/")

    async def file(request: web.Request) -> web.StreamResponse:
        project, filename = request.match_info["project"], request.match_info["filename"]
        path = root / "files" / project / filename
        if "/" in project or "/" in filename or ".." in (project, filename) or not path.is_file():
            raise web.HTTPNotFound()
        if html_only and filename.endswith(METADATA_SUFFIX):
            raise web.HTTPNotFound()
        headers = {"Content-Type": "application/octet-stream"}
        if html_only:
            return await whole_file(request, path, headers)
        return web.FileResponse(path, headers=headers)

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(dict(request.app[COUNTS]))

    async def kinds(request: web.Request) -> web.Response:
        return web.json_response(dict(request.app[KINDS]))

    app = web.Application(middlewares=[count_and_delay])
    app[COUNTS] = collections.Counter()
    app[KINDS] = collections.Counter()
    app.router.add_get("/simple/", page)
    app.router.add_get("/simple/{project}/", page)
    app.router.add_get("/simple/{project}", add_slash)
    app.router.add_get("/files/{project}/{filename}", file)
    app.router.add_get("/_bench/counts", counts)
    app.router.add_get("/_bench/kinds", kinds)
    return app


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
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
    parser.add_argument("--html-only", action="store_true",
                        help="HTML pages only, no core metadata, no ranges")
    parser.add_argument("--project-list", type=Path,
                        help="serve /simple/ from DIR/index.{html,json} (and .gz)")
    parser.add_argument("--trace", type=Path,
                        help="append one line per request to this file: arrival and answer "
                             "time (epoch seconds), kind, path, Range")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    trace = args.trace.open("a") if args.trace else None
    app = build_app(args.root.resolve(), args.latency_ms / 1000, html_only=args.html_only,
                    project_list=args.project_list.resolve() if args.project_list else None,
                    trace=trace)
    coroutine = _serve(app, args.port)
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
