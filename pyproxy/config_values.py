"""The checks and conversions of single setting values: what a value read from pyproxy.toml, the
environment or a flag must look like, and what it becomes. pyproxy/config.py decides which field
takes which."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

from pyproxy import policy
from pyproxy.model import normalize


def available_cores() -> int:
    """Cores this process may run on (its affinity, as a container's cpuset limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# host[:port] as pyproxy writes it into absolute URLs: a DNS name (underscores allowed, as in
# container names), an IPv4 address or a bracketed IPv6 address. Nothing else, so a header
# cannot smuggle markup, a path or credentials into pages.
AUTHORITY = re.compile(
    r"(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
    r"|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def is_authority(text: str) -> bool:
    """True for "host", "host:port", "1.2.3.4:80", "[::1]:8080"; False for anything else."""
    match = AUTHORITY.fullmatch(text)
    if match is None or len(match["host"]) > 253:
        return False
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    return True


_HTTP_URL = re.compile(r"https?://(?P<authority>[^/?#]*)(?P<rest>[/?#].*)?", re.DOTALL)


def is_http_url(url: str) -> bool:
    """An http:// or https:// URL whose host[:port], after any user:password@, is what
    `is_authority` takes (a host name outside ASCII as IDNA spells it). False for what the HTTP
    client could not parse or connect to: "http://[::1/simple/", "http://host:99999/"."""
    match = _HTTP_URL.fullmatch(url)
    if match is None:
        return False
    authority = match["authority"].rpartition("@")[2]
    if not authority.isascii():
        try:
            authority = authority.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    try:  # what the parser the clients share cannot take ("[::1", a port past 65535)
        parts = urlsplit(url)
        _ = parts.hostname, parts.port
    except ValueError:
        return False
    return is_authority(authority)


def is_listen_host(text: str) -> bool:
    """What [server] host may be: "" (every interface), an IPv4 or IPv6 address as the socket
    takes it ("::", not "[::]") or a host name; not "host:port", nor text no resolver encodes."""
    if text == "":
        return True
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    match = AUTHORITY.fullmatch(text)
    return match is not None and match["ipv6"] is None and match["port"] is None and \
        len(text) <= 253


def seconds(value: Any) -> float:
    """A positive, finite number of seconds (TOML's `nan` and `inf` are not: every timer built
    on one would fail)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a positive number of seconds")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{value} is too large a number of seconds") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a number of seconds")
    if number <= 0:
        raise ValueError("expected a positive number of seconds")
    return number


def trusted_peers(value: Any, *, from_text: bool) -> bool | tuple[str, ...]:
    """true/false, or addresses and networks ("127.0.0.1", "10.0.0.0/8", "::1") as a list
    (TOML) or comma-separated (environment)."""
    if from_text and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("", "0", "false", "no", "off"):
            return False
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, bool):
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected true, false or a list of proxy addresses")
    networks = []
    for entry in value:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks) or False


def name_prefixes(value: Any, *, from_text: bool) -> tuple[str, ...]:
    """Project-name prefixes ("acme-", "Acme_") as a list (TOML) or comma-separated
    (environment), normalised as PEP 503 normalises names ("acme-")."""
    if from_text and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of name prefixes such as [\"acme-\"]")
    for prefix in value:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prefix, re.ASCII):
            raise ValueError(f"{prefix!r} is not the start of a project name")
    return tuple(normalize(prefix) for prefix in value)


def worker_count(value: Any, *, from_text: bool) -> int:
    """A whole number, or "auto": one per core."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return available_cores()
    if from_text and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not \"auto\" or a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected \"auto\" or a whole number")
    return value


def string_value(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def rule_list(value: Any, *, from_text: bool) -> tuple[str, ...]:
    """Names or PEP 508 specifiers: a TOML list, or comma-separated text (environment)."""
    if from_text and isinstance(value, str):
        value = policy.split_rules(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of names or specifiers such as \"mypkg==2.1.0\"")
    for entry in value:
        policy.parse_rule(entry)
    return tuple(entry.strip() for entry in value)
