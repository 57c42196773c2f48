"""`pyproxy prefetch`: warm a running pyproxy from requirements files or lock files.

Nothing is resolved here: requirements go to pip's own resolver (`pip install --dry-run --report`)
pointed at pyproxy, once per target platform/Python; lock files already name every file. Each
file is then downloaded through pyproxy's `/files/{project}/{filename}` route, streamed into
hashes and thrown away: the point is that pyproxy keeps a copy. A file pyproxy already holds with
the expected sha256 answers a conditional request with 304, so a second run moves no bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import sys
import tempfile
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pyproxy.model import NormalizedName, normalize
from pyproxy.units import human_size

CACHE_STATUS = "X-Pyproxy-Cache"  # set by pyproxy.web.files: "hit" or "miss"
DOWNLOADS = 4  # files fetched at once
RESOLVERS = 2  # pip processes at once (each one is mostly CPU)
_CHUNK = 256 * 1024
_STDERR_TAIL = 12  # lines of pip's stderr kept in a failure


class PrefetchError(Exception):
    """Bad input or an unreachable pyproxy: one line, exit status 1."""


# ------------------------------------------------------------------------------ what to fetch


@dataclass(frozen=True)
class Pinned:
    """One distribution file to fetch through pyproxy, with the hashes it must have."""

    project: str  # normalized
    filename: str
    hashes: Mapping[str, str] = field(default_factory=dict)  # algorithm -> lowercase hex

    @property
    def key(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return self.project, self.filename, tuple(sorted(self.hashes.items()))

    @property
    def label(self) -> str:
        return f"{self.project}/{self.filename}"


@dataclass
class LockContents:
    files: list[Pinned] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries that name no index file, why


def files_url(base: str, project: str, filename: str) -> str:
    """pyproxy's download route for a file (the same URL its pages link to)."""
    return f"{base}/files/{normalize(project)}/{urllib.parse.quote(filename, safe='')}"


