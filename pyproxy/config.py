"""One typed settings object: defaults <- pyproxy.toml <- PYPROXY_* environment <- CLI flags."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyproxy import policy
from pyproxy.config_values import (
    available_cores,
    is_authority,
    name_prefixes,
    rule_list,
    string_value,
    trusted_peers,
    worker_count,
)
from pyproxy.units import parse_size
from pyproxy.upstream_settings import UpstreamSettings, file_host, parse_upstreams


class ConfigError(Exception):
    """A bad configuration file or value; the message names the setting."""


# pip's own default index is the built-in upstream; it is read from the installed pip at
# start-up so this project never writes the public index's address down.
DEFAULT_UPSTREAM = "pip-default"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # worker processes; "auto" in the file or environment is one per core
    workers: int = dataclasses.field(default_factory=available_cores)
    data_dir: Path = Path("pyproxy-data")
    # externally visible origin (scheme://host[:port]) for absolute URLs; empty: from the request
    base_url: str = ""
    # Cache-Control max-age of simple pages, seconds: how long a client may reuse a page
    page_max_age: int = 0
    # honour X-Forwarded-Proto/-Host: False, True (from any peer), or the peers' networks
    trust_forwarded: bool | tuple[str, ...] = False
    # seconds requests in flight get to finish after SIGTERM
    shutdown_grace: float = 30.0
    # seconds a new connection has to send its first complete request head
    header_timeout: float = 20.0
    # seconds a connection may sit idle between requests
    keepalive_timeout: float = 75.0
    # open connections per worker; past it new ones get a 503 and are closed
    max_connections: int = 1000
    # free space on the data directory's disk below which /ready answers 503
    min_free_space: int = 100 * 1024**2
    # "pip-default": pip's built-in default index; "": private packages only
    upstream_url: str = DEFAULT_UPSTREAM
    upstream_timeout: float = 30.0
    # seconds a page fetch may take in all, and a file download until its response headers
    upstream_deadline: float = 60.0
    # a file download slower than this (bytes per second, over each rate_window of waiting for
    # upstream) is aborted; 0: no minimum
    upstream_min_rate: int = 10_000
    upstream_rate_window: float = 30.0
    # bytes of memory (estimated) each worker may keep parsed upstream pages in
    upstream_page_memory: int = 256 * 1024**2
    upstream_page_ttl: int = 600
    upstream_index_ttl: int = 3600
    upstream_ca_bundle: str = ""
    # hosts ("host": any port, "host:port") file downloads may be redirected to, besides the
    # index's origin and those its pages link files on
    upstream_files_from: tuple[str, ...] = ()
    # warm-up ahead of the client (repository/warmup.py): on, upstream requests at once per
    # worker, per trigger at most, and whether the likely .metadata is fetched too
    upstream_warm_up: bool = True
    upstream_warm_up_concurrency: int = 16
    upstream_warm_up_budget: int = 32
    upstream_warm_up_metadata: bool = True
    # the files pip resolved, downloaded ahead of it; the biggest file a warm-up downloads whole
    upstream_warm_up_downloads: bool = True
    upstream_warm_up_max_file_size: int = 64 * 1024**2
    offline: bool = False
    # [[upstreams]]: further indexes, each serving the names its `projects` claim
    upstreams: tuple[UpstreamSettings, ...] = ()
    cache_max_size: int = 10 * 1024**3
    merge: tuple[str, ...] = ()
    max_upload_size: int = 100 * 1024**2
    # normalised name prefixes for private projects only (see publish.service for the rule)
    reserved_prefixes: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "text"  # of the lines on stderr: "text" or "json" (one object per line)
    # "anonymous": anyone may read; "authenticated": every read needs a user's credentials
    read_access: str = "anonymous"
    # password checks (scrypt) run on threads of their own, at most this many waiting
    password_threads: int = 1
    password_queue: int = 8
    # wrong passwords one client address may send per minute before it gets 429; 0: no limit
    password_failures_per_minute: int = 10
    # [policy]: which upstream files are served (pyproxy/policy.py); "" and () are off
    policy_min_age: str = ""
    policy_not_after: str = ""
    policy_exempt: tuple[str, ...] = ()
    policy_deny: tuple[str, ...] = ()
    policy_allow_only: tuple[str, ...] = ()
    policy_missing_upload_time: str = "first-seen"
    # [storage]: "" is the embedded default (SQLite and files in data_dir); a cluster sets a
    # PostgreSQL DSN and an s3:// bucket shared by every node
    storage_database: str = ""
    storage_objects: str = ""
    storage_s3_endpoint: str = ""
    # how the other nodes reach this one ("http://10.0.0.5:8080"); a cluster needs it
    storage_node_url: str = ""
    # bound of a cluster node's local read cache of bucket objects in data_dir
    cache_local_max_size: int = 2 * 1024**3

    @property
    def private_only(self) -> bool:
        """No upstream at all: neither [upstream] nor [[upstreams]]."""
        return self.upstream_url == "" and not self.upstreams


# (section, key) in pyproxy.toml -> field name; the environment name is PYPROXY_<SECTION>_<KEY>
_TOML_KEYS: dict[tuple[str, str], str] = {
    ("server", "host"): "host",
    ("server", "port"): "port",
    ("server", "workers"): "workers",
    ("server", "data_dir"): "data_dir",
    ("server", "base_url"): "base_url",
    ("server", "page_max_age"): "page_max_age",
    ("server", "trust_forwarded"): "trust_forwarded",
    ("server", "shutdown_grace"): "shutdown_grace",
    ("server", "header_timeout"): "header_timeout",
    ("server", "keepalive_timeout"): "keepalive_timeout",
    ("server", "max_connections"): "max_connections",
    ("server", "min_free_space"): "min_free_space",
    ("upstream", "url"): "upstream_url",
    ("upstream", "timeout"): "upstream_timeout",
    ("upstream", "deadline"): "upstream_deadline",
    ("upstream", "min_rate"): "upstream_min_rate",
    ("upstream", "rate_window"): "upstream_rate_window",
    ("upstream", "page_memory"): "upstream_page_memory",
    ("upstream", "page_ttl"): "upstream_page_ttl",
    ("upstream", "index_ttl"): "upstream_index_ttl",
    ("upstream", "ca_bundle"): "upstream_ca_bundle",
    ("upstream", "files_from"): "upstream_files_from",
    ("upstream", "warm_up"): "upstream_warm_up",
    ("upstream", "warm_up_concurrency"): "upstream_warm_up_concurrency",
    ("upstream", "warm_up_budget"): "upstream_warm_up_budget",
    ("upstream", "warm_up_metadata"): "upstream_warm_up_metadata",
    ("upstream", "warm_up_downloads"): "upstream_warm_up_downloads",
    ("upstream", "warm_up_max_file_size"): "upstream_warm_up_max_file_size",
    ("upstream", "offline"): "offline",
    ("cache", "max_size"): "cache_max_size",
    ("cache", "local_max_size"): "cache_local_max_size",
    ("storage", "database"): "storage_database",
    ("storage", "objects"): "storage_objects",
    ("storage", "s3_endpoint"): "storage_s3_endpoint",
    ("storage", "node_url"): "storage_node_url",
    ("overlay", "merge"): "merge",
    ("uploads", "max_file_size"): "max_upload_size",
    ("uploads", "reserved_prefixes"): "reserved_prefixes",
    ("log", "level"): "log_level",
    ("log", "format"): "log_format",
    ("auth", "read"): "read_access",
    ("auth", "password_threads"): "password_threads",
    ("auth", "password_queue"): "password_queue",
    ("auth", "password_failures_per_minute"): "password_failures_per_minute",
    ("policy", "min_age"): "policy_min_age",
    ("policy", "not_after"): "policy_not_after",
    ("policy", "exempt"): "policy_exempt",
    ("policy", "deny"): "policy_deny",
    ("policy", "allow_only"): "policy_allow_only",
    ("policy", "missing_upload_time"): "policy_missing_upload_time",
}
_FIELD_SETTING = {f: f"{s}.{k}" for (s, k), f in _TOML_KEYS.items()}
_SIZE_FIELDS = {
    "cache_max_size", "cache_local_max_size", "max_upload_size", "upstream_page_memory",
    "min_free_space", "upstream_warm_up_max_file_size",
}
_RATE_FIELDS = {"upstream_min_rate"}  # bytes per second: a size, "/s" optional
# settings with a closed set of values, taken in any case
_CHOICES = {
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("text", "json"),
    "read_access": ("anonymous", "authenticated"),
    "policy_missing_upload_time": policy.MISSING_UPLOAD_TIME,
}
# lists of names or PEP 508 specifiers: each entry is checked when read
_RULE_FIELDS = {"policy_exempt", "policy_deny", "policy_allow_only"}
def _coerce(name: str, value: Any, *, from_text: bool) -> Any:
    """Turn a TOML, environment or CLI value into the field's type, or raise ValueError."""
    if name == "trust_forwarded":
        return trusted_peers(value, from_text=from_text)
    if name == "reserved_prefixes":
        return name_prefixes(value, from_text=from_text)
    if name == "workers":
        return worker_count(value, from_text=from_text)
    if name in _SIZE_FIELDS:
        return parse_size(value)
    if name in _RATE_FIELDS:
        if isinstance(value, str):
            value = re.sub(r"\s*/\s*s\s*$", "", value, flags=re.IGNORECASE)
        try:
            return parse_size(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as 10kB/s or 1MiB/s") from None
    if name in _RULE_FIELDS:
        return rule_list(value, from_text=from_text)
    if name == "policy_min_age":
        policy.parse_duration(string_value(value))
        return value.strip()
    if name == "policy_not_after":
        policy.parse_moment(string_value(value))
        return value.strip()
    if name in _CHOICES:
        choices = _CHOICES[name]
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value.strip().lower()
    default = getattr(Settings(), name)
    if isinstance(default, bool):
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not true or false")
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(default, int):
        if from_text and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected a whole number")
        if value < 0:
            raise ValueError("cannot be negative")
        return value
    if isinstance(default, float):
        if from_text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError("expected a positive number of seconds")
        return float(value)
    if isinstance(default, tuple):
        if from_text and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of names")
        return tuple(value)
    if isinstance(default, Path):
        if not isinstance(value, str) or not value:
            raise ValueError("expected a directory path")
        return Path(value).expanduser()
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _check(settings: Settings) -> None:
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{_FIELD_SETTING.get(name, name)}: {why}")

    if not 0 < settings.port < 65536 and settings.port != 0:
        fail("port", f"{settings.port} is not a TCP port")
    if settings.workers < 1:
        fail("workers", "must be at least 1")
    if settings.max_connections < 1:
        fail("max_connections", "must be at least 1")
    if settings.password_threads < 1:
        fail("password_threads", "must be at least 1")
    if settings.upstream_warm_up_concurrency < 1:
        fail("upstream_warm_up_concurrency", "must be at least 1 (warm_up = false turns it off)")
    for name in ("upstream_url", "base_url"):
        url = getattr(settings, name)
        if url and url != DEFAULT_UPSTREAM and not re.match(r"https?://[^/\s]+", url):
            fail(name, f"{url!r} is not an http:// or https:// URL")
    base = re.fullmatch(r"(https?)://([^/?#]*)/?", settings.base_url)
    if settings.base_url and (base is None or not is_authority(base.group(2))):
        fail("base_url", f"{settings.base_url!r} is not scheme://host[:port] (a path prefix is "
                         "not supported: serve pyproxy at the root of its host name)")
    if settings.upstream_ca_bundle and not Path(settings.upstream_ca_bundle).is_file():
        fail("upstream_ca_bundle", f"{settings.upstream_ca_bundle!r} is not a file")
    _check_storage(settings, fail)
    if settings.max_upload_size == 0:
        fail("max_upload_size", "must be larger than 0")
    for entry in settings.upstream_files_from:
        try:
            file_host(entry, _FIELD_SETTING["upstream_files_from"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _check_storage(settings: Settings, fail: Callable[[str, str], None]) -> None:
    """[storage]: both shared stores or neither, each written as its scheme wants. Whether they
    answer is checked when the server opens them."""
    database, objects = settings.storage_database, settings.storage_objects
    if database and not re.match(r"postgres(ql)?://", database):
        fail("storage_database", "expected a postgresql:// URL such as "
                                 "\"postgresql://pyproxy@db.internal:5432/pyproxy\"")
    if objects and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", objects):
        fail("storage_objects", "expected s3://bucket or s3://bucket/prefix (a bucket name is 3-63 "
                                "lowercase letters, digits, dots and hyphens)")
    if bool(database) != bool(objects):
        set_, unset = ("database", "objects") if database else ("objects", "database")
        fail(f"storage_{unset}", f"storage.{set_} is set: several nodes need both a PostgreSQL "
                                 "database and a bucket (leave both empty for one box)")
    endpoint = settings.storage_s3_endpoint
    if endpoint and not re.match(r"https?://[^/\s]+", endpoint):
        fail("storage_s3_endpoint", f"{endpoint!r} is not an http:// or https:// URL")
    node = settings.storage_node_url
    if node and not re.fullmatch(r"https?://[^/\s?#]+/?", node):
        fail("storage_node_url", f"{node!r} is not http://host:port")
    if database and not node:
        fail("storage_node_url", "a cluster node needs the URL the other nodes reach it at")


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        if section == "upstreams":
            try:
                values["upstreams"] = parse_upstreams(table)
                for route in values["upstreams"]:
                    for key, raw in route.policy:  # checked as [policy] checks its own
                        try:
                            as_toml = list(raw) if isinstance(raw, tuple) else raw
                            _coerce(f"policy_{key}", as_toml, from_text=False)
                        except ValueError as exc:
                            raise ValueError(f"upstreams.{route.name}.{key}: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section}: expected a [{section}] table")
        for key, raw in table.items():
            name = _TOML_KEYS.get((section, key))
            if name is None:
                raise ConfigError(f"{path}: {section}.{key}: unknown setting")
            try:
                value = _coerce(name, raw, from_text=False)
            except ValueError as exc:
                raise ConfigError(f"{path}: {section}.{key}: {exc}") from None
            if name == "data_dir" and not value.is_absolute():
                value = path.parent / value  # relative to the file, not to the cwd
            values[name] = value
    return values


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for (section, key), name in _TOML_KEYS.items():
        variable = f"PYPROXY_{section}_{key}".upper()
        if variable in environ:
            try:
                values[name] = _coerce(name, environ[variable], from_text=True)
            except ValueError as exc:
                raise ConfigError(f"{variable}: {exc}") from None
    return values


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """--config, else $PYPROXY_CONFIG, else ./pyproxy.toml when present."""
    if explicit:
        return Path(explicit)
    if environ.get("PYPROXY_CONFIG"):
        return Path(environ["PYPROXY_CONFIG"])
    local = Path("pyproxy.toml")
    return local if local.is_file() else None


def load_settings(
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge every layer; `overrides` are CLI values (None means "not given")."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = find_config_file(config_file, environ)
    if path is not None:
        values.update(_from_toml(path))
    values.update(_from_environment(environ))
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        try:
            values[name] = _coerce(name, value, from_text=isinstance(value, str))
        except ValueError as exc:
            raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
    settings = dataclasses.replace(Settings(), **values)
    _check(settings)
    return settings



__all__ = [
    "DEFAULT_UPSTREAM", "ConfigError", "Settings", "UpstreamSettings", "available_cores",
    "load_settings",
]
