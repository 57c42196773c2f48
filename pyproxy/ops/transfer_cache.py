"""The cache's part of `pyproxy export` / `pyproxy import` (ops.transfer): cached upstream
files and pages, out of a data directory's cache or a cluster's shared one, and into either.

Each cached file's record must agree with itself (key, body name, sha256) and its body, or
nothing of it is written; what the target already holds is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from pyproxy.model import StreamedFile, Unavailable
from pyproxy.ops.transfer_format import (
    CHUNK,
    Report,
    body_path,
    copy_stream_durably,
    key_name,
    read_jsonl,
    write_jsonl,
)
from pyproxy.stores.blobcache import BlobCache, OpenUpstream
from pyproxy.stores.blobindex import BlobEntry
from pyproxy.stores.pages import PageCache


class ExportableCache(Protocol):
    """What an export reads of a cache: ops.cacheops' LocalCache or ops.clustercache's."""

    def entries(self) -> list[BlobEntry]: ...

    def open_body(self, entry: BlobEntry) -> BinaryIO: ...


class SharedImport(Protocol):
    """What an import writes into a cluster's shared cache (ops.clustercache.SharedCache)."""

    max_size: int

    async def add(self, key: str, open_body: OpenUpstream, *, sha256: str, size: int) -> bool:
        """False if the cluster holds `key` already."""
        ...

    def bound(self) -> None: ...


def export_blobs(
    blobs: ExportableCache, target: Path, report: Report, log: Callable[[str], None]
) -> None:
    (target / "files").mkdir(parents=True, exist_ok=True)
    records = []
    for entry in blobs.entries():
        name = key_name(entry.key)
        try:
            with blobs.open_body(entry) as body:
                size = copy_stream_durably(body, target / "files" / name)
        except FileNotFoundError:  # evicted meanwhile
            (target / "files" / name).unlink(missing_ok=True)
            continue
        records.append({"key": entry.key, "sha256": entry.sha256, "size": size, "file": name})
        report.copied += 1
        report.bytes += size
        log(f"cached {entry.key}")
    write_jsonl(target / "files.jsonl", records)


def export_pages(pages: PageCache, target: Path, report: Report) -> None:
    (target / "pages").mkdir(parents=True, exist_ok=True)
    records = []
    for key, fields, body in pages.export_records():
        name = key_name(key)
        (target / "pages" / name).write_bytes(body)
        records.append({"key": key, "file": name, "fields": fields})
        report.copied += 1
        report.bytes += len(body)
    write_jsonl(target / "pages.jsonl", records)


def import_pages(pages: PageCache, source: Path, report: Report) -> None:
    """Into a data dir's page cache or a cluster's (blocking: database round trips)."""
    for record in read_jsonl(source / "cache" / "pages.jsonl"):
        key = str(record.get("key"))
        try:
            body = body_path(source / "cache" / "pages", record.get("file")).read_bytes()
            fields = record.get("fields")
            if not isinstance(fields, dict):
                raise ValueError("no page fields")
            stored = pages.import_record(key, fields, body)
        except (ValueError, OSError) as exc:
            report.fail(f"page {key}", str(exc))
            continue
        if stored:
            report.copied += 1
            report.bytes += len(body)
        else:
            report.skipped += 1


def _local_body(
    path: Path
) -> Callable[[], contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]]:
    @asynccontextmanager
    async def open_body() -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as reader:
                while chunk := await asyncio.to_thread(reader.read, CHUNK):
                    yield chunk

        yield chunks()

    return open_body


_SHA256 = re.compile(r"[0-9a-f]{64}")
# the keys stores.blobkeys makes: blob_key (a file's sha256, or "url:" + the hash of its URL),
# metadata_key ("meta:" + the .metadata's sha256, or + "url:" and the hash of its URL),
# made_metadata_key and ranged_metadata_key ("made:" or "ranged:" + its wheel's blob_key) and
# provenance_key ("prov:url:" + ...); "meta:" + a sha256 the record's does not match is how
# older versions keyed what they made
_CACHE_KEY = re.compile(
    r"(?P<meta>meta:|made:|ranged:|prov:)?(?P<url>url:)?(?P<hex>[0-9a-f]{64})"
)


def _record_problem(key: str, sha256: str, body_name: object) -> str | None:
    """Why a cached-file record disagrees with itself: served under `key`, the body must be the
    one the key names (a file's key is its sha256), kept in the export under the key's name."""
    if not _SHA256.fullmatch(sha256):
        return f"sha256 {sha256!r} is not a lowercase hex sha256"
    shape = _CACHE_KEY.fullmatch(key)
    if shape is None:
        return "not a cache key pyproxy makes"
    if not shape["meta"] and not shape["url"] and shape["hex"] != sha256:
        return f"the key names sha256 {shape['hex']}, the record says {sha256}"
    if body_name != key_name(key):
        return f"the record's body {body_name!r} is not the one exported for this key"
    return None


def _cache_records(source: Path, report: Report) -> Iterator[tuple[str, Path, str, int]]:
    """(key, body, sha256, size) of each cached-file record that agrees with itself."""
    for record in read_jsonl(source / "cache" / "files.jsonl"):
        key = str(record.get("key"))
        try:
            path = body_path(source / "cache" / "files", record.get("file"))
            sha256, size = str(record["sha256"]), int(record["size"])
        except (ValueError, KeyError, TypeError) as exc:
            report.fail(f"cached {key}", f"unusable record: {exc}")
            continue
        if (problem := _record_problem(key, sha256, record.get("file"))) is not None:
            report.fail(f"cached {key}", problem)
            continue
        yield key, path, sha256, size


async def import_blobs(blobs: BlobCache, source: Path, report: Report,
                       log: Callable[[str], None] = lambda _line: None) -> None:
    """Each file goes through the cache's own verified download path, read from the export,
    once its record's key, body name and sha256 agree (nothing is written for one that does not)."""
    for key, path, sha256, size in _cache_records(source, report):
        if await asyncio.to_thread(blobs.lookup, key) is not None:
            report.skipped += 1
            continue
        try:
            got = await blobs.fetch(key, sha256=sha256, size=size, open_upstream=_local_body(path))
            if isinstance(got, StreamedFile):
                async for _chunk in got.chunks:
                    pass
        except (Unavailable, OSError) as exc:
            report.fail(f"cached {key}", str(exc))
            continue
        if await asyncio.to_thread(blobs.lookup, key) is None:
            report.fail(f"cached {key}", f"{size} bytes do not fit the cache's max_size")
            continue
        report.copied += 1
        report.bytes += size
        log(f"cached {key}")


async def import_shared(shared: SharedImport, source: Path, report: Report,
                        log: Callable[[str], None] = lambda _line: None) -> None:
    """Into a cluster's shared cache: each object written as the nodes write theirs (size and
    sha256 checked before it is complete, a conditional create, then its index row), then the
    shared cache bounded to max_size as a node bounds it."""
    for key, path, sha256, size in _cache_records(source, report):
        if size > shared.max_size:
            report.fail(f"cached {key}", f"{size} bytes do not fit the cache's max_size")
            continue
        try:
            if not await shared.add(key, _local_body(path), sha256=sha256, size=size):
                report.skipped += 1
                continue
        except (Unavailable, OSError) as exc:
            report.fail(f"cached {key}", str(exc))
            continue
        report.copied += 1
        report.bytes += size
        log(f"cached {key}")
    await asyncio.to_thread(shared.bound)
