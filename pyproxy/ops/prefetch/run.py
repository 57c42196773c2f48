"""`pyproxy prefetch`: warm a running pyproxy from requirements files or lock files.

Nothing is resolved here: requirements go to pip's own resolver (resolve.py) pointed at pyproxy;
lock files (locks.py) already name every file. Each file is then downloaded through pyproxy's
`/files/{project}/{filename}` route, streamed into hashes and thrown away: the point is that
pyproxy keeps a copy. A file pyproxy already holds with the expected sha256 answers a
conditional request with 304, so a second run moves no bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyproxy.model import normalize
from pyproxy.ops.prefetch.locks import LockContents, Pinned, PrefetchError, read_lock
from pyproxy.ops.prefetch.progress import Outcome, Progress
from pyproxy.ops.prefetch.resolve import ResolutionFailed, resolve_for
from pyproxy.ops.prefetch.targets import Target, for_targets
from pyproxy.repository.http import redact
from pyproxy.units import human_size

CACHE_STATUS = "X-Pyproxy-Cache"  # set by pyproxy.web.files: "hit" or "miss"
DOWNLOADS = 4  # files fetched at once
RESOLVERS = 2  # pip processes at once (each one is mostly CPU)
_CHUNK = 256 * 1024


def files_url(base: str, project: str, filename: str) -> str:
    """pyproxy's download route for a file (the same URL its pages link to)."""
    return f"{base}/files/{normalize(project)}/{urllib.parse.quote(filename, safe='')}"


@dataclass
class Summary:
    fetched: int = 0
    fetched_bytes: int = 0
    cached: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    skipped: list[str] = field(default_factory=list)
    left_out: int = 0  # lock files for no target

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        lines = [(
            f"{self.fetched} file(s) fetched ({human_size(self.fetched_bytes)}), "
            f"{self.cached} already cached, {len(self.failures)} failed"
        )]
        if self.left_out:
            lines.append(f"left out {self.left_out} file(s) of the lock files that no target needs"
                         " (--platform, --python-version, --only-binary)")
        if self.skipped:
            entries = "entry" if len(self.skipped) == 1 else "entries"
            lines.append(f"skipped {len(self.skipped)} {entries} that name no index file:")
            lines += [f"  {why}" for why in self.skipped]
        if self.failures:
            lines.append("failures:")
            for what, why in self.failures:
                first, *rest = why.splitlines() or [""]
                lines.append(f"  {what}: {first}")
                lines += [f"    {line}" for line in rest]
        return lines


@dataclass
class Request:
    base: str  # pyproxy's origin, no trailing slash
    requirements: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)
    targets: list[Target] = field(default_factory=lambda: [Target()])
    only_binary: list[str] = field(default_factory=list)


