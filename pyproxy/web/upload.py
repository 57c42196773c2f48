"""The legacy upload endpoint twine and uv publish post to (POST /legacy/, /legacy and /).

The HTTP side only: authenticate, stream the multipart body (the file part into the publish
service's temp file, hashed on the way, so memory does not grow with the upload), then hand the
form to `publish.service.Publisher`, which decides. Nothing becomes visible until the private
store commits the record.
"""

from __future__ import annotations

import logging

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from pyproxy import metrics
from pyproxy.publish.rejections import MAX_FORM_BYTES, UploadRejected, form_too_large
from pyproxy.publish.service import Published, Received, Submission, Uploader
from pyproxy.stores.auth import Identity, parse_basic
from pyproxy.units import human_size
from pyproxy.web import readauth
from pyproxy.web.access_log import USER
from pyproxy.web.context import SERVICES
from pyproxy.web.middleware import text_error

log = logging.getLogger("pyproxy.upload")

_CHUNK = 256 * 1024
_FILE_FIELDS = {"content", "gpg_signature", "attestations"}


def _too_large(limit: int, name: str | None) -> UploadRejected:
    project = f" for project {name!r}" if name else ""
    return UploadRejected(
        f"File too large. Limit{project} is {human_size(limit, exact=True)}"
        " (the operator sets it as [uploads] max_file_size).",
        kind="too_large",
    )


async def _authenticate(request: web.Request) -> Identity:
    credentials = parse_basic(request.headers.get(hdrs.AUTHORIZATION))
    if credentials is None:
        raise UploadRejected(
            "Authentication required: upload with a user name and password or an API token"
            " (user name __token__).",
            status=401,
            kind="unauthenticated",
        )
    try:
        identity = await readauth.identify(request)  # the same (cached) check as for reads
    except (web.HTTPTooManyRequests, web.HTTPServiceUnavailable):  # no check could be made
        metrics.UPLOADS_REJECTED.labels("throttled").inc()
        raise
    if identity is None:
        raise UploadRejected(
            "Invalid or non-existent authentication information.", status=403,
            kind="unauthenticated",
        )
    return identity


async def _save_content(part: BodyPartReader, body: Received, limit: int, name: str | None) -> None:
    while chunk := await part.read_chunk(_CHUNK):
        if body.size + len(chunk) > limit:
            raise _too_large(limit, name)
        body.write(chunk)


async def _read_field(part: BodyPartReader, budget: int) -> tuple[str, int]:
    """A text field and the bytes it cost, read in chunks against pyproxy's own form limit:
    `part.text()` would stop at aiohttp's client_max_size (1 MiB) with a bare 413."""
    raw = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        raw += chunk
        if len(raw) > budget:
            raise form_too_large()
    decoded = bytearray()
    try:
        async for piece in part.decode_iter(raw):  # Content-(Transfer-)Encoding, if any
            decoded += piece
            if len(decoded) > budget:
                raise form_too_large()
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
    except UploadRejected as rejection:
        # what is left without a kind: the request itself (not multipart, odd parts, no file)
        metrics.UPLOADS_REJECTED.labels(rejection.kind or "malformed").inc()
        log.info("upload rejected (%d): %s", rejection.status, rejection.message)
        headers = readauth.AUTH_CHALLENGE if rejection.status == 401 else None
        response = text_error(rejection.status, rejection.message, headers)
        if request.content.exception() is not None:
            # the body cannot be read any further: the connection ends with this answer, and
            # aiohttp is told the body is over (it would read on and log the error again)
            request.content.feed_eof()
            response.force_close()
        return response
    metrics.UPLOADS_ACCEPTED.inc()
    return response


async def _upload(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    identity = await _authenticate(request)
    request[USER] = identity.user  # for the access log
    if not request.content_type.startswith("multipart/"):
        raise UploadRejected("Upload payload must be multipart/form-data.")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise UploadRejected(f"Malformed multipart body: {_parse_error(exc)}") from None
    except web.RequestPayloadError as exc:
        raise _undecodable(request, exc) from None

    fields: dict[str, list[str]] = {key: [value] for key, value in request.query.items()}
    filename: str | None = None
    content_type: str | None = None
    field_bytes = 0
    limit = services.settings.max_upload_size
    with services.publisher.receiving() as body:
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
                    name = fields["name"][0] if fields.get("name") else None
                    await _save_content(part, body, limit, name)
                else:
                    value, cost = await _read_field(part, MAX_FORM_BYTES - field_bytes)
                    field_bytes += cost
                    fields.setdefault(part.name, []).append(value)
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            # e.g. a part whose headers do not parse (aiohttp's InvalidHeader)
            raise UploadRejected(f"Malformed multipart body: {_parse_error(exc)}") from None
        except web.RequestPayloadError as exc:
            raise _undecodable(request, exc) from None
        published = await services.publisher.publish(
            Submission(fields, filename, content_type, body),
            Uploader(identity.user, admin=identity.admin),
        )
    if published is Published.ALREADY_STORED:
        return web.Response(text="OK: identical file already stored\n")
    return web.Response(text="OK\n")


def _undecodable(request: web.Request, exc: web.RequestPayloadError) -> UploadRejected:
    """The body itself could not be read: aiohttp could not undo its Content-Encoding (or its
    chunked Transfer-Encoding)."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip()
    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
    if encoding and encoding.lower() != "identity":
        return UploadRejected(
            f"Malformed request body: it could not be decoded as its Content-Encoding"
            f" {encoding!r} says. Send the upload without Content-Encoding."
        )
    return UploadRejected(f"Malformed request body: {_parse_error(cause)}")


def _parse_error(exc: Exception) -> str:
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return " ".join(str(message).split()) or type(exc).__name__
