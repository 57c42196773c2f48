"""Loading the settings (pyproxy/settings.py): defaults <- pyproxy.toml <- PYPROXY_* environment
<- CLI flags, each value coerced and checked, then all of them together."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyproxy import policy
from pyproxy.config_values import (
    available_cores,
    is_authority,
    is_http_url,
    is_listen_host,
    name_prefixes,
    rule_list,
    seconds,
    string_value,
    trusted_peers,
    worker_count,
)
from pyproxy.settings import DEFAULT_UPSTREAM, Settings
from pyproxy.units import parse_size
from pyproxy.upstream_settings import file_host, parse_upstreams


class ConfigError(Exception):
    """A bad configuration file or value; the message names the setting."""


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
# a mistyped `workers = 100000` would fork until the machine stalls
WORKERS_PER_CORE = 8
# the largest whole number a setting takes: SQLite's, and far past any count or time in seconds
_MAX_INT = 2**63 - 1


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
        return parse_size(value, what="a rate such as 10kB/s or 1MiB/s")
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
        if value > _MAX_INT:
            raise ValueError(f"{value} is too large (at most {_MAX_INT})")
        return value
    if isinstance(default, float):
        if from_text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        return seconds(value)
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
    if settings.workers > (most := WORKERS_PER_CORE * available_cores()):
        fail("workers", f"{settings.workers} is more than {WORKERS_PER_CORE} per core ({most} on "
                        "this machine): past one per core they only compete for the CPU, and "
                        "each costs its own memory")
    if settings.max_connections < 1:
        fail("max_connections", "must be at least 1")
    if settings.password_threads < 1:
        fail("password_threads", "must be at least 1")
    if settings.upstream_warm_up_concurrency < 1:
        fail("upstream_warm_up_concurrency", "must be at least 1 (warm_up = false turns it off)")
    if not is_listen_host(settings.host):
        fail("host", f"{settings.host!r} is not an IP address or host name to listen on")
    for name in ("upstream_url", "base_url"):
        url = getattr(settings, name)
        if url and url != DEFAULT_UPSTREAM and not is_http_url(url):
            fail(name, f"{url!r} is not an http:// or https:// URL with a valid host[:port]")
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
    if endpoint and not is_http_url(endpoint):
        fail("storage_s3_endpoint", f"{endpoint!r} is not an http:// or https:// URL with a valid "
                                    "host[:port]")
    node = settings.storage_node_url
    if node and not (re.fullmatch(r"https?://[^/\s?#]+/?", node) and is_http_url(node)):
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


# PYPROXY_<SECTION>_... of a section the file has: a setting, or a typo that must not pass
# silently. Other PYPROXY_* names are no settings (PYPROXY_CONFIG, the tests' PYPROXY_SLOW_TESTS).
_SECTIONS = frozenset(section for section, _ in _TOML_KEYS)
_VARIABLES = {f"PYPROXY_{s}_{k}".upper(): name for (s, k), name in _TOML_KEYS.items()}


def _unknown_variable(variable: str) -> str | None:
    """Why PYPROXY_<known section>_<key> is not a setting; None for any other name."""
    if not variable.startswith("PYPROXY_"):
        return None
    section = variable.removeprefix("PYPROXY_").partition("_")[0].lower()
    if section == "upstreams":
        return "unknown setting ([[upstreams]] are set in pyproxy.toml only)"
    if section not in _SECTIONS:
        return None
    if variable.upper() in _VARIABLES:
        return f"unknown setting (the names are upper case: {variable.upper()})"
    key = variable.removeprefix("PYPROXY_").partition("_")[2].lower()
    keys = [k for s, k in _TOML_KEYS if s == section]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    hint = f" (did you mean {f'PYPROXY_{section}_{close[0]}'.upper()}?)" if close else ""
    return f"unknown setting {section}.{key}{hint}"


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable in sorted(environ):
        if variable not in _VARIABLES and (why := _unknown_variable(variable)) is not None:
            raise ConfigError(f"{variable}: {why}")
    for variable, name in _VARIABLES.items():
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


__all__ = ["ConfigError", "find_config_file", "load_settings"]