class _Run:
    def __init__(self, request: Request, progress: Progress) -> None:
        self.request = request
        self.progress = progress
        self.summary = Summary()
        self.seen: set[tuple[Any, ...]] = set()
        self.downloads = asyncio.Semaphore(DOWNLOADS)
        self.tasks: list[asyncio.Task[None]] = []

    def schedule(self, session: Any, files: Iterable[Pinned]) -> None:
        fresh = [p for p in files if p.key not in self.seen]
        self.seen.update(p.key for p in fresh)
        self.progress.add_files(len(fresh))
        for pinned in fresh:
            self.tasks.append(asyncio.create_task(self.fetch(session, pinned)))

    async def fetch(self, session: Any, pinned: Pinned) -> None:
        async with self.downloads:
            outcome, size, reason = await self._fetch(session, pinned)
        if outcome == "fetched":
            self.summary.fetched += 1
            self.summary.fetched_bytes += size
        elif outcome == "cached":
            self.summary.cached += 1
        else:
            self.summary.failures.append((pinned.label, reason))
        self.progress.done(pinned, outcome, size, reason)

    async def _fetch(self, session: Any, pinned: Pinned) -> tuple[Outcome, int, str]:
        import aiohttp

        url = files_url(self.request.base, pinned.project, pinned.filename)
        headers = {}
        if "sha256" in pinned.hashes:
            # pyproxy's ETag is the file's sha256: 304 means it holds exactly this file
            headers["If-None-Match"] = f'"{pinned.hashes["sha256"]}"'
        try:
            async with session.get(url, headers=headers) as response:
                if response.status == 304:
                    return "cached", 0, ""
                if response.status != 200:
                    return "failed", 0, f"HTTP {response.status}: {await _message(response)}"
                digests = {a: hashlib.new(a) for a in pinned.hashes
                           if a in hashlib.algorithms_available}
                size = 0
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    self.progress.advance_bytes(len(chunk))
                hit = response.headers.get(CACHE_STATUS) == "hit"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "failed", 0, f"download broke off: {_why(exc)}"
        for algorithm, digest in digests.items():
            if digest.hexdigest() != pinned.hashes[algorithm]:
                return "failed", size, (f"hash mismatch: {algorithm} {digest.hexdigest()}, "
                                        f"expected {pinned.hashes[algorithm]}")
        return ("cached" if hit else "fetched"), size, ""

    async def resolve(self, session: Any, target: Target, gate: asyncio.Semaphore,
                      report: Path) -> None:
        request = self.request
        async with gate:
            self.progress.note(f"resolving for {target.label} …")
            try:
                contents = await resolve_for(
                    f"{request.base}/simple/", target, report, request.requirements,
                    request.constraints, request.only_binary,
                )
            except ResolutionFailed as exc:
                self.summary.failures.append((f"resolution for {target.label}", str(exc)))
                self.progress.note(f"resolution for {target.label} failed")
                return
        self.progress.note(f"resolved for {target.label}: {len(contents.files)} file(s)")
        self.summary.skipped += [s for s in contents.skipped if s not in self.summary.skipped]
        self.schedule(session, contents.files)

    async def run(self, locks: Sequence[LockContents]) -> Summary:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=300)
        # trust_env: the same proxy settings pip follows
        async with aiohttp.ClientSession(timeout=timeout, trust_env=True,
                                         auto_decompress=False) as session:
            await self._check_reachable(session)
            self.progress.start()  # only now: a bad --url leaves no empty bar behind
            for contents in locks:
                self.summary.skipped += contents.skipped
                self.summary.left_out += contents.left_out
                self.schedule(session, contents.files)
            if self.request.requirements:
                gate = asyncio.Semaphore(RESOLVERS)
                with tempfile.TemporaryDirectory(prefix="pyproxy-prefetch-") as workdir:
                    await asyncio.gather(*(
                        self.resolve(session, target, gate, Path(workdir) / f"report-{n}.json")
                        for n, target in enumerate(self.request.targets)
                    ))
            while self.tasks:  # resolutions may add downloads until the last one is done
                pending, self.tasks = self.tasks, []
                await asyncio.gather(*pending)
        return self.summary

    async def _check_reachable(self, session: Any) -> None:
        import aiohttp

        try:
            async with session.get(self.request.base + "/",
                                   timeout=aiohttp.ClientTimeout(total=15)) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PrefetchError(f"cannot reach pyproxy at {redact(self.request.base)}: "
                                f"{_why(exc)}") from None
        if response.status >= 500:
            raise PrefetchError(f"pyproxy at {redact(self.request.base)} answers "
                                f"HTTP {response.status}")


async def _message(response: Any) -> str:
    """pyproxy's one-line error text (its reason phrase when the body is empty)."""
    import aiohttp

    try:
        body = (await response.content.read(2000)).decode("utf-8", "replace").strip()
    except (aiohttp.ClientError, TimeoutError):  # a courtesy: the status says what failed
        body = ""
    return body.splitlines()[0] if body else (response.reason or "")


def _why(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, ConnectionRefusedError):
            return "connection refused (is `pyproxy serve` running there?)"
        if error.errno is not None and error.errno > 0:
            return os.strerror(error.errno).lower()
        return error.strerror or str(error)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def normalize_base(url: str) -> str:
    """http(s)://host[:port][/prefix], without a trailing slash or a /simple/ suffix."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrefetchError(f"--url {url!r} is not an http:// or https:// URL")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/simple")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def prefetch(request: Request, progress: Progress) -> Summary:
    """Read the locks, resolve the requirements, fetch every file; failures are in the
    summary, bad input and an unreachable pyproxy raise PrefetchError."""
    for path in [*request.requirements, *request.constraints]:
        if not Path(path).is_file():
            raise PrefetchError(f"{path}: no such file")
    locks = [for_targets(read_lock(path), request.targets, request.only_binary)
             for path in request.locks]
    if any(t.foreign for t in request.targets) and request.requirements and not any(
        ":all:" in spec.split(",") for spec in request.only_binary
    ):
        raise PrefetchError(
            "pip resolves for another --platform/--python-version/--implementation/--abi only "
            "from wheels: add --only-binary :all:"
        )
    try:
        return asyncio.run(_Run(request, progress).run(locks))
    finally:
        progress.close()
