"""The bodies of private files on a cluster node: in the bucket under
`private/<aa>/<bb>/<sha256>`, with a bounded local copy per node for sendfile.

An upload is staged in a flock'd temp file on this node (as stores/private_files does), and
`move_into_place` writes it to the bucket as a conditional create before the record commits:
when it returns, the body is durable in the bucket; a key that exists already holds the same
bytes (the key names them). The upload's file then becomes this node's local copy.

Reading is the record, then `local()`: a stat of the local copy, no bucket request. A node with
no copy raises NotLocal, and the repository awaits `fetch()`, which downloads the object into
the local copies (verified, renamed into place whole; the requests of one process share one
download, several processes may each download, which is harmless). A body bigger than the
whole local bound, or one that cannot be copied locally (a full disk), is streamed from the
bucket, its last chunk held back until its sha256 matched.

Faults: the bucket down makes a read without a local copy, and an upload, a model.Unavailable
(503) whose message names the bucket, never a NotFound; a local copy keeps being served. Private
bodies are never evicted from the bucket: only `remove_unreferenced` deletes there, with the
set of bodies the records refer to.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Container
from contextlib import AbstractContextManager
from pathlib import Path

from pyproxy.model import FileSource, LocalFile, StreamedFile, Unavailable
from pyproxy.stores.local_copies import Copy, CopyMismatch, LocalCopies
from pyproxy.stores.objects import Bucket, BucketUnavailable, ObjectMissing
from pyproxy.stores.private_files import NotLocal, UploadTemps

__all__ = ["PREFIX", "BucketFiles"]

log = logging.getLogger("pyproxy.bucket_files")

PREFIX = "private/"


class BucketFiles:
    def __init__(self, bucket: Bucket, staging: Path, copies: LocalCopies) -> None:
        self.bucket = bucket
        self.copies = copies
        self.staging = staging  # where uploads arrive, on this node
        self._temps = UploadTemps(staging)
        self._flights: dict[str, asyncio.Future[Copy]] = {}

    @staticmethod
    def key(sha256: str) -> str:
        return f"{PREFIX}{sha256[:2]}/{sha256[2:4]}/{sha256}"

    # -- reading ----------------------------------------------------------------------------------

    def local(self, sha256: str, size: int | None) -> LocalFile:
        """This node's copy (a stat); NotLocal if it has none."""
        copy = self.copies.find(sha256)
        if copy is None or (size is not None and copy.size != size):
            raise NotLocal(sha256, size)
        return LocalFile(copy.path, copy.size, sha256, cache="private")

    async def fetch(self, sha256: str, size: int | None) -> FileSource:
        """A local copy, downloaded from the bucket if need be (Unavailable when it cannot)."""
        copy = self.copies.find(sha256)
        if copy is not None and (size is None or copy.size == size):
            return LocalFile(copy.path, copy.size, sha256, cache="private")
        if copy is not None:  # not what fill() verified: damaged on this disk since
            self.copies.discard(sha256)
        if size is not None and size > self.copies.max_size:
            return await self._streamed(sha256, size)
        flight = self._flights.get(sha256)
        if flight is None:
            flight = asyncio.get_running_loop().run_in_executor(
                None, self._download, sha256, size
            )
            self._flights[sha256] = flight
            flight.add_done_callback(lambda done: self._landed(sha256, done))
        try:
            copy = await asyncio.shield(flight)  # a client going away stops no one else's read
        except OSError as exc:  # this node's disk, not the bucket: serve it without a copy
            log.warning("no local copy of private file %s (%s): streaming it", sha256, exc)
            return await self._streamed(sha256, size)
        except (BucketUnavailable, ObjectMissing, CopyMismatch) as exc:
            raise self._unreadable(sha256, exc) from None
        return LocalFile(copy.path, copy.size, sha256, cache="private")

    def _landed(self, sha256: str, done: asyncio.Future[Copy]) -> None:
        if self._flights.get(sha256) is done:
            del self._flights[sha256]
        if not done.cancelled():
            done.exception()  # retrieved, even when every waiter went away

    def _download(self, sha256: str, size: int | None) -> Copy:
        key = self.key(sha256)
        return self.copies.fill(
            sha256, sha256=sha256, size=size, write=lambda temp: self.bucket.download(key, temp)
        )

    def _unreadable(self, sha256: str, exc: Exception) -> Unavailable:
        if isinstance(exc, BucketUnavailable):
            return Unavailable(f"private file {sha256} is not copied to this node, and {exc}")
        if isinstance(exc, ObjectMissing):
            log.error("the bucket %s has no object %s: its record has no body", self.bucket.url,
                      self.key(sha256))
            return Unavailable(f"the body of private file {sha256} is missing from the bucket")
        log.error("the bucket's object for private file %s is not its body: %s", sha256, exc)
        return Unavailable(f"the bucket's copy of private file {sha256} is damaged")

    async def _streamed(self, sha256: str, size: int | None) -> StreamedFile:
        """The object from the bucket as it arrives; its first chunk read here, so that a
        bucket that is down is a 503 before any header was sent."""
        chunks = self._verified(sha256, size)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""
        return StreamedFile(_after(first, chunks), size, sha256, cache="private")

    async def _verified(self, sha256: str, size: int | None) -> AsyncIterator[bytes]:
        digest, total, held = hashlib.sha256(), 0, b""
        try:
            async for chunk in self.bucket.stream(self.key(sha256)):
                digest.update(chunk)
                total += len(chunk)
                if held:
                    yield held
                held = chunk
        except (BucketUnavailable, ObjectMissing) as exc:
            raise self._unreadable(sha256, exc) from None
        if digest.hexdigest() != sha256 or (size is not None and total != size):
            mismatch = CopyMismatch(f"{total} bytes with sha256 {digest.hexdigest()}")
            raise self._unreadable(sha256, mismatch)
        yield held

    def path(self, sha256: str) -> Path:
        """A local file of the body, downloaded now if this node has none. Blocking: for
        commands (export); the server reads through `local` and `fetch`."""
        copy = self.copies.find(sha256)
        if copy is None:
            try:
                copy = self._download(sha256, None)
            except (BucketUnavailable, ObjectMissing, CopyMismatch) as exc:
                raise self._unreadable(sha256, exc) from None
        return copy.path

    # -- writing (blocking: the store calls these in a worker thread) ----------------------------

    def temporary_file(self) -> AbstractContextManager[Path]:
        return self._temps.temporary_file()

    def move_into_place(self, source: Path, sha256: str) -> None:
        """Write the body to the bucket (a conditional create: there already is fine), durable
        when this returns; the file becomes this node's copy."""
        try:
            self.bucket.put_file(self.key(sha256), source)
        except BucketUnavailable as exc:
            raise Unavailable(f"the upload was not stored: {exc}") from None
        self.copies.adopt(sha256, source)

    def sweep_temporary(self) -> int:
        return self._temps.sweep()

    def remove_unreferenced(self, referenced: Container[str]) -> int:
        """Delete the bucket's private bodies that no record refers to (the records' store
        holds the lock uploads move bodies in under); how many."""
        removed = 0
        try:
            for key, _size in list(self.bucket.keys(PREFIX)):
                sha256 = key.rsplit("/", 1)[-1]
                if sha256 not in referenced:
                    self.bucket.delete(key)
                    self.copies.discard(sha256)
                    removed += 1
        except BucketUnavailable as exc:
            raise Unavailable(f"unreferenced private bodies were not removed: {exc}") from None
        return removed


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
