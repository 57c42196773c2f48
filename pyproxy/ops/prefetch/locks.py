"""What to fetch, read from lock files: a uv.lock or a PEP 751 pylock.toml names every file.

The vocabulary of the whole prefetch (a `Pinned` file, `LockContents`, `PrefetchError`) lives
here too: pip's report (resolve.py) is read into the same contents a lock gives.
"""

from __future__ import annotations

import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyproxy.model import NormalizedName, normalize


class PrefetchError(Exception):
    """Bad input or an unreachable pyproxy: one line, exit status 1."""


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
    left_out: int = 0  # files no target needs (targets.for_targets)


def url_filename(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def is_remote(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def hash_pair(spec: str, where: str) -> tuple[str, str]:
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
        remote = [e for e in entries if isinstance(e.get("url"), str) and is_remote(e["url"])]
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
            hashes = dict([hash_pair(spec, f"{where} ({name})")]) if isinstance(spec, str) else {}
            contents.files.append(Pinned(name, url_filename(entry["url"]), hashes))
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
                url_filename(url) if isinstance(url, str) else
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
