"""A fake upstream simple index (PEP 503 HTML / PEP 691 JSON) on 127.0.0.1, for tests.

Pages come from one aiohttp app at `/simple/` and `/simple/<normalized>/`; files (and their
`.metadata`) from a second app on another port, as real indexes put files on another host. Every
request is recorded, and switches change behaviour at any time, also from another thread.

Async use (pytest-aiohttp):

    async with FakeUpstream(formats="json") as upstream:
        upstream.add_file("foo", "foo-1.0.tar.gz", b"...")
        ...  # fetch upstream.index_url

Synchronous use (end-to-end tests that run pyproxy, pip or uv as subprocesses):

    with FakeUpstream.running_in_thread(formats="html") as upstream:
        upstream.stop_blocking(); ...; upstream.start_blocking()   # same ports again

It deliberately shares no code with pyproxy, so a bug there cannot hide itself here.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import quote

import orjson
from aiohttp import web
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

__all__ = ["HTML_TYPE", "JSON_TYPE", "FakeFile", "FakeUpstream", "Formats"]

Formats = Literal["json", "html", "both"]
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html; charset=utf-8"
CHUNK_SIZE = 64 * 1024
_INVERT = bytes(255 - value for value in range(256))  # wrong_bytes: same length, other bytes
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeFile:
    filename: str
    size: int
    sha256: str
    body: bytes | None  # None: generated on the fly from `seed`, never held in memory
    seed: int = 0
    requires_python: str | None = None
    yanked: bool | str = False
    metadata: bytes | None = None
    upload_time: datetime | None = None
    listed_hash: bool = True  # False: pages give no sha256 for the file or its .metadata
    listed_metadata_hash: bool = True  # False: the .metadata's sha256 is not given either way
    listed_size: bool = True  # False: JSON pages give no size
    provenance: bytes | None = None  # PEP 740: served at the file URL + ".provenance"

    @property
    def metadata_sha256(self) -> str | None:
        return None if self.metadata is None else hashlib.sha256(self.metadata).hexdigest()

    def chunks(self) -> Iterator[bytes]:
        if self.body is not None:
            for offset in range(0, len(self.body), CHUNK_SIZE):
                yield self.body[offset : offset + CHUNK_SIZE]
        else:
            yield from _generated_chunks(self.seed, self.size)


def _generated_chunks(seed: int, size: int) -> Iterator[bytes]:
    # one random block, stamped with its index so no two chunks are equal
    block = random.Random(seed).randbytes(CHUNK_SIZE)
    for index, offset in enumerate(range(0, size, CHUNK_SIZE)):
        yield (index.to_bytes(8, "big") + block[8:])[: size - offset]


@dataclass
class _Project:
    display_name: str
    files: dict[str, FakeFile] = field(default_factory=dict)
    status: str | None = None
    status_reason: str | None = None
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))


class FakeUpstream:
    def __init__(self, *, formats: Formats = "both", relative_file_urls: bool = False) -> None:
        self.formats: Formats = formats
        # True: files are served by the index app under /files/ and pages link them relatively
        self.relative_file_urls = relative_file_urls

        # switches, read on every request
        self.latency = 0.0  # seconds before any answer
        self.chunk_delay = 0.0  # seconds between 64 KiB chunks of a file body
        # (n, seconds): every body, pages and files, sent n bytes at a time, seconds apart
        self.drip: tuple[int, float] | None = None
        self.fail_status: int | None = None  # answer every request with this status
        self.fail_paths: dict[str, int] = {}  # path -> status, for those paths only
        self.redirect_paths: dict[str, str] = {}  # path -> Location of a 302, for those paths
        self.drop_connection = False  # files: reset the connection after half the body
        self.truncate_files = False  # files: full Content-Length, half the body, clean close
        self.wrong_bytes = False  # files: same length, other bytes than the hash says
        # files and .metadata: 200 with an HTML page instead (a proxy's block or login page)
        self.error_page_files = False
        self.html_content_type = HTML_TYPE
        # the root also lists this many generated names ("Project_0", ...), streamed as they
        # are generated, so a list of a million costs the fake no memory
        self.synthetic_names = 0
        self.gzip_root = False  # True: the generated root is sent gzip'd to who accepts it
        # the host absolute file URLs name: "localhost" is another host for the same server
        self.files_host = "127.0.0.1"
        self.offer_metadata = True  # False: pages offer no .metadata, and none is served
        self.serve_ranges = False  # True: files answer `Range: bytes=a-b` / `bytes=-n` with 206
        self.range_status: int | None = None  # answer every ranged file request with this
        # path -> other bytes that ranged requests of that file are cut from (a host whose
        # ranges are not of the file it serves whole)
        self.ranges_from: dict[str, bytes] = {}
        # True: .tar.gz files are sent as they are, labelled `Content-Encoding: gzip` (S3
        # objects uploaded so, Apache's AddEncoding)
        self.gzip_labelled_sdists = False

        # what happened
        self.requests: list[tuple[str, str]] = []  # (method, path), every request on both apps
        self.not_modified: list[tuple[str, str]] = []  # the requests answered 304
        # (path, Range header) of every file request with a Range (206 only with `serve_ranges`)
        self.ranged: list[tuple[str, str]] = []
        self.accepts: dict[str, str | None] = {}  # path: the Accept of its last request

        self._projects: dict[str, _Project] = {}
        self._lock = threading.Lock()  # the state may be changed from a test's thread
        self._created = datetime.now(UTC)
        self._runners: list[web.AppRunner] = []
        self._ports: tuple[int, int] | None = None  # (index, files), kept for a restart
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- content ----------------------------------------------------------------------------------

    def add_project(self, project: str) -> None:
        """A project with no files (yet)."""
        with self._lock:
            self._project(project)

    def add_file(
        self,
        project: str,
        filename: str,
        body: bytes,
        *,
        requires_python: str | None = None,
        yanked: bool | str = False,
        metadata: bytes | None = None,
        upload_time: datetime | None = None,  # None: no upload-time in JSON
        listed_hash: bool = True,
        listed_size: bool = True,
        listed_metadata_hash: bool = True,
        provenance: bytes | None = None,
    ) -> FakeFile:
        """Add or replace a file; `metadata` is served at the file URL + ".metadata", a PEP
        740 `provenance` object at the file URL + ".provenance" (and linked from the pages).
        `listed_hash`/`listed_size` False: the pages do not give its sha256 / size;
        `listed_metadata_hash` False: nor its .metadata's sha256."""
        dist = FakeFile(
            filename=filename,
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            body=body,
            requires_python=requires_python,
            yanked=yanked,
            metadata=metadata,
            upload_time=upload_time,
            listed_hash=listed_hash,
            listed_size=listed_size,
            listed_metadata_hash=listed_metadata_hash,
            provenance=provenance,
        )
        return self._put(project, dist)

    def add_generated_file(
        self,
        project: str,
        filename: str,
        size: int,
        *,
        requires_python: str | None = None,
        yanked: bool | str = False,
        metadata: bytes | None = None,
        upload_time: datetime | None = None,
    ) -> FakeFile:
        """A file of `size` deterministic bytes, streamed and never held in memory."""
        seed = int.from_bytes(hashlib.sha256(filename.encode()).digest()[:8], "big")
        digest = hashlib.sha256()
        for chunk in _generated_chunks(seed, size):  # streamed once here for the hash
            digest.update(chunk)
        dist = FakeFile(
            filename=filename,
            size=size,
            sha256=digest.hexdigest(),
            body=None,
            seed=seed,
            requires_python=requires_python,
            yanked=yanked,
            metadata=metadata,
            upload_time=upload_time,
        )
        return self._put(project, dist)

    def remove_file(self, project: str, filename: str) -> None:
        with self._lock:
            entry = self._project(project)
            del entry.files[filename]
            entry.modified = datetime.now(UTC)

    def set_status(self, project: str, status: str, reason: str | None = None) -> None:
        """PEP 792; a quarantined project's page lists no files (its file URLs still answer)."""
        with self._lock:
            entry = self._project(project)
            entry.status, entry.status_reason = status, reason
            entry.modified = datetime.now(UTC)

    def file(self, project: str, filename: str) -> FakeFile:
        return self._projects[canonicalize_name(project)].files[filename]

    def _put(self, project: str, dist: FakeFile) -> FakeFile:
        with self._lock:
            entry = self._project(project)
            entry.files[dist.filename] = dist
            entry.modified = datetime.now(UTC)
        return dist

    def _project(self, project: str) -> _Project:
        return self._projects.setdefault(canonicalize_name(project), _Project(project))

    # -- addresses --------------------------------------------------------------------------------

    @property
    def index_port(self) -> int:
        return self._bound_ports()[0]

    @property
    def files_port(self) -> int:
        return self._bound_ports()[1]

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.index_port}/simple/"

    def page_path(self, project: str) -> str:
        return f"/simple/{canonicalize_name(project)}/"

    def page_url(self, project: str) -> str:
        return f"http://127.0.0.1:{self.index_port}{self.page_path(project)}"

    def file_path(self, project: str, filename: str) -> str:
        return f"/files/{canonicalize_name(project)}/{quote(filename)}"

    def file_url(self, project: str, filename: str) -> str:
        """Absolute, whatever `relative_file_urls` says; add ".metadata" for the metadata."""
        port = self.index_port if self.relative_file_urls else self.files_port
        return f"http://{self.files_host}:{port}{self.file_path(project, filename)}"

    def _bound_ports(self) -> tuple[int, int]:
        if self._ports is None:
            raise RuntimeError("the fake upstream has not been started")
        return self._ports

    # -- counters ---------------------------------------------------------------------------------

    def count(self, path: str, method: str | None = None) -> int:
        return sum(1 for m, p in self.requests if p == path and method in (None, m))

    def not_modified_count(self, path: str | None = None) -> int:
        return sum(1 for _m, p in self.not_modified if path in (None, p))

    @property
    def total(self) -> int:
        return len(self.requests)

    def ranges_of(self, path: str) -> list[str]:
        """The Range headers of the requests for `path`."""
        return [wanted for p, wanted in self.ranged if p == path]

    def reset_counters(self) -> None:
        self.requests.clear()
        self.not_modified.clear()
        self.ranged.clear()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return bool(self._runners)

    async def start(self) -> None:
        """Listen on 127.0.0.1; ephemeral ports the first time, the same ports after a stop()."""
        if self._runners:
            return
        index_port, files_port = self._ports or (0, 0)
        index_app = self._app(files=self.relative_file_urls, pages=True)
        files_app = self._app(files=True, pages=False)
        bound: list[int] = []
        for app, port in ((index_app, index_port), (files_app, files_port)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
            await site.start()
            self._runners.append(runner)
            bound.append(runner.addresses[0][1])
        self._ports = (bound[0], bound[1])

    async def stop(self) -> None:
        """Close both listeners and every open connection; counters and content stay."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @classmethod
    @contextmanager
    def running_in_thread(
        cls, *, formats: Formats = "both", relative_file_urls: bool = False
    ) -> Iterator[FakeUpstream]:
        """Serve from a background thread with its own event loop, for synchronous tests."""
        upstream = cls(formats=formats, relative_file_urls=relative_file_urls)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-upstream", daemon=True)
        thread.start()
        upstream._thread_loop = loop
        try:
            upstream.start_blocking()
            yield upstream
        finally:
            try:
                upstream.stop_blocking()
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                loop.close()

    def start_blocking(self) -> None:
        """start(), from the test's thread, when running_in_thread."""
        self._run_in_loop(self.start())

    def stop_blocking(self) -> None:
        """stop(), from the test's thread, when running_in_thread."""
        self._run_in_loop(self.stop())

    def _run_in_loop(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._thread_loop is None:
            coroutine.close()
            raise RuntimeError("only for a FakeUpstream made by running_in_thread()")
        asyncio.run_coroutine_threadsafe(coroutine, self._thread_loop).result(timeout=30)

    # -- the apps ---------------------------------------------------------------------------------

    def _app(self, *, files: bool, pages: bool) -> web.Application:
        app = web.Application(middlewares=[self._record_and_switch])
        if pages:
            app.router.add_get("/simple", self._add_slash)
            app.router.add_get("/simple/", self._root_page)
            app.router.add_get("/simple/{project}/", self._project_page)
            app.router.add_get("/simple/{project}", self._add_slash)
        if files:
            app.router.add_get("/files/{project}/{filename}", self._file)
        return app

    @web.middleware
    async def _record_and_switch(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.accepts[request.path] = request.headers.get("Accept")
        if self.latency:
            await asyncio.sleep(self.latency)
        status = self.fail_paths.get(request.path, self.fail_status)
        if status is not None:
            return web.Response(status=status, text=f"fake upstream failure {status}\n")
        location = self.redirect_paths.get(request.path)
        if location is not None:
            raise web.HTTPFound(location)
        return await handler(request)

    async def _add_slash(self, request: web.Request) -> web.StreamResponse:
        project = request.match_info.get("project")
        location = f"/simple/{canonicalize_name(project)}/" if project else "/simple/"
        raise web.HTTPMovedPermanently(location)

    async def _root_page(self, request: web.Request) -> web.StreamResponse:
        if self.synthetic_names:
            return await self._synthetic_root(request)
        with self._lock:
            names = [project.display_name for project in self._projects.values()]
            modified = max((p.modified for p in self._projects.values()), default=self._created)
        if self._wants_json(request):
            document = {"meta": {"api-version": "1.4"}, "projects": [{"name": n} for n in names]}
            return await self._page(request, orjson.dumps(document), JSON_TYPE, modified)
        anchors = "".join(
            f'    <a href="/simple/{canonicalize_name(n)}/">{html.escape(n)}</a><br/>\n'
            for n in names
        )
        body = _html_document("Simple index", "", anchors)
        return await self._page(request, body, self.html_content_type, modified)

    async def _synthetic_root(self, request: web.Request) -> web.StreamResponse:
        count, as_json = self.synthetic_names, self._wants_json(request)
        etag = f'"synthetic-{count}-{"json" if as_json else "html"}"'
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            self.not_modified.append((request.method, request.path))
            return web.Response(status=304, headers={"ETag": etag})
        content_type = JSON_TYPE if as_json else self.html_content_type
        response = web.StreamResponse(headers={"ETag": etag, "Content-Type": content_type})
        if self.gzip_root and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        if as_json:
            await response.write(b'{"meta": {"api-version": "1.4"}, "projects": [')
        else:
            await response.write(_html_document("Simple index", "", "").split(b"</body>")[0])
        for start in range(0, count, 2000):
            names = range(start, min(start + 2000, count))
            if as_json:
                part = ",".join(f'{{"name": "Project_{n}", "_last-serial": {n}}}' for n in names)
                await response.write((("," if start else "") + part).encode())
            else:
                await response.write("".join(
                    f'    <a href="/simple/project-{n}/">Project_{n}</a><br/>\n' for n in names
                ).encode())
        await response.write(b"]}" if as_json else b"</body></html>")
        await response.write_eof()
        return response

    async def _project_page(self, request: web.Request) -> web.StreamResponse:
        raw_name = request.match_info["project"]
        name = canonicalize_name(raw_name)
        if raw_name != name:
            raise web.HTTPMovedPermanently(f"/simple/{name}/")
        with self._lock:
            project = self._projects.get(name)
            if project is None:
                raise web.HTTPNotFound(text=f"no project {name}\n")
            # PEP 792: a quarantined project offers no files
            listed = [] if project.status == "quarantined" else list(project.files.values())
            status, reason, modified = project.status, project.status_reason, project.modified
        if self._wants_json(request):
            body = self._json_page(name, listed, status, reason)
            return await self._page(request, body, JSON_TYPE, modified)
        body = self._html_page(name, listed, status, reason)
        return await self._page(request, body, self.html_content_type, modified)

    def _json_page(
        self, name: str, files: list[FakeFile], status: str | None, reason: str | None
    ) -> bytes:
        entries = []
        for dist in files:
            entry: dict[str, Any] = {
                "filename": dist.filename,
                "url": self._listed_file_url(name, dist.filename),
                "hashes": {"sha256": dist.sha256} if dist.listed_hash else {},
            }
            if dist.listed_size:
                entry["size"] = dist.size
            if dist.upload_time is not None:
                utc = dist.upload_time.astimezone(UTC)
                entry["upload-time"] = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if dist.requires_python is not None:
                entry["requires-python"] = dist.requires_python
            if dist.yanked:
                entry["yanked"] = dist.yanked
            if dist.metadata is not None and self.offer_metadata:
                listed = {"sha256": dist.metadata_sha256} if _metadata_hashed(dist) else True
                entry["core-metadata"] = listed
            if dist.provenance is not None:
                entry["provenance"] = self._listed_file_url(name, dist.filename) + ".provenance"
            entries.append(entry)
        document: dict[str, Any] = {
            "meta": {"api-version": "1.4"},
            "name": name,
            "files": entries,
            "versions": sorted({v for dist in files if (v := _version(dist.filename))}),
        }
        if status is not None:
            document["project-status"] = {"status": status, "reason": reason}
        return orjson.dumps(document)

    def _html_page(
        self, name: str, files: list[FakeFile], status: str | None, reason: str | None
    ) -> bytes:
        head = ""
        if status is not None:
            head += _meta("pypi:project-status", status)
            if reason is not None:
                head += _meta("pypi:project-status-reason", reason)
        anchors = ""
        for dist in files:
            attributes = ""
            if dist.requires_python is not None:
                attributes += f' data-requires-python="{html.escape(dist.requires_python)}"'
            if dist.yanked:
                reason_text = dist.yanked if isinstance(dist.yanked, str) else ""
                attributes += f' data-yanked="{html.escape(reason_text)}"'
            if dist.metadata is not None and self.offer_metadata:
                value = f"sha256={dist.metadata_sha256}" if _metadata_hashed(dist) else "true"
                attributes += f' data-core-metadata="{value}" data-dist-info-metadata="{value}"'
            if dist.provenance is not None:
                provenance = self._listed_file_url(name, dist.filename) + ".provenance"
                attributes += f' data-provenance="{html.escape(provenance)}"'
            url = self._listed_file_url(name, dist.filename)
            if dist.listed_hash:
                url += f"#sha256={dist.sha256}"
            text = html.escape(dist.filename)
            anchors += f'    <a href="{html.escape(url)}"{attributes}>{text}</a><br/>\n'
        return _html_document(f"Links for {name}", head, anchors)

    def _listed_file_url(self, name: str, filename: str) -> str:
        if self.relative_file_urls:  # relative to /simple/<name>/
            return f"../../files/{name}/{quote(filename)}"
        return self.file_url(name, filename)

    def _wants_json(self, request: web.Request) -> bool:
        if self.formats != "both":
            return self.formats == "json"
        return _prefers_json(request.headers.get("Accept"))

    async def _page(
        self, request: web.Request, body: bytes, content_type: str, modified: datetime
    ) -> web.StreamResponse:
        etag = f'"{hashlib.sha256(body).hexdigest()[:24]}"'
        headers = {
            "ETag": etag,
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Vary": "Accept",
        }
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            self.not_modified.append((request.method, request.path))
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = content_type  # via headers: aiohttp adds no charset this way
        if self.drip is None:
            return web.Response(body=body, headers=headers)
        return await self._send_dripping(request, body, headers)

    async def _send_dripping(
        self, request: web.Request, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        try:
            for piece in self._dripped([body]):
                await response.write(piece)
                await self._pause()
        except ConnectionError:  # the client gave up waiting
            pass
        return response

    async def _pause(self) -> None:
        if self.drip is not None:
            await asyncio.sleep(self.drip[1])

    def _dripped(self, chunks: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
        """The chunks in pieces of the drip's size (as they are, without a drip)."""
        size = self.drip[0] if self.drip is not None else 0
        for chunk in chunks:
            if not size:
                yield chunk
                continue
            for offset in range(0, len(chunk), size):
                yield chunk[offset : offset + size]

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = canonicalize_name(request.match_info["project"])
        filename = request.match_info["filename"]
        with self._lock:
            files = self._projects[name].files if name in self._projects else {}
            dist = files.get(filename)
            owner = files.get(filename.removesuffix(".metadata"))
            attested = files.get(filename.removesuffix(".provenance"))
        if self.error_page_files and (dist is not None or owner is not None):
            return web.Response(body=_ERROR_PAGE, headers={"Content-Type": HTML_TYPE})
        if dist is not None:
            if (other := self.ranges_from.get(request.path)) and "Range" in request.headers:
                return await self._send(request, iter([other]), len(other), dist.sha256)
            return await self._send(request, dist.chunks(), dist.size, dist.sha256)
        if (
            owner is not None
            and owner.metadata is not None
            and filename.endswith(".metadata")
            and self.offer_metadata
        ):
            metadata = owner.metadata
            digest = hashlib.sha256(metadata).hexdigest()
            return await self._send(request, iter([metadata]), len(metadata), digest)
        if attested is not None and attested.provenance is not None:
            body = attested.provenance
            return await self._send(request, iter([body]), len(body), hashlib.sha256(body).hexdigest())
        raise web.HTTPNotFound(text=f"no file {filename}\n")

    async def _send(
        self, request: web.Request, chunks: Iterator[bytes], size: int, sha256: str
    ) -> web.StreamResponse:
        wanted = request.headers.get("Range")
        if wanted is not None:
            self.ranged.append((request.path, wanted))
            if self.range_status is not None:
                return web.Response(status=self.range_status, text="fake upstream range failure\n")
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        response.content_length = size
        response.etag = sha256
        if self.gzip_labelled_sdists and request.path.endswith(".tar.gz"):
            response.headers["Content-Encoding"] = "gzip"
        spec = (wanted or "").strip().removeprefix("bytes=")
        if self.serve_ranges and spec and "," not in spec:
            response.headers["Accept-Ranges"] = "bytes"
            first, _, last = spec.partition("-")
            start = max(size - int(last), 0) if not first else int(first)
            end = size - 1 if not first or not last else min(int(last), size - 1)
            if start > end:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            response.set_status(206)
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            response.content_length = end - start + 1
            whole, size = chunks, end - start + 1  # below: the range is the body

            def sliced() -> Iterator[bytes]:
                position = 0
                for chunk in whole:
                    piece = chunk[max(start - position, 0) : end + 1 - position]
                    position += len(chunk)
                    if piece:
                        yield piece
                    if position > end:
                        return

            chunks = sliced()
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        # the switches are read once: one body is either whole or broken, not both
        cut = self.drop_connection or self.truncate_files
        wrong, delay = self.wrong_bytes, self.chunk_delay
        limit = size // 2 if cut else size
        sent = 0
        dripping = self.drip is not None
        try:
            for chunk in self._dripped(chunks):
                chunk = chunk[: limit - sent]
                await response.write(chunk.translate(_INVERT) if wrong else chunk)
                sent += len(chunk)
                if sent >= limit:
                    break
                if dripping:
                    await self._pause()
                elif delay:
                    await asyncio.sleep(delay)
        except ConnectionError:  # the client gave up (e.g. on a slow body)
            return response
        if cut and request.transport is not None:
            if self.drop_connection:
                request.transport.abort()  # a reset: anything still buffered is lost too
            else:
                request.transport.close()  # flushes, then a clean close: an early EOF
        return response


_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head>\n"
    b"<body><h1>Access denied</h1><p>Please sign in to continue.</p></body></html>\n"
)


def _html_document(title: str, head: str, anchors: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'{_meta("pypi:repository-version", "1.4")}{head}'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"{anchors}  </body>\n</html>\n"
    ).encode()


def _meta(name: str, content: str) -> str:
    return f'    <meta name="{name}" content="{html.escape(content)}">\n'


_JSON_ACCEPTS = frozenset(
    {JSON_TYPE, "application/vnd.pypi.simple.latest+json", "application/*", "*/*"}
)
_HTML_ACCEPTS = frozenset(
    {
        "text/html",
        "application/vnd.pypi.simple.v1+html",
        "application/vnd.pypi.simple.latest+html",
        "application/*",
        "text/*",
        "*/*",
    }
)


def _prefers_json(accept: str | None) -> bool:
    """Enough of RFC 9110 for the clients' Accept strings. As PyPI does: no Accept, `*/*` or a
    tie means HTML."""
    if not accept:
        return False
    json_q = html_q = 0.0
    for entry in accept.split(","):
        media_type, *params = (part.strip().lower() for part in entry.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media_type in _JSON_ACCEPTS:
            json_q = max(json_q, q)
        if media_type in _HTML_ACCEPTS:
            html_q = max(html_q, q)
    return json_q > html_q


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def _version(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return None


def _metadata_hashed(dist: FakeFile) -> bool:
    return dist.listed_hash and dist.listed_metadata_hash
