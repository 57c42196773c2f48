"""What every proof (stores.proof) reads with: its one error, and bounded reads of the file."""

from __future__ import annotations

from typing import BinaryIO, Final

__all__ = ["CHUNK", "Unproven", "read_at"]

CHUNK: Final = 64 * 1024  # what a check reads (and decompresses to) at a time


class Unproven(Exception):
    """The body is not a well-formed file of its kind; the message says what is wrong."""


def read_at(file: BinaryIO, offset: int, count: int) -> bytes:
    file.seek(offset)
    return file.read(count)
