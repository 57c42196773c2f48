"""The proxy the environment names for an upstream URL: `HTTP_PROXY`, `HTTPS_PROXY` and
`NO_PROXY` (either case), as pip and curl read them, read once when the client is made and
decided once per host.

Not aiohttp's `trust_env`: that asks the environment and reads ~/.netrc in a thread on every
request (two thread hops for each page and file, which a cold install queues behind), and sends
the credentials a netrc file names for a host, or its `default` entry, to whatever host it is,
file hosts included, where pyproxy sends the index's credentials to the index alone. A proxy's
own credentials go in its URL (`http://user:password@proxy:3128`). An `https://` proxy URL is
ignored with a warning, as aiohttp does: it speaks plain HTTP to a proxy (CONNECT for TLS).
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from pyproxy.lru import BoundedLRU

log = logging.getLogger("pyproxy.upstream")

_HOSTS = 256


@dataclass(frozen=True, slots=True)
class Proxy:
    url: str  # without credentials
    headers: Mapping[str, str]  # Proxy-Authorization, from the credentials in its URL


class Proxies:
    def __init__(self) -> None:
        found = urllib.request.getproxies_environment()
        self._bypass = {"no": found["no"]} if "no" in found else {}
        self._by_scheme: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            if scheme in found and (proxy := _proxy(found[scheme])) is not None:
                self._by_scheme[scheme] = proxy
        self._chosen: BoundedLRU[tuple[str, str], tuple[Proxy | None]] = BoundedLRU(_HOSTS)

    def for_url(self, url: str) -> Proxy | None:
        """The proxy to reach `url` through; None: directly."""
        if not self._by_scheme:
            return None
        parts = urlsplit(url)
        host = parts.hostname or ""
        key = (parts.scheme, host)
        if (known := self._chosen.get(key)) is not None:
            return known[0]
        proxy = self._by_scheme.get(parts.scheme)
        # NO_PROXY as urllib (and so pip) reads it; in CPython, not in typeshed
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if proxy is not None and self._bypass and bypass(host, self._bypass):
            proxy = None
        self._chosen.put(key, (proxy,))
        return proxy


def _proxy(text: str) -> Proxy | None:
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        log.warning("ignoring the %s proxy from the environment: only http:// proxies are"
                    " supported", parts.scheme)
        return None
    host = parts.hostname or ""
    if not host:
        log.warning("ignoring a proxy from the environment that names no host")
        return None
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    headers = {}
    if parts.username is not None:
        headers["Proxy-Authorization"] = aiohttp.encode_basic_auth(
            unquote(parts.username), unquote(parts.password or "")
        )
    return Proxy(urlunsplit(("http", netloc, "", "", "")), headers)