def _url_filename(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def _is_remote(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def _hash_pair(spec: str, where: str) -> tuple[str, str]:
    """uv.lock's "sha256:HEX" (pip's "sha256=HEX" too)."""
    algorithm, sep, digest = spec.replace("=", ":", 1).partition(":")
    if not sep or not digest:
        raise PrefetchError(f"{where}: {spec!r} is not a hash such as sha256:<hex>")
    return algorithm.lower(), digest.lower()


def _package_files(package: object, where: str) -> tuple[NormalizedName, list[dict[str, Any]]]:
    """A lock's package entry: its name, and its `sdist` and `wheels` tables (both lock formats
    spell them so)."""
    if not isinstance(package, dict) or not isinstance(package.get("name"), str):
        raise PrefetchError(f"{where}: no name")
    entries = [package["sdist"]] if isinstance(package.get("sdist"), dict) else []
    wheels = package.get("wheels", [])
    entries += [w for w in wheels if isinstance(w, dict)] if isinstance(wheels, list) else []
    return normalize(package["name"]), entries


def parse_uv_lock(text: str, source: str = "uv.lock") -> LockContents:
    """Files pinned by a uv.lock: `[[package]]` with `sdist = {url, hash}` and
    `wheels = [{url, hash}]`. Workspace, editable, path and git packages have no URL there."""
    document = _toml(text, source)
    packages = document.get("package", [])
    if not isinstance(packages, list):
        raise PrefetchError(f"{source}: 'package' is not an array of tables")
    contents = LockContents()
    for index, package in enumerate(packages):
        where = f"{source}: package[{index}]"
        name, entries = _package_files(package, where)
        src = package.get("source", {})
        remote = [e for e in entries if isinstance(e.get("url"), str) and _is_remote(e["url"])]
        if not remote:
            kind = next(iter(src), "no source") if isinstance(src, dict) else "no source"
            contents.skipped.append(f"{name}: {kind} package, no index file")
            continue
        if isinstance(src, dict) and "registry" not in src:
            # a direct URL: not a file of any index, so pyproxy cannot serve it
            contents.skipped.append(f"{name}: direct URL {next(iter(src), '')}, not from an index")
            continue
        for entry in remote:
            spec = entry.get("hash")
            hashes = dict([_hash_pair(spec, f"{where} ({name})")]) if isinstance(spec, str) else {}
            contents.files.append(Pinned(name, _url_filename(entry["url"]), hashes))
    return contents


def parse_pylock(text: str, source: str = "pylock.toml") -> LockContents:
    """Files pinned by a PEP 751 lock: `[[packages]]` with `sdist` and `wheels` entries
    (`name` or a `url`/`path` to take it from, `hashes = {sha256 = ...}`)."""
    document = _toml(text, source)
    version = document.get("lock-version")
    if not isinstance(version, str) or not version.startswith("1"):
        raise PrefetchError(f"{source}: lock-version {version!r} is not a supported PEP 751 "
                            "version (1.x)")
    packages = document.get("packages", [])
    if not isinstance(packages, list):
        raise PrefetchError(f"{source}: 'packages' is not an array of tables")
    contents = LockContents()
    for index, package in enumerate(packages):
        where = f"{source}: packages[{index}]"
        name, entries = _package_files(package, where)
        if not entries:
            kind = next((k for k in ("vcs", "directory", "archive") if k in package), "nothing")
            contents.skipped.append(f"{name}: {kind}, not a file of an index")
            continue
        for entry in entries:
            url = entry.get("url")
            filename = entry.get("name") or (
                _url_filename(url) if isinstance(url, str) else
                str(entry.get("path", "")).replace("\\", "/").rsplit("/", 1)[-1]
            )
            if not filename:
                raise PrefetchError(f"{where} ({name}): a file with neither name, url nor path")
            hashes = entry.get("hashes")
            if not isinstance(hashes, dict) or not hashes or not all(
                isinstance(v, str) for v in hashes.values()
            ):
                raise PrefetchError(f"{where} ({name}): {filename}: no hashes table")
            contents.files.append(
                Pinned(name, filename, {k.lower(): v.lower() for k, v in hashes.items()})
            )
    return contents


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PrefetchError(f"{source}: not valid TOML: {exc}") from None


def read_lock(path: Path) -> LockContents:
    """A uv.lock or a pylock.toml (pylock.*.toml), told apart by name, else by content."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrefetchError(f"{path}: no such lock file") from None
    except UnicodeDecodeError:
        raise PrefetchError(f"{path}: not a TOML lock file (not UTF-8)") from None
    except OSError as exc:
        raise PrefetchError(f"{path}: cannot be read: {exc.strerror}") from None
    name = path.name
    if name == "pylock.toml" or (name.startswith("pylock.") and name.endswith(".toml")):
        return parse_pylock(text, str(path))
    if name.endswith(".lock"):
        return parse_uv_lock(text, str(path))
    document = _toml(text, str(path))
    if "lock-version" in document:
        return parse_pylock(text, str(path))
    if "package" in document:
        return parse_uv_lock(text, str(path))
    raise PrefetchError(f"{path}: neither a uv.lock nor a pylock.toml")


# ------------------------------------------------------------------------------ resolution


@dataclass(frozen=True)
class Target:
    """One environment pip resolves for; all None means this machine's own."""

    python_version: str | None = None
    platform: str | None = None
    implementation: str | None = None
    abis: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        parts = []
        if self.implementation:
            parts.append(self.implementation)
        if self.python_version:
            parts.append(f"python {self.python_version}")
        if self.platform:
            parts.append(self.platform)
        if self.abis:
            parts.append("abi " + ",".join(self.abis))
        return ", ".join(parts) or "this machine"

    def pip_args(self) -> list[str]:
        args = []
        if self.python_version:
            args += ["--python-version", self.python_version]
        if self.platform:
            args += ["--platform", self.platform]
        if self.implementation:
            args += ["--implementation", self.implementation]
        for abi in self.abis:
            args += ["--abi", abi]
        return args

    @property
    def foreign(self) -> bool:
        return bool(self.python_version or self.platform or self.implementation or self.abis)


def expand_targets(python_versions: Sequence[str], platforms: Sequence[str],
                   implementation: str | None, abis: Sequence[str]) -> list[Target]:
    """Every --python-version × every --platform; --implementation and --abi apply to all."""
    return [
        Target(version, platform, implementation, tuple(abis))
        for version, platform in itertools.product(python_versions or [None],
                                                    platforms or [None])
    ]


def pip_command(index_url: str, report: Path, requirements: Sequence[str],
                constraints: Sequence[str], target: Target, only_binary: Sequence[str]
                ) -> list[str]:
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), "--no-cache-dir", "--disable-pip-version-check", "--no-input",
        "--index-url", index_url,
    ]
    for path in requirements:
        cmd += ["-r", path]
    for path in constraints:
        cmd += ["-c", path]
    for spec in only_binary:
        cmd += ["--only-binary", spec]
    return cmd + target.pip_args()


