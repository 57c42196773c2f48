"""`[[upstreams]]`: further upstream indexes, each serving the project names its route claims.

    [[upstreams]]
    name = "gpu"
    url = "https://gpu-wheels.example.com/simple/"
    projects = ["torch", "torchvision", "nvidia-*"]
    files_from = ["gpu-wheels.example.com"]
    min_age = "0d"

A name goes to the first upstream whose `projects` match it, and to no other (no fall-through:
the torchtriton case); every other name goes to `[upstream]`. Patterns are matched on PEP 503
normalised names, so "Torch_Vision" and "torch-vision" are one pattern; `*` and `?` are the
only wildcards. A leaf: imports nothing of pyproxy but the model and the single-value checks
of config_values, so config.py can use it.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyproxy.config_values import is_http_url, seconds
from pyproxy.model import NormalizedName, normalize, valid_name

__all__ = [
    "POLICY_KEYS", "NamePatterns", "PolicyValue", "UpstreamSettings", "file_host",
    "parse_upstreams",
]

# the [policy] settings an upstream may override (issue 12: a GPU index without upload times
# needs its own cooldown); values as in [policy], checked by the policy when it is built
POLICY_KEYS: dict[str, type] = {
    "min_age": str, "not_after": str, "missing_upload_time": str,
    "exempt": list, "deny": list, "allow_only": list,
}
PolicyValue = str | tuple[str, ...]

# an upstream's name is shown on pages and names its page cache's directory
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_RESERVED = frozenset({"default"})  # what pages call [upstream]
_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")
_MAX_INT = 2**63 - 1  # as config.py's: SQLite's largest


class NamePatterns:
    """Normalised names and `*`/`?` globs; `matches` is a set lookup, then one regex."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self.exact = frozenset(p for p in self.patterns if not _is_glob(p))
        globs = [fnmatch.translate(p) for p in self.patterns if _is_glob(p)]
        self._glob = re.compile("|".join(globs)) if globs else None

    def matches(self, name: NormalizedName) -> bool:
        return name in self.exact or (self._glob is not None and self._glob.match(name) is not None)


@dataclass(frozen=True)
class UpstreamSettings:
    name: str
    url: str  # http(s); user:password in it go to the index's own origin only
    projects: tuple[str, ...]  # normalised names and globs, in the file's order
    # hosts (or host:port) the page's file URLs may point to, besides the index's own host
    files_from: tuple[str, ...] = ()
    timeout: float = 30.0
    page_ttl: int = 600
    index_ttl: int = 3600
    ca_bundle: str = ""
    offline: bool = False
    # [policy] keys this upstream overrides, in the file's order
    policy: tuple[tuple[str, PolicyValue], ...] = ()
    patterns: NamePatterns = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", NamePatterns(self.projects))

    def claims(self, name: NormalizedName) -> bool:
        return self.patterns.matches(name)

    def allows_file_host(self, file_url: str) -> bool:
        """Whether a file URL on this upstream's page points to the index's own host or to one
        of `files_from` (a "host" entry allows any port, "host:port" that port only)."""
        try:
            parts = urlsplit(file_url)
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return False
        if host == (urlsplit(self.url).hostname or "").lower():
            return True
        for entry in self.files_from:
            entry_host, entry_port = _split_port(entry)
            if entry_host.strip("[]") == host and (not entry_port or int(entry_port) == port):
                return True
        return False


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _split_port(entry: str) -> tuple[str, str]:
    """("host", "port") of "host:port" or "[v6]:port"; ("host", "") without a port."""
    if entry.rsplit("]", 1)[-1].count(":") == 1:
        host, _, port = entry.rpartition(":")
        return host, port
    return entry, ""


# ---------------------------------------------------------------------------------- parsing


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return value


def _pattern(raw: str, where: str) -> str:
    # a pattern is a name whose characters may be wildcards: "nvidia-*" -> "nvidia-x" is a name
    if not valid_name(raw.replace("*", "x").replace("?", "x")):
        raise ValueError(
            f"{where}: {raw!r} is not a project name or a glob of one (letters, digits, '.', '-',"
            " '_', and the wildcards '*' and '?')"
        )
    return normalize(raw)


