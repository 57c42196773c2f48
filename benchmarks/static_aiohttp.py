"""The framework's own ceiling: the corpus tree served by bare aiohttp on uvloop, as nginx
serves it (pages by Accept, their .gz twins to clients that accept gzip, files from disk), in
PROCESSES processes sharing one port, with no access log, middleware or hook.

Whatever pyproxy does per request comes on top of what this does; its req/s against this row
says how much of the gap to nginx is pyproxy's own. Run by benchmarks/servers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from pathlib import Path

import uvloop
from aiohttp import web

JSON = "application/vnd.pypi.simple.v1+json"


def load_pages(root: Path) -> dict[tuple[str, str, bool], tuple[bytes, str]]:
    """(project, "html" | "json", gzip) -> (body, content type), read once at start."""
    pages = {}
    for directory in (root / "simple").iterdir():
        for ext, content_type in (("html", "text/html"), ("json", JSON)):
            for gzipped in (False, True):
                path = directory / f"index.{ext}{'.gz' if gzipped else ''}"
                if path.exists():
                    pages[(directory.name, ext, gzipped)] = (path.read_bytes(), content_type)
    return pages


def build_app(root: Path) -> web.Application:
    pages = load_pages(root)
    files = (root / "files").resolve()

    async def page(request: web.Request) -> web.StreamResponse:
        ext = "json" if JSON in request.headers.get("Accept", "") else "html"
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        found = pages.get((request.match_info["project"], ext, gzipped))
        if found is None and gzipped:
            found, gzipped = pages.get((request.match_info["project"], ext, False)), False
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        headers = {"Vary": "Accept"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, content_type=content_type, headers=headers)

    async def file(request: web.Request) -> web.StreamResponse:
        path = (files / request.match_info["path"]).resolve()
        if not path.is_relative_to(files) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def root(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="<!DOCTYPE html><html><body></body></html>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/simple/{project}/", page)
    app.router.add_get("/simple/", root)
    app.router.add_get("/files/{path:.+}", file)
    return app


def serve(root: Path, sock: socket.socket) -> None:
    async def main() -> None:
        runner = web.AppRunner(build_app(root), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    # one listening socket, inherited: the kernel hands each connection to one process
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            serve(args.root, sock)
            os._exit(0)
        children.append(pid)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    for pid in children:  # stopped with its session (servers.Proc.stop)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
