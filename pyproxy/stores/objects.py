"""The cluster's bucket ([storage] objects = "s3://bucket/prefix"): immutable objects under
content-addressed keys, over obstore's S3 client.

An object is written only as a conditional create (`If-None-Match: *`), so two nodes can never
write two versions of one key: the loser learns the key exists and uses the winner's object,
which has the same bytes because the key names them. A write is whole or absent (S3 makes a
multipart upload visible only when it completes); a large body, streamed or from a file, goes
through a staging key first, so that memory holds one part of it (put_stream_async, put_file).
Credentials and region come from the standard environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION), never from pyproxy's files; no message here shows them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PreconditionError
from obstore.store import S3Store

from pyproxy.stores.outages import BucketUnavailable as BucketUnavailable

log = logging.getLogger("pyproxy.objects")

_CHUNK = 1024 * 1024
_PART = 5 * 1024 * 1024  # S3's smallest multipart part
_ONE_PUT = 2 * _PART  # the largest body sent as one conditional PUT (held whole in memory)
STAGING = "staging/"  # large bodies on their way to their key (see put_stream_async)
STAGING_KEPT = timedelta(hours=1)  # a staging object older than this was left by a dead node
_SECRET = re.compile(r"(?i)(signature|credential|x-amz-[a-z-]+|authorization)=[^&\s]+")


class ObjectMissing(KeyError):
    """No object under that key."""


_USERINFO = re.compile(r"(://)[^/@\s]*@")
_S3_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
# where obstore asks for credentials when the environment has none (EC2's metadata service)
_METADATA_SERVICE = "169.254.169.254"


def describe(exc: BaseException) -> str:
    """One line of what obstore said, with S3's error code, and without secrets."""
    text = str(exc).strip()
    if _METADATA_SERVICE in text:
        return ("no credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set, and "
                "no instance metadata service gave any")
    first = text.splitlines()[0] if text else type(exc).__name__
    if (code := _S3_CODE.search(text)) is not None:  # the XML body's first line says nothing
        first = f"{first.partition('<?xml')[0].rstrip(': ')}: {code.group(1)}"
    return _SECRET.sub(r"\1=***", _USERINFO.sub(r"\1***@", first))[:300]


