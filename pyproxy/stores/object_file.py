"""An object of the bucket as a read-only, seekable binary file, for the checks that read a file
(hashing it, stores.proof's look at an archive's structure) without a copy on disk.

Reading on from where the last read ended continues one streaming GET; a seek elsewhere starts
another from there. So a whole read is one request, and a zip's check (its tail, then its
central directory) a few; memory holds one chunk at a time.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from pyproxy.stores.objects import Bucket, ObjectMissing

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["open_object"]

_BUFFER = 1024 * 1024


class _ObjectReader(io.RawIOBase):
    def __init__(self, bucket: Bucket, key: str, size: int) -> None:
        super().__init__()
        self._bucket = bucket
        self._key = key
        self._size = size  # as recorded: only for seeks from the end
        self._pos = 0
        self._stream: Iterator[bytes] | None = None
        self._at = 0  # the offset of the first byte of `_held` (or of the stream's next one)
        self._held = memoryview(b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "a negative offset", self._key)
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._stream is None or self._at != self._pos:
            if self._pos >= self._size:  # a GET past the end would be refused (416)
                return 0
            self._open(self._pos)
        assert self._stream is not None
        while not self._held:
            chunk = next(self._stream, None)
            if chunk is None:
                return 0
            self._held = memoryview(chunk)
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._held))
        target[:count] = self._held[:count]
        self._held = self._held[count:]
        self._pos += count
        self._at += count
        return count

    def _open(self, start: int) -> None:
        self._drop()
        stream = self._bucket.chunks(self._key, start=start)
        try:
            first = next(stream, b"")  # the GET itself: a missing object shows here
        except ObjectMissing:
            raise FileNotFoundError(errno.ENOENT, "no such object", self._key) from None
        self._stream, self._held, self._at = stream, memoryview(first), start

    def _drop(self) -> None:
        if self._stream is not None:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        self._stream, self._held = None, memoryview(b"")

    def close(self) -> None:
        self._drop()
        super().close()


def open_object(bucket: Bucket, key: str, size: int) -> BinaryIO:
    """The object `key` (recorded as `size` bytes) to read like a file; FileNotFoundError on
    the first read if there is no such object, BucketUnavailable if the bucket does not answer."""
    return io.BufferedReader(_ObjectReader(bucket, key, size), buffer_size=_BUFFER)
