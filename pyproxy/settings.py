"""The typed settings object every part of pyproxy reads; where its values come from, and how
each is checked, is pyproxy/config.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pyproxy.config_values import available_cores
from pyproxy.upstream_settings import UpstreamSettings

__all__ = ["DEFAULT_UPSTREAM", "Settings"]

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