def pip_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """This machine's environment without any pip configuration: pip must resolve through
    pyproxy only, never a find-links directory or an extra index."""
    env = {k: v for k, v in environ.items() if not k.upper().startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def parse_pip_report(report: Mapping[str, Any]) -> LockContents:
    """The files of a `pip install --report`: `install[*].download_info` names each one's URL
    and `archive_info.hashes`. Local paths and VCS checkouts are not index files."""
    contents = LockContents()
    for item in report.get("install", []):
        info = item.get("download_info") or {}
        name = normalize(str((item.get("metadata") or {}).get("name", "")))
        url = str(info.get("url", ""))
        archive = info.get("archive_info")
        if not _is_remote(url) or archive is None:
            contents.skipped.append(f"{name or url}: {url} is not a file of an index")
            continue
        hashes = {k.lower(): v.lower() for k, v in (archive.get("hashes") or {}).items()}
        if not hashes and archive.get("hash"):
            hashes = dict([_hash_pair(archive["hash"], "pip report")])
        filename = _url_filename(url.split("#", 1)[0])
        contents.files.append(Pinned(name, filename, hashes))
    return contents


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_STDERR_TAIL:]) or "(pip printed nothing)"


# ------------------------------------------------------------------------------ outcome


@dataclass
class Summary:
    fetched: int = 0
    fetched_bytes: int = 0
    cached: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        lines = [(
            f"{self.fetched} file(s) fetched ({human_size(self.fetched_bytes)}), "
            f"{self.cached} already cached, {len(self.failures)} failed"
        )]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} entr{'y' if len(self.skipped) == 1 else 'ies'}"
                         " that name no index file:")
            lines += [f"  {why}" for why in self.skipped]
        if self.failures:
            lines.append("failures:")
            for what, why in self.failures:
                first, *rest = why.splitlines() or [""]
                lines.append(f"  {what}: {first}")
                lines += [f"    {line}" for line in rest]
        return lines


Outcome = Literal["fetched", "cached", "failed"]


class Progress(Protocol):
    def start(self) -> None: ...
    def note(self, line: str) -> None: ...
    def add_files(self, count: int) -> None: ...
    def advance_bytes(self, count: int) -> None: ...
    def done(self, pinned: Pinned, outcome: Outcome, size: int, reason: str) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """One line per file, for logs and pipes."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def start(self) -> None:
        pass

    def note(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def add_files(self, count: int) -> None:
        pass

    def advance_bytes(self, count: int) -> None:
        pass

    def done(self, pinned: Pinned, outcome: Outcome, size: int, reason: str) -> None:
        if outcome == "fetched":
            self.note(f"fetched  {pinned.label} ({human_size(size)})")
        elif outcome == "cached":
            self.note(f"cached   {pinned.label}")
        else:
            self.note(f"FAILED   {pinned.label}: {reason.splitlines()[0] if reason else ''}")

    def close(self) -> None:
        pass


class BarProgress:
    """A rich progress bar on a terminal: files done of files known, bytes moved."""

    def __init__(self) -> None:
        # imported only on a terminal
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=Console(stderr=True), transient=False,
        )
        # the total size is unknown (pip's report gives none): bytes so far and the speed
        self._bytes_bar = Progress(TextColumn("  {task.description} {task.fields[moved]}"),
                                   TransferSpeedColumn(), console=self._bar.console)
        self._files = self._bar.add_task("files", total=0)
        self._bytes = self._bytes_bar.add_task("received", total=None, moved=human_size(0))
        self._moved = 0
        self._live = Live(Group(self._bar, self._bytes_bar), console=self._bar.console,
                          refresh_per_second=8)

    def start(self) -> None:
        self._live.start()

    def note(self, line: str) -> None:
        self._live.console.print(line, markup=False, highlight=False)

    def add_files(self, count: int) -> None:
        task = self._bar.tasks[0]
        self._bar.update(self._files, total=(task.total or 0) + count)

    def advance_bytes(self, count: int) -> None:
        self._moved += count
        self._bytes_bar.update(self._bytes, advance=count, moved=human_size(self._moved))

    def done(self, pinned: Pinned, outcome: Outcome, size: int, reason: str) -> None:
        self._bar.advance(self._files)
        if outcome == "failed":
            self.note(f"FAILED {pinned.label}: {reason.splitlines()[0] if reason else ''}")

    def close(self) -> None:
        self._live.stop()  # a no-op when it never started


# ------------------------------------------------------------------------------ the run


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
                digests = {a: hashlib.new(a) for a in pinned.hashes if a in hashlib.algorithms_available}
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
            cmd = pip_command(f"{request.base}/simple/", report, request.requirements,
                              request.constraints, target, request.only_binary)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=pip_environment(os.environ),
                )
                out, err = await proc.communicate()
            except OSError as exc:
                self.summary.failures.append((f"resolution for {target.label}",
                                              f"cannot run pip: {exc}"))
                return
        if proc.returncode != 0:
            text = err.decode(errors="replace") or out.decode(errors="replace")
            self.summary.failures.append(
                (f"resolution for {target.label}", f"pip exited with {proc.returncode}:\n"
                 + _tail(text)))
            self.progress.note(f"resolution for {target.label} failed")
            return
        try:
            contents = parse_pip_report(json.loads(report.read_text(encoding="utf-8")))
        except (OSError, ValueError, PrefetchError) as exc:
            self.summary.failures.append((f"resolution for {target.label}",
                                          f"unreadable pip report: {exc}"))
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
            raise PrefetchError(f"cannot reach pyproxy at {_display(self.request.base)}: "
                                f"{_why(exc)}") from None
        if response.status >= 500:
            raise PrefetchError(f"pyproxy at {_display(self.request.base)} answers "
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


def _display(url: str) -> str:
    """The URL without any password in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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
    locks = [read_lock(path) for path in request.locks]
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