def file_host(raw: str, where: str) -> str:
    """A `files_from` entry, lower-cased: "host" or "host:port"; ValueError naming `where`."""
    entry = raw.strip().lower()
    host, port = _split_port(entry)
    ok = bool(host) and (not port or (port.isdigit() and 0 < int(port) < 65536))
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            ok = False
    elif not _HOST.fullmatch(host):
        ok = False
    if not ok:
        raise ValueError(f"{where}: {raw!r} is not a host or host:port")
    return entry


def _number(value: Any, where: str, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"{where}: expected a {'number' if kind is float else 'whole number'}")
    if value < 0 or (kind is float and value == 0):
        raise ValueError(f"{where}: must be {'positive' if kind is float else 'at least 0'}")
    if kind is float:
        try:
            return seconds(value)  # nan and inf are no timeouts
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if value > _MAX_INT:
        raise ValueError(f"{where}: {value} is too large (at most {_MAX_INT})")
    return kind(value)


def _one(table: Any, index: int) -> UpstreamSettings:
    where = f"upstreams[{index}]"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table ([[upstreams]])")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
        raise ValueError(
            f"{where}.name: expected a short lowercase name (letters, digits, '-'), not"
            f" {name!r}{' (reserved for [upstream])' if name in _RESERVED else ''}"
        )
    where = f"upstreams.{name}"
    url = table.get("url")
    if not isinstance(url, str) or not is_http_url(url):
        raise ValueError(
            f"{where}.url: expected an http:// or https:// URL with a valid host[:port], not"
            f" {url!r}"
        )
    if "projects" not in table:
        raise ValueError(f"{where}.projects: missing (the names this upstream serves)")
    projects = [
        _pattern(p, f"{where}.projects") for p in _strings(table["projects"], f"{where}.projects")
    ]
    if not projects:
        raise ValueError(f"{where}.projects: empty (the names this upstream serves)")
    values: dict[str, Any] = {"name": name, "url": url, "projects": tuple(dict.fromkeys(projects))}
    policy: list[tuple[str, PolicyValue]] = []
    for key, raw in table.items():
        setting = f"{where}.{key}"
        if key in ("name", "url", "projects"):
            continue
        if key == "files_from":
            values[key] = tuple(file_host(h, setting) for h in _strings(raw, setting))
        elif key == "timeout":
            values[key] = _number(raw, setting, float)
        elif key in ("page_ttl", "index_ttl"):
            values[key] = _number(raw, setting, int)
        elif key == "offline":
            if not isinstance(raw, bool):
                raise ValueError(f"{setting}: expected true or false")
            values[key] = raw
        elif key == "ca_bundle":
            if not isinstance(raw, str) or (raw and not Path(raw).is_file()):
                raise ValueError(f"{setting}: {raw!r} is not a file")
            values[key] = raw
        elif key in POLICY_KEYS:
            if POLICY_KEYS[key] is list:
                policy.append((key, tuple(_strings(raw, setting))))
            elif isinstance(raw, str):
                policy.append((key, raw))
            else:
                raise ValueError(f"{setting}: expected a string")
        else:
            raise ValueError(f"{setting}: unknown setting")
    return UpstreamSettings(**values, policy=tuple(policy))


def parse_upstreams(raw: Any) -> tuple[UpstreamSettings, ...]:
    """The `[[upstreams]]` array of tables; ValueError naming the setting for anything wrong,
    including a name two routes claim and a name an earlier route's glob already takes."""
    if not isinstance(raw, list):
        raise ValueError("upstreams: expected [[upstreams]] tables")
    upstreams = tuple(_one(table, index) for index, table in enumerate(raw))
    seen: set[str] = set()
    for position, upstream in enumerate(upstreams):
        if upstream.name in seen:
            raise ValueError(f"upstreams.{upstream.name}: two upstreams have this name")
        seen.add(upstream.name)
        for name in sorted(upstream.patterns.exact):
            claimed = NormalizedName(name)
            earlier = next((u for u in upstreams[:position] if u.claims(claimed)), None)
            if earlier is not None:
                raise ValueError(
                    f"upstreams.{upstream.name}.projects: {name!r} is already routed to upstream"
                    f" {earlier.name!r} (a name goes to the first upstream that claims it)"
                )
    return upstreams
