"""The legacy upload endpoint twine and uv publish post to (POST /legacy/, /legacy and /).

The file part is streamed to a temp file while hashed, so memory does not grow with the
upload; nothing becomes visible until the private store commits the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from pyproxy import metrics
from pyproxy.publish.validate import (
    MAX_FORM_BYTES,
    UploadRejected,
    form_too_large,
    validate_file,
    validate_form,
)
from pyproxy.stores.auth import Identity, parse_basic
from pyproxy.stores.private import StoreRejected, new_file, not_allowed
from pyproxy.units import human_size
from pyproxy.web import readauth
from pyproxy.web.access_log import USER
from pyproxy.web.context import SERVICES
from pyproxy.web.middleware import text_error

log = logging.getLogger("pyproxy.upload")

_CHUNK = 256 * 1024
_FILE_FIELDS = {"content", "gpg_signature", "attestations"}
_R = TypeVar("_R", UploadRejected, StoreRejected)


class _Hashes:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.blake2_256 = hashlib.blake2b(digest_size=32)
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        for digest in (self.sha256, self.blake2_256, self.md5):
            digest.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {
            "sha256": self.sha256.hexdigest(),
            "blake2_256": self.blake2_256.hexdigest(),
            "md5": self.md5.hexdigest(),
        }


def _too_large(limit: int, name: str | None) -> UploadRejected:
    project = f" for project {name!r}" if name else ""
    rejection = UploadRejected(
        f"File too large. Limit{project} is {human_size(limit, exact=True)}"
        " (the operator sets it as [uploads] max_file_size)."
    )
    return _counted_as(rejection, "too_large")


# ---- why uploads are rejected, as a closed set of metrics labels (metrics.UPLOAD_REJECTIONS)

_REASON = "metrics_reason"


def _counted_as(rejection: _R, reason: str) -> _R:
    if not hasattr(rejection, _REASON):  # the innermost, most specific reason wins
        setattr(rejection, _REASON, reason)
    return rejection


@contextmanager
def _rejections_count_as(reason: str) -> Iterator[None]:
    try:
        yield
    except (UploadRejected, StoreRejected) as rejection:
        _counted_as(rejection, reason)
        raise


def _reason(rejection: UploadRejected | StoreRejected) -> str:
    tagged = getattr(rejection, _REASON, None)
    if tagged is not None:
        return tagged
    if isinstance(rejection, StoreRejected):  # the store refuses duplicates and non-maintainers
        return "forbidden" if rejection.status == 403 else "duplicate"
    return "malformed"  # what is left: the request itself (not multipart, odd parts, no file)


async def _authenticate(request: web.Request) -> Identity:
    credentials = parse_basic(request.headers.get(hdrs.AUTHORIZATION))
    if credentials is None:
        raise UploadRejected(
            "Authentication required: upload with a user name and password or an API token"
            " (user name __token__).",
            status=401,
        )
    identity = await readauth.identify(request)  # the same (cached) check as for reads
    if identity is None:
        raise UploadRejected("Invalid or non-existent authentication information.", status=403)
    return identity


async def _save_content(
    part: BodyPartReader, out: BinaryIO, limit: int, name: str | None
) -> tuple[int, dict[str, str]]:
    hashes, size = _Hashes(), 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, name)
        hashes.update(chunk)
        out.write(chunk)
    return size, hashes.hexdigests()


async def _read_field(part: BodyPartReader, budget: int) -> tuple[str, int]:
    """A text field and the bytes it cost, read in chunks against pyproxy's own form limit:
    `part.text()` would stop at aiohttp's client_max_size (1 MiB) with a bare 413."""
    raw = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        raw += chunk
        if len(raw) > budget:
            raise _counted_as(form_too_large(), "too_large")
    decoded = bytearray()
    try:
        async for piece in part.decode_iter(raw):  # Content-(Transfer-)Encoding, if any
            decoded += piece
            if len(decoded) > budget:
                raise _counted_as(form_too_large(), "too_large")
    except RuntimeError as exc:  # aiohttp's word for an unknown encoding
        raise UploadRejected(f"Malformed multipart body: {exc}") from None
    charset = part.get_charset(default="utf-8")
    try:
        return decoded.decode(charset), len(raw)
    except (UnicodeDecodeError, LookupError):
        raise UploadRejected(
            f"Malformed multipart body: the field {part.name!r} is not text in {charset!r}."
        ) from None


