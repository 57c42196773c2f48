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

Repairs: the bucket's object is the only shared copy, and it can be damaged or lost (a bad
restore). `problem()` says what is wrong with it (a HEAD: its size, and its ETag against the
record's md5 when there is one; else it is read and hashed), `restore()` puts verified bytes back
(an identical re-upload's), and a node serving its own local copy checks the bucket's object
behind it at most once per `audit_interval` per file (`heal()`: the copy is verified first).
Every write is the store's conditional create; a damaged object is deleted just before it, only
once its bytes were found not to be the body's.

Faults: the bucket down makes a read without a local copy, and an upload, a model.Unavailable
(503) whose message names the bucket, never a NotFound; a local copy keeps being served. Private
bodies are never evicted from the bucket: only `remove_unreferenced` deletes there, with the
set of bodies the records refer to.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Container
from contextlib import AbstractContextManager
from pathlib import Path

from pyproxy.model import FileSource, LocalFile, StreamedFile, Unavailable
from pyproxy.stores.local_copies import Copy, CopyMismatch, LocalCopies
from pyproxy.stores.objects import Bucket, BucketUnavailable, ObjectMissing
from pyproxy.stores.private_files import NotLocal, Unrestorable, UploadTemps, digests, verified

__all__ = ["PREFIX", "BucketFiles"]

log = logging.getLogger("pyproxy.bucket_files")

PREFIX = "private/"
AUDIT_INTERVAL = 3600.0  # how often a node checks the bucket's object behind a copy it serves


class BucketFiles:
    def __init__(self, bucket: Bucket, staging: Path, copies: LocalCopies) -> None:
        self.bucket = bucket
        self.copies = copies
        self.staging = staging  # where uploads arrive, on this node
        self._temps = UploadTemps(staging)
        self._flights: dict[str, asyncio.Future[Copy]] = {}
        self.audit_interval = AUDIT_INTERVAL
        self._audited: dict[str, float] = {}  # sha256 -> monotonic time of its last audit here
        self._md5s: dict[str, str] = {}  # sha256 -> the body's md5, from a copy verified here
        self._read_good: dict[str, str] = {}  # sha256 -> an ETag whose object read as the body

    @staticmethod
    def key(sha256: str) -> str:
        return f"{PREFIX}{sha256[:2]}/{sha256[2:4]}/{sha256}"

    # -- reading ----------------------------------------------------------------------------------

    def local(self, sha256: str, size: int | None) -> LocalFile:
        """This node's copy (a stat); NotLocal if it has none."""
        copy = self.copies.find(sha256)
        if copy is None or (size is not None and copy.size != size):
            raise NotLocal(sha256, size)
        if size is not None:
            self._audit_soon(sha256, size)
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

    # -- checking and repairing (blocking) ------------------------------------------------------

    def problem(self, sha256: str, size: int | None, *, md5: str | None = None
                ) -> str | None:
        """Why the bucket's object is not the record's body (`size` bytes, `sha256`); None if it
        is. Given `md5`, a HEAD is enough when the ETag is the md5's (a single PUT's, or a
        one-part copy's) or one a read here found good before (any rewrite changes it);
        otherwise, or without `md5` (`pyproxy cache verify`), the object is read and hashed."""
        key = self.key(sha256)
        try:
            head = self.bucket.head(key)
            if head is None:
                return "its body is missing from the bucket"
            if size is not None and head[0] != size:
                return f"the bucket's object is {head[0]} bytes, {size} recorded"
            if md5 is not None and (
                _etag_vouches(head[1], md5) or self._read_good.get(sha256) == head[1]
            ):
                return None
            digest = hashlib.sha256()
            for chunk in self.bucket.chunks(key):
                digest.update(chunk)
        except ObjectMissing:
            return "its body is missing from the bucket"
        except BucketUnavailable as exc:
            raise Unavailable(f"private file {sha256} cannot be checked: {exc}") from None
        if digest.hexdigest() != sha256:
            return f"the bucket's object has sha256 {digest.hexdigest()}"
        if head[1]:
            self._read_good[sha256] = head[1]  # e.g. SSE-KMS: ETags that are no md5
        return None

    def restore(self, sha256: str, source: Path, *, origin: str = "an identical re-upload"
                ) -> bool:
        """Put the body back in the bucket from `source`, once its sha256 is checked
        (Unrestorable if it is not the body); True if this wrote it, False if a good object
        was there (another node put it back meanwhile)."""
        size, md5 = verified(source, sha256)
        key = self.key(sha256)
        try:
            if not self.bucket.put_file(key, source):  # a conditional create: something's there
                head = self.bucket.head(key)
                if head is not None and head[0] == size and _etag_vouches(head[1], md5):
                    return False
                # not these bytes (the caller found them damaged): a conditional create cannot
                # replace them, so they go first; a node racing us writes the same bytes
                log.warning("deleting the damaged object %s from the bucket %s", key,
                            self.bucket.url)
                self.bucket.delete(key)
                if not self.bucket.put_file(key, source):
                    return False
        except BucketUnavailable as exc:
            raise Unavailable(f"private file {sha256} was not repaired: {exc}") from None
        log.warning("repaired private file %s: its body was written again to %s from %s",
                    sha256, key, origin)
        self._read_good.pop(sha256, None)
        self.copies.adopt(sha256, source)
        return True

    def heal(self, sha256: str, size: int | None) -> bool:
        """Put the body back from this node's local copy, verified first (a damaged copy is
        dropped); False if there is none to put back, or nothing needed it."""
        copy = self.copies.find(sha256)
        if copy is None or (size is not None and copy.size != size):
            return False
        try:
            return self.restore(sha256, copy.path, origin="this node's local copy")
        except Unrestorable:
            log.warning("the local copy of private file %s is damaged on this disk: removed",
                        sha256)
            self.copies.discard(sha256)
        except FileNotFoundError:  # trimmed meanwhile
            pass
        return False

    def _audit_soon(self, sha256: str, size: int) -> None:
        """In the background, at most once per audit_interval: does the bucket still hold the
        body of a copy served here? Other nodes have only the bucket's."""
        now = time.monotonic()
        if now - self._audited.get(sha256, float("-inf")) < self.audit_interval:
            return
        self._audited[sha256] = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a command: `pyproxy cache verify` checks every body
            return
        loop.run_in_executor(None, self._audit, sha256, size)

    def _audit(self, sha256: str, size: int) -> None:
        copy = self.copies.find(sha256)
        if copy is None:
            return
        try:
            md5 = self._md5s.get(sha256)
            if md5 is None:  # read once per process: the ETag is compared with it
                copy_size, actual, md5 = digests(copy.path)
                if copy_size != size or actual != sha256:
                    log.warning("the local copy of private file %s is damaged on this disk:"
                                " removed (the next read downloads it again)", sha256)
                    self.copies.discard(sha256)
                    return
                self._md5s[sha256] = md5
            problem = self.problem(sha256, size, md5=md5)
            if problem is not None:
                log.error("private file %s: %s; putting it back from this node's local copy",
                          sha256, problem)
                self.heal(sha256, size)
        except (Unavailable, OSError) as exc:  # the bucket down, the copy trimmed: next time
            log.info("could not check the bucket's object of private file %s: %s", sha256, exc)

    # -- writing (blocking: the store calls these in a worker thread) ----------------------------

    def temporary_file(self) -> AbstractContextManager[Path]:
        return self._temps.temporary_file()

    def move_into_place(self, source: Path, sha256: str) -> None:
        """Write the body to the bucket (a conditional create: there already is fine), durable
        when this returns; the file becomes this node's copy. A key that exists is checked (a
        HEAD, rarely more): another file's .metadata may be the same bytes, and a damaged
        object there is replaced rather than recorded again."""
        try:
            created = self.bucket.put_file(self.key(sha256), source)
        except BucketUnavailable as exc:
            raise Unavailable(f"the upload was not stored: {exc}") from None
        if not created:
            size, actual, md5 = digests(source)
            if actual != sha256:
                return  # not these bytes: the caller's mistake, the object stays
            problem = self.problem(sha256, size, md5=md5)
            if problem is not None:
                log.error("private file %s: %s; writing it again from an upload", sha256,
                          problem)
                self.restore(sha256, source, origin="an upload of the same bytes")
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


def _etag_vouches(etag: str, md5: str) -> bool:
    """Whether S3's ETag says the object is the bytes whose md5 this is: a single PUT's ETag is
    their md5, a one-part multipart copy's (bodies over objects._ONE_PUT) the md5 of that md5
    with "-1". Others (more parts, SSE-KMS) say nothing: the object is read instead."""
    md5 = md5.lower()
    etag = etag.lower()
    return etag == md5 or etag == hashlib.md5(bytes.fromhex(md5), usedforsecurity=False
                                              ).hexdigest() + "-1"


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
