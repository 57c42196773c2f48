"""What the repository, the offline filter and /metrics use of the upstream file cache: a
one-machine stores.blobcache.BlobCache, or a cluster node's stores.clusterblobs.ClusterBlobCache."""

from __future__ import annotations

from typing import Protocol

from pyproxy.model import FileSource, LocalFile
from pyproxy.stores.blobcache import Ask, OpenUpstream

__all__ = ["FileCache"]


class FileCache(Protocol):
    max_size: int  # the bound of what volume() counts

    async def fetch(
        self, key: str, *, sha256: str | None, size: int | None, open_upstream: OpenUpstream,
        filename: str | None = None,
    ) -> FileSource: ...

    async def fetch_first(
        self, key: str, *, sha256: str | None, size: int | None, ask: Ask,
        filename: str | None = None,
    ) -> FileSource | None:
        """As fetch, where the one who would download (of the machine, of the cluster) asks
        first, inside the single flight: see BlobCache.fetch_first."""
        ...

    async def hit(self, key: str, *, sha256: str | None, size: int | None) -> LocalFile | None:
        """The cached file if it is the one announced, starting nothing (a use)."""
        ...

    def mismatched(self, key: str) -> bool:
        """Whether a download of `key` here failed its hash check (lately)."""
        ...

    def lookup(self, key: str) -> LocalFile | None:
        """This machine's committed copy, or None (blocking; a use)."""
        ...

    def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` are cached (blocking; for offline mode, not a use)."""
        ...

    async def cached(self, key: str, *, filename: str | None = None) -> FileSource | None:
        """For offline mode: the cached file, never downloaded from upstream; None if it is
        not cached (a use)."""
        ...

    def digests(self, keys: list[str]) -> dict[str, str]:
        """The sha256 of each of `keys` that is cached (blocking; not a use)."""
        ...

    def sizes(self, keys: list[str]) -> dict[str, int]:
        """The byte length of each of `keys` that is cached, committed once verified: one
        query for them all (blocking; not a use)."""
        ...

    def volume(self) -> int: ...

    def flush_uses(self) -> int: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
