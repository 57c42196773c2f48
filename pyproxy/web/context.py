"""What every handler needs (`Services`, built by pyproxy.compose), stored on the application."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from pyproxy.compose import Services
from pyproxy.config_values import is_authority

__all__ = ["SERVICES", "Services", "origin"]

SERVICES = web.AppKey("services", Services)


def origin(request: web.Request) -> str:
    """scheme://host[:port] for the absolute URLs pyproxy writes: `[server] base_url` when set;
    else X-Forwarded-Proto/-Host when `[server] trust_forwarded` trusts the peer; else the
    request's own scheme and Host, or, for an absolute-form request target
    ("GET http://host:port/simple/ HTTP/1.1"), the target's authority, which replaces Host
    (RFC 9112 3.2.2). A host that is not a plain host[:port] is a 400, never written into a
    page."""
    settings = request.app[SERVICES].settings
    if settings.base_url:
        return settings.base_url.rstrip("/")
    scheme, host = request.scheme, request.host
    target = _target_authority(request.raw_path)
    if target is not None:
        # aiohttp's `host` is then the target's host without its port, so the target is read
        # here, and checked as a Host header is
        if not _is_authority(target):
            raise web.HTTPBadRequest(
                text=f"the request target's authority {target[:64]!r} is not a host[:port]\n"
            )
        host = target
    trust = settings.trust_forwarded
    if trust is not False and trusted_peer(trust, request.remote):
        scheme = _first(request, "X-Forwarded-Proto", scheme).lower()
        host = _first(request, "X-Forwarded-Host", host)
        if scheme not in ("http", "https"):
            raise web.HTTPBadRequest(
                text=f"X-Forwarded-Proto: {scheme[:64]!r} is not http or https\n"
            )
        if not _is_authority(host):
            raise web.HTTPBadRequest(text=f"X-Forwarded-Host: {host[:64]!r} is not a host[:port]\n")
    elif not _is_authority(host):
        raise web.HTTPBadRequest(text=f"Host: {host[:64]!r} is not a host[:port]\n")
    return f"{scheme}://{host}"


# a server sees a handful of Host values: check each once (bounded: they are the clients')
_is_authority = lru_cache(maxsize=256)(is_authority)


def _target_authority(target: str) -> str | None:
    """The authority of an absolute-form request target ("http://host:port/path?query": the
    raw text between "//" and the path, user info and all, for the caller to check), or None
    for the origin form ("/path"), which leaves the authority to Host."""
    if target.startswith("/"):
        return None
    _scheme, sep, rest = target.partition("://")
    if not sep:
        return None  # "*" (OPTIONS) or the authority form (CONNECT): no route takes them
    end = len(rest)
    for delimiter in "/?#":
        if (at := rest.find(delimiter)) != -1:
            end = min(end, at)
    return rest[:end]


def _first(request: web.Request, header: str, default: str) -> str:
    """The first entry of a (possibly comma-joined, possibly repeated) header: the one the
    proxy nearest the client wrote."""
    value = request.headers.get(header)
    if value is None:
        return default
    return value.split(",", 1)[0].strip()


def trusted_peer(trust: bool | tuple[str, ...], remote: str | None) -> bool:
    """Whether [server] trust_forwarded lets `remote` (a peer address) set forwarded headers."""
    if isinstance(trust, bool):
        return trust
    return remote is not None and _in_networks(remote, trust)


@lru_cache(maxsize=256)
def _in_networks(remote: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(address in ipaddress.ip_network(network) for network in networks)