# ------------------------------------------------------------------------------ command line


def default_url(config: str | None) -> str:
    """The server's own address from the configuration (pyproxy.toml, PYPROXY_*)."""
    from pyproxy.config import load_settings

    settings = load_settings(config)
    if settings.base_url:
        return settings.base_url
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port or 8080}"


def cmd_prefetch(args: argparse.Namespace) -> int:
    try:
        if not args.requirements and not args.locks:
            raise PrefetchError("nothing to prefetch: give -r REQUIREMENTS or --lock LOCKFILE")
        if args.constraints and not args.requirements:
            raise PrefetchError("-c constrains what -r asks for: give -r REQUIREMENTS too")
        base = normalize_base(args.url or default_url(args.config))
        request = Request(
            base=base,
            requirements=list(args.requirements),
            constraints=list(args.constraints),
            locks=[Path(p) for p in args.locks],
            targets=expand_targets(args.python_versions, args.platforms, args.implementation,
                                   args.abis),
            only_binary=list(args.only_binary),
        )
        progress: Progress = BarProgress() if sys.stderr.isatty() else PlainProgress()
        summary = prefetch(request, progress)
    except PrefetchError as exc:
        print(f"pyproxy: {exc}", file=sys.stderr)
        return 1
    for line in summary.lines():
        print(line)
    return 0 if summary.ok else 1


def add_prefetch_parser(commands: Any) -> argparse.ArgumentParser:
    """`pyproxy prefetch`, on the `pyproxy` command's subparsers."""
    description = ("warm a running pyproxy: resolve requirements with pip through it, or read "
                   "lock files, and download every file through it")
    parser = commands.add_parser("prefetch", help=description, description=description)
    parser.set_defaults(func=cmd_prefetch)
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file the default --url is read from")
    parser.add_argument("--url", metavar="URL",
                        help="the running pyproxy (default: its configured address, "
                             "http://127.0.0.1:8080)")
    parser.add_argument("-r", "--requirement", dest="requirements", action="append", default=[],
                        metavar="FILE", help="requirements file (repeatable)")
    parser.add_argument("-c", "--constraint", dest="constraints", action="append", default=[],
                        metavar="FILE", help="constraints file (repeatable)")
    parser.add_argument("--lock", dest="locks", action="append", default=[], metavar="FILE",
                        help="uv.lock or pylock.toml: fetch every file it pins (repeatable)")
    parser.add_argument("--platform", dest="platforms", action="append", default=[],
                        metavar="TAG", help="resolve for this platform tag, e.g. "
                        "manylinux_2_17_x86_64 (repeatable; needs --only-binary :all:)")
    parser.add_argument("--python-version", dest="python_versions", action="append", default=[],
                        metavar="VERSION", help="resolve for this Python, e.g. 3.12 (repeatable; "
                        "each one with each --platform)")
    parser.add_argument("--implementation", metavar="IMPL",
                        help="Python implementation for every target: cp, pp, py")
    parser.add_argument("--abi", dest="abis", action="append", default=[], metavar="ABI",
                        help="ABI tag for every target, e.g. cp312 (repeatable)")
    parser.add_argument("--only-binary", action="append", default=[], metavar="SPEC",
                        help="as pip's --only-binary, e.g. :all: (repeatable)")
    return parser


__all__ = [
    "LockContents", "Pinned", "PrefetchError", "Request", "Summary", "Target",
    "add_prefetch_parser", "cmd_prefetch", "expand_targets", "files_url", "parse_pip_report",
    "parse_pylock", "parse_uv_lock", "pip_command", "prefetch", "read_lock",
]