def parse_bucket_url(url: str) -> tuple[str, str]:
    """("bucket", "prefix") of "s3://bucket/prefix" (the prefix without slashes around it)."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", url)
    if match is None:
        raise ValueError(f"{url!r} is not s3://bucket[/prefix]")
    return match.group(1), match.group(2).strip("/")


class Bucket:
    def __init__(self, url: str, *, endpoint: str = "") -> None:
        self.url = url
        name, prefix = parse_bucket_url(url)
        self.name = name
        try:
            self._store = self._open(name, prefix, endpoint)
        except TypeError:  # obstore's word for no region in the environment or the endpoint
            raise BucketUnavailable(
                f"bucket {url}: no AWS region is set: set AWS_REGION (or [storage] s3_endpoint "
                "for an S3-compatible store)"
            ) from None
        except (BaseError, ValueError) as exc:
            raise BucketUnavailable(f"bucket {url}: cannot be set up: {describe(exc)}") from None

    @staticmethod
    def _open(name: str, prefix: str, endpoint: str) -> S3Store:
        return S3Store(
            name,
            prefix=prefix or None,
            endpoint=endpoint or None,
            virtual_hosted_style_request=False if endpoint else None,
            config={"copy_if_not_exists": "multipart"},  # put_stream_async's conditional copy
            client_options={
                "allow_http": endpoint.startswith("http://"),
                "connect_timeout": timedelta(seconds=5),
                "timeout": timedelta(seconds=60),
            },
            retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=10)},
        )

    def _unavailable(self, exc: BaseException, doing: str) -> BucketUnavailable:
        return BucketUnavailable(f"bucket {self.url}: cannot {doing}: {describe(exc)}")

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise BucketUnavailable unless the bucket answers a listing (for start-up)."""
        try:
            next(iter(obstore.list(self._store, prefix="blobs/", chunk_size=1)), None)
        except BaseError as exc:
            raise self._unavailable(exc, "list objects") from None

    # -- writing --------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path) -> bool:
        """Create `key` from a complete local file: True if this call wrote it, False if it
        already existed (the same bytes: the key names them). Blocking.

        A conditional create is one PUT that obstore holds whole in memory (an 80 MB upload
        cost 50 MB of RSS), so a file bigger than _ONE_PUT goes as a multipart upload read
        from the file one part at a time, to a staging key copied to `key` only if `key` does
        not exist (as put_stream_async does)."""
        if path.stat().st_size <= _ONE_PUT:
            try:
                obstore.put(self._store, key, path, mode="create")
            except (AlreadyExistsError, PreconditionError):
                return False
            except BaseError as exc:
                raise self._unavailable(exc, f"write {key}") from None
            return True
        staging = f"{STAGING}{uuid.uuid4().hex}"
        try:
            obstore.put(self._store, staging, path, chunk_size=_PART, max_concurrency=1)
            obstore.copy(self._store, staging, key, overwrite=False)
        except (AlreadyExistsError, PreconditionError):
            return False
        except BaseError as exc:
            raise self._unavailable(exc, f"write {key}") from None
        finally:
            with contextlib.suppress(BaseError, FileNotFoundError):
                obstore.delete(self._store, staging)
        return True

    async def put_stream_async(self, key: str, chunks: AsyncIterator[bytes]) -> bool:
        """Create `key` from bytes as they come: True if this call wrote it, False if it already
        existed. If `chunks` raises, nothing is written under `key` and its exception propagates.

        obstore sends a conditional create as one PUT of the whole body held in memory (a 63 MB
        wheel cost the node 52 MB more RSS), so only a body of up to _ONE_PUT bytes goes that
        way (no more memory than the other way's parts, in one request instead of four); a
        larger one streams as a multipart upload (one part in memory at a time) to a staging
        key of its own, which is copied to `key` only if `key` does not exist (the copy is a
        multipart upload that S3 completes with If-None-Match: copy_if_not_exists), then
        deleted. A staging upload never completed leaves no object."""
        stream = aiter(chunks)
        head: deque[bytes] = deque()
        held = 0
        async for chunk in stream:
            head.append(chunk)
            held += len(chunk)
            if held > _ONE_PUT:
                break
        else:
            return await self._create(key, b"".join(head))

        async def body() -> AsyncIterator[bytes]:
            while head:  # each let go once handed on
                yield head.popleft()
            async for chunk in stream:
                yield chunk

        staging = f"{STAGING}{uuid.uuid4().hex}"
        try:
            await obstore.put_async(
                self._store, staging, body(), chunk_size=_PART, max_concurrency=1
            )
            await obstore.copy_async(self._store, staging, key, overwrite=False)
        except (AlreadyExistsError, PreconditionError):
            return False
        except BaseError as exc:
            raise self._unavailable(exc, f"write {key}") from None
        finally:
            with contextlib.suppress(BaseError, FileNotFoundError):
                await obstore.delete_async(self._store, staging)
        return True

    async def _create(self, key: str, body: bytes) -> bool:
        try:
            await obstore.put_async(self._store, key, body, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        except BaseError as exc:
            raise self._unavailable(exc, f"write {key}") from None
        return True

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except (NotFoundError, FileNotFoundError):
            pass
        except BaseError as exc:
            raise self._unavailable(exc, f"delete {key}") from None

    async def delete_async(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            pass
        except BaseError as exc:
            raise self._unavailable(exc, f"delete {key}") from None

    # -- reading --------------------------------------------------------------------------------

    def size(self, key: str) -> int | None:
        """The object's size, None if there is none."""
        head = self.head(key)
        return None if head is None else head[0]

    def head(self, key: str) -> tuple[int, str] | None:
        """The object's size and ETag (unquoted; "" if the store gives none), None if there is
        none."""
        try:
            meta = obstore.head(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except BaseError as exc:
            raise self._unavailable(exc, f"look up {key}") from None
        return int(meta["size"]), str(meta.get("e_tag") or "").strip('"')

    def download(self, key: str, target: Path) -> int:
        """Copy the object into `target` (written whole, then the caller renames it); its size.
        ObjectMissing if there is none."""
        try:
            result = obstore.get(self._store, key)
            written = 0
            with target.open("wb") as out:
                for chunk in result.stream(min_chunk_size=_CHUNK):
                    out.write(chunk)
                    written += len(chunk)
            return written
        except (NotFoundError, FileNotFoundError):
            raise ObjectMissing(key) from None
        except BaseError as exc:
            raise self._unavailable(exc, f"read {key}") from None

    def chunks(self, key: str, *, start: int = 0) -> Iterator[bytes]:
        """Blocking: the object's bytes from `start`, as they arrive (one GET, constant memory).
        ObjectMissing if there is none."""
        options = {"range": {"offset": start}} if start else None
        try:
            result = obstore.get(self._store, key, options=options)  # type: ignore[arg-type]
            for chunk in result.stream(min_chunk_size=_CHUNK):
                yield bytes(chunk)
        except (NotFoundError, FileNotFoundError):
            raise ObjectMissing(key) from None
        except BaseError as exc:
            raise self._unavailable(exc, f"read {key}") from None

    async def stream(self, key: str, *, start: int = 0) -> AsyncIterator[bytes]:
        """The object's bytes from `start`, as they arrive. ObjectMissing if there is none."""
        options = {"range": {"offset": start}} if start else None
        try:
            result = await obstore.get_async(self._store, key, options=options)  # type: ignore[arg-type]
            async for chunk in result.stream(min_chunk_size=_CHUNK):
                yield bytes(chunk)
        except (NotFoundError, FileNotFoundError):
            raise ObjectMissing(key) from None
        except BaseError as exc:
            raise self._unavailable(exc, f"read {key}") from None

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        try:
            return bytes(
                await obstore.get_range_async(self._store, key, start=start, length=length)
            )
        except (NotFoundError, FileNotFoundError):
            raise ObjectMissing(key) from None
        except BaseError as exc:
            raise self._unavailable(exc, f"read {key}") from None

    def sweep_staging(self, older_than: timedelta = STAGING_KEPT) -> int:
        """Delete staging objects left by a node that died between completing one and copying
        it to its key (put_stream_async); how many (logged). Younger ones may be on their way.
        A bucket that does not answer is logged: another node's start sweeps them. Blocking,
        and only before the server forks its workers (obstore's blocking calls hang there)."""
        cutoff = datetime.now(UTC) - older_than
        swept = 0
        try:
            for batch in obstore.list(self._store, prefix=STAGING):
                for meta in batch:
                    if meta["last_modified"] < cutoff:
                        obstore.delete(self._store, meta["path"])
                        swept += 1
        except BaseError as exc:
            log.warning("could not sweep %s of bucket %s: %s", STAGING, self.url, describe(exc))
        if swept:
            log.info("removed %d staging objects a node left behind in %s", swept, self.url)
        return swept

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `prefix`."""
        try:
            for batch in obstore.list(self._store, prefix=prefix):
                for meta in batch:
                    yield str(meta["path"]), int(meta["size"])
        except BaseError as exc:
            raise self._unavailable(exc, f"list {prefix}") from None