async def upload(request: web.Request) -> web.StreamResponse:
    try:
        response = await _upload(request)
    except (UploadRejected, StoreRejected) as rejection:
        metrics.UPLOADS_REJECTED.labels(_reason(rejection)).inc()
        log.info("upload rejected (%d): %s", rejection.status, rejection.message)
        headers = readauth.AUTH_CHALLENGE if rejection.status == 401 else None
        return text_error(rejection.status, rejection.message, headers)
    metrics.UPLOADS_ACCEPTED.inc()
    return response


async def _upload(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    with _rejections_count_as("unauthenticated"):
        identity = await _authenticate(request)
    request[USER] = identity.user  # for the access log
    if not request.content_type.startswith("multipart/"):
        raise UploadRejected("Upload payload must be multipart/form-data.")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise UploadRejected(f"Malformed multipart body: {_parse_error(exc)}") from None

    fields: dict[str, list[str]] = {key: [value] for key, value in request.query.items()}
    filename: str | None = None
    content_type: str | None = None
    size, digests = 0, {}
    field_bytes = 0
    limit = services.settings.max_upload_size
    with services.private.temporary_file() as body_path:
        with body_path.open("wb") as out:
            try:
                async for part in reader:
                    if not isinstance(part, BodyPartReader) or part.name is None:
                        raise UploadRejected("Malformed multipart body: a part has no name.")
                    if part.filename is not None:
                        if part.name not in _FILE_FIELDS:
                            raise UploadRejected(f"{part.name}: Should not be a tuple.")
                        if part.name != "content":
                            await part.release()  # signatures and attestations are not kept
                            continue
                        if filename is not None:
                            raise UploadRejected("Upload payload has more than one file.")
                        filename = part.filename
                        content_type = part.headers.get(hdrs.CONTENT_TYPE)
                        name = (fields.get("name") or [None])[0]
                        size, digests = await _save_content(part, out, limit, name)
                    else:
                        value, cost = await _read_field(part, MAX_FORM_BYTES - field_bytes)
                        field_bytes += cost
                        fields.setdefault(part.name, []).append(value)
            except (ValueError, AssertionError, HttpProcessingError) as exc:
                # e.g. a part whose headers do not parse (aiohttp's InvalidHeader)
                raise UploadRejected(f"Malformed multipart body: {_parse_error(exc)}") from None
        return await _accept(request, identity, fields, filename, content_type, body_path, size, digests)


def _parse_error(exc: Exception) -> str:
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return " ".join(str(message).split()) or type(exc).__name__


async def _accept(
    request: web.Request,
    identity: Identity,
    fields: dict[str, list[str]],
    filename: str | None,
    content_type: str | None,
    body_path: Path,
    size: int,
    digests: dict[str, str],
) -> web.StreamResponse:
    services = request.app[SERVICES]
    with _rejections_count_as("invalid_metadata"):
        form = validate_form(fields)
    if filename is None:
        raise UploadRejected("Upload payload does not have a file.")
    if not services.private.may_upload(identity.user, form.project, admin=identity.admin):
        raise not_allowed(identity.user, form.project)
    with _rejections_count_as("invalid_file"):
        checked = await asyncio.to_thread(
            validate_file, form, filename, content_type, body_path, digests
        )
    new = new_file(form, checked, size, digests, identity.user)
    if services.private.find_duplicate(new):
        log.info("identical re-upload of %s by %s: nothing to do", new.filename, identity.user)
        return web.Response(text="OK: identical file already stored\n")
    stored = await asyncio.to_thread(services.private.add_file, new, body_path, admin=identity.admin)
    log.info(
        "%s %s (%d bytes) by %s", "stored" if stored else "identical re-upload of",
        new.filename, size, identity.user,
    )
    return web.Response(text="OK\n")
