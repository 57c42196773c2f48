"""What /ready and /metrics read beyond the data directory: whether each upstream answered
lately, a probe of each, and the upstream file cache's gauges."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.http_answers import UpstreamError
from pyproxy.stores.filecache import FileCache

__all__ = ["Health"]


class Health:
    """What /ready and /metrics read beyond the data directory: whether upstream answered
    lately, a probe of it, and the upstream file cache's gauges."""

    def __init__(
        self, clients: Sequence[tuple[str, UpstreamClient]] = (), blobs: FileCache | None = None
    ) -> None:
        # (name, client) of each upstream contacted: "" for [upstream]; none when offline
        self._clients = tuple(clients)
        self.blobs = blobs

    @property
    def watches_upstream(self) -> bool:
        return bool(self._clients)

    def upstream_answered_within(self, seconds: float) -> bool:
        """A request to each upstream succeeded within `seconds`, and none has failed since."""
        return bool(self._clients) and all(
            _answered_within(client, seconds) for _name, client in self._clients
        )

    async def probe_upstream(self) -> str | None:
        """None if every upstream answers a HEAD of its index, else what is wrong with the
        first that does not (one line)."""
        for name, client in self._clients:
            try:
                await client.probe()
            except UpstreamError as exc:
                return f"upstream {name + ' ' if name else ''}did not answer: {exc}"
        return None

    def cache_gauges(self) -> Iterator[tuple[str, str, float]]:
        """(name, help, value) of state all workers share, read when asked."""
        if self.blobs is None:
            return
        yield (
            "pyproxy_cache_size_bytes", "Bytes the upstream file cache holds (files and index).",
            self.blobs.volume(),
        )
        yield (
            "pyproxy_cache_max_size_bytes", "The cache's bound ([cache] max_size).",
            self.blobs.max_size,
        )


def _answered_within(client: UpstreamClient, seconds: float) -> bool:
    succeeded, failed = client.last_success, client.last_failure
    return (
        succeeded is not None
        and time.monotonic() - succeeded < seconds
        and (failed is None or failed <= succeeded)
    )
