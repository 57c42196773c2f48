"""The one place that knows the data directory's layout.

    <data_dir>/
      auth.sqlite3        users and tokens (stores/auth.py keeps its file in the directory given)
      first-seen.sqlite3  when upstream files without an upload time were first seen
      private/            the private store: its database, bodies and upload temp files
      cache/pages/        the upstream page cache ([upstream])
      cache/upstreams/<name>/pages/   the page cache of each [[upstreams]] index
      cache/files/        the upstream file cache (the blob cache)
      cache/lists/        the project list (/simple/) rendered, as sent (web/simple.py)
      cache/copies/       a cluster node's local copies of private bodies from the bucket
                          (bounded by [cache] local_max_size; may be deleted at any time)
      metrics/<id>/       one running server's Prometheus values, beside its held <id>.lock
                          (a link to a directory in memory, /dev/shm, where there is one)
      spare               room kept for deletes and a start on a full disk (stores/space.py)

The server, the operator commands and the metrics set-up all take their paths from here, so
moving a part of the layout is a change to this file only. A leaf: imports nothing of pyproxy,
so the metrics set-up may use it before anything imports prometheus_client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    """The paths under one data directory; nothing is created or opened here."""

    root: Path

    @property
    def users(self) -> Path:
        """The directory the user store keeps its database in."""
        return self.root

    @property
    def private(self) -> Path:
        return self.root / "private"

    @property
    def first_seen(self) -> Path:
        """Not in cache/: losing it would restart the cooldown of the files it dates."""
        return self.root / "first-seen.sqlite3"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def pages(self) -> Path:
        return self.cache / "pages"

    def upstream_pages(self, name: str) -> Path:
        """A routed upstream's own page cache: no page of one index is taken for another's."""
        return self.cache / "upstreams" / name / "pages"

    @property
    def files(self) -> Path:
        return self.cache / "files"

    @property
    def rendered_lists(self) -> Path:
        return self.cache / "lists"

    @property
    def copies(self) -> Path:
        return self.cache / "copies"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def spare(self) -> Path:
        return self.root / "spare"
