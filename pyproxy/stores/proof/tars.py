"""The proof of a tar, plain or under gzip or bzip2 (sdists): see stores.proof."""

from __future__ import annotations

import bz2
import tarfile
import zlib
from typing import BinaryIO, Final

from pyproxy.stores.proof.reading import CHUNK, Unproven, read_at

__all__ = ["check_tar", "check_tar_bz2", "check_tar_gz"]

_TAR_BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(_TAR_BLOCK)  # a tar's end-of-archive marker
# the member types whose header tarfile reads no data after, whatever their size field says
_TAR_NO_DATA: Final = frozenset({tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE,
                                 tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE})


def _check_tar_header(block: bytes) -> tarfile.TarInfo:
    if len(block) < _TAR_BLOCK:
        raise Unproven("shorter than one tar header")
    try:
        return tarfile.TarInfo.frombuf(block[:_TAR_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise Unproven(f"no valid tar header at the start: {exc}") from None


class _TarWalk:
    """Follows a tar fed to it in order, in pieces of any size, holding one block at most: each
    header must be sound and each member's data there, up to the end-of-archive marker (the
    zero block where tarfile stops reading; what follows it tarfile never reads)."""

    def __init__(self) -> None:
        self.ended = False
        self._block = bytearray()
        self._at = 0  # offset of the block being gathered
        self._skip = 0  # data bytes of the last member still to come
        self._member = ""
        self._data = 0  # the last member's data, in whole blocks
        self._extended = False  # an old GNU sparse header's extension blocks follow

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.ended:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                self._at += taken
                view = view[taken:]
                continue
            wanted = _TAR_BLOCK - len(self._block)
            self._block += view[:wanted]
            view = view[wanted:]
            if len(self._block) == _TAR_BLOCK:
                block = bytes(self._block)
                self._block.clear()
                self._header(block)
                self._at += _TAR_BLOCK

    def _header(self, block: bytes) -> None:
        if self._extended:
            self._extended = bool(block[504])
            if not self._extended:
                self._skip = self._data
            return
        if self._at and block == _ZERO_BLOCK:
            self.ended = True
            return
        if not self._at:
            info = _check_tar_header(block)
        else:
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise Unproven(f"a damaged tar header at byte {self._at}: {exc}") from None
        # as tarfile: every type but these has `size` bytes of data after its header
        self._data = 0 if info.type in _TAR_NO_DATA else -(-info.size // _TAR_BLOCK) * _TAR_BLOCK
        self._member = info.name
        if info.type == tarfile.GNUTYPE_SPARSE and block[482]:
            self._extended = True
        else:
            self._skip = self._data

    def finish(self) -> None:
        """At the end of the data: raise Unproven unless the archive ended."""
        if self.ended:
            return
        if not self._at:
            raise Unproven("shorter than one tar header")
        if self._skip:
            raise Unproven(f"a tar cut short: {self._skip} bytes of {self._member!r} missing")
        raise Unproven("a tar cut short: no end-of-archive marker after its last member")


def check_tar(file: BinaryIO, size: int) -> None:
    file.seek(0)
    walk = _TarWalk()
    while not walk.ended and (data := file.read(CHUNK)):
        walk.feed(data)
    walk.finish()


def check_tar_gz(file: BinaryIO, size: int) -> None:
    head = read_at(file, 0, 10)
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        raise Unproven("not gzip-compressed")
    if head[3] & 0xE0:
        raise Unproven("a gzip header with reserved flags set")
    file.seek(0)
    walk = _TarWalk()
    data = b""
    try:
        # member by member (gzip allows several, and zero bytes between them, as GzipFile
        # reads them): each to its end, where zlib checks its CRC-32 and length, until the tar
        # in them ends; what follows that member tarfile never reads
        while True:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header too
            while not decompressor.eof:
                if not data and not (data := file.read(CHUNK)):
                    # some output may be pending inside zlib still
                    if not (out := decompressor.decompress(b"", CHUNK)):
                        raise Unproven("a gzip stream cut short: no end-of-stream marker")
                    walk.feed(out)
                    continue
                walk.feed(decompressor.decompress(data, CHUNK))  # bounded: a bomb costs no memory
                data = decompressor.unconsumed_tail
            if walk.ended:
                return
            data = decompressor.unused_data
            while not (data := data.lstrip(b"\x00")):
                if not (data := file.read(CHUNK)):
                    walk.finish()  # the stream ends before the tar does: raises
    except zlib.error as exc:
        raise Unproven(f"a damaged gzip stream: {exc}") from None


def check_tar_bz2(file: BinaryIO, size: int) -> None:
    if read_at(file, 0, 3) != b"BZh":
        raise Unproven("not bzip2-compressed")
    file.seek(0)
    walk = _TarWalk()
    data = b""
    try:
        # stream by stream, each to its end (where bz2 checks its CRCs), until the tar ends
        while True:
            decompressor = bz2.BZ2Decompressor()
            while not decompressor.eof:
                if decompressor.needs_input and not data and not (data := file.read(CHUNK)):
                    raise Unproven("a bzip2 stream cut short: no end-of-stream marker")
                walk.feed(decompressor.decompress(data, CHUNK))
                data = b""
            if walk.ended:
                return
            if not (data := decompressor.unused_data) and not (data := file.read(CHUNK)):
                walk.finish()  # raises
    except (OSError, EOFError) as exc:
        raise Unproven(f"a damaged bzip2 stream: {exc}") from None
