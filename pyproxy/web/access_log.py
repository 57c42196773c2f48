"""The access log and the per-request metrics, recorded once each response has been sent.

An aiohttp access logger (given to the AppRunner, see `runner_options`) rather than a middleware:
aiohttp calls it after the last byte, so status, size and duration are final (also for errors
raised as HTTPException and for files sent with sendfile), and it adds no coroutine per request.

One record per request on the "pyproxy.access" logger, at INFO, with these fields: method, path
(the query is dropped except `format=`, so nothing secret in a query string is written), status,
bytes (sent, headers included), duration_ms, cache (hit | miss | coalesced | private | -, set
by the file handler as request[CACHE_OUTCOME]), remote, user (request[USER], set by whatever
authenticated the request), agent. Headers other than User-Agent are never read, so no
Authorization value can reach the log; URL user info is not part of the request's path. The
values a client chose are written whatever bytes they hold: bytes that are not UTF-8 as `\\xNN`
escapes (`logs.printable`), the rest quoted and escaped as logfmt (or JSON) asks.

A response whose body did not go out whole (the client went away, or its body failed and
pyproxy aborted the connection) is recorded with the bytes that did go out and counted by
cause: a handler that streams a body sets request[CUT_SHORT] (and logs why); a response aiohttp
could not finish sending gets one warning line here. A request aiohttp's parser refused (a bad
request line or header, an oversized head) is answered 400 and recorded like any other;
aiohttp's own record of it, an error with a traceback, becomes one warning line (`ProtocolLog`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)

from pyproxy import logs, metrics
from pyproxy.web.request_metrics import request_done

T = TypeVar("T")
D = TypeVar("D")
LOGGER = logging.getLogger("pyproxy.access")
WEB_LOGGER = logging.getLogger("pyproxy.web")
# set by handlers for this log: how a file was had (hit | miss | coalesced | private), and who
# the request authenticated as
CACHE_OUTCOME = web.RequestKey("cache", str)
USER = web.RequestKey("user", str)



@dataclass(frozen=True, slots=True)
class CutShort:
    """A response whose body did not go out whole."""

    sent: int  # bytes handed to the connection, headers included
    cause: str  # metrics.CUT_SHORT_CAUSES: "client" (went away), "aborted" (its body failed)


CUT_SHORT = web.RequestKey("cut_short", CutShort)
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405, preflights)
_MAX_AGENT = 512
# logfmt values that need no quotes: printable ASCII without space, '"', '=' and '\'
_BARE = re.compile(r"[!#-<>-\[\]-~]+")


def runner_options() -> dict[str, Any]:
    """Keyword arguments for web.AppRunner (or a TestServer) that turn the access log on and
    log refused requests as warnings."""
    return {"access_log_class": AccessLogger, "access_log": LOGGER, "logger": PROTOCOL_LOG}


def request_value(request: web.BaseRequest, key: web.RequestKey[T], default: D) -> T | D:
    """`request.get(key, default)` without an exception: aiohttp's request is a Mapping (over
    its `_state` dict) whose `get` raises and catches KeyError for every key it does not hold,
    which costs more than the rest of a lookup, on every request for each such key."""
    state = getattr(request, "_state", None)
    if isinstance(state, dict):
        return state.get(key, default)  # type: ignore[no-any-return]
    return request.get(key, default)  # type: ignore[no-any-return]


def route_of(request: web.BaseRequest) -> str:
    """The matched route's template ("/files/{project}/{filename}"), never the raw path."""
    try:
        match_info = request.match_info  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):  # refused before routing, e.g. a malformed request
        return UNMATCHED
    resource = None if match_info is None else match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def logged_path(request: web.BaseRequest) -> str:
    """The decoded path (the text formatter quotes what needs it) and at most `format=`."""
    url = request.rel_url
    path = url.path
    if url.raw_query_string and (fmt := url.query.get("format")) is not None:
        path += "?format=" + quote(fmt, safe="")
    return path


class _Line:
    """The text rendering, built only if a text formatter asks for the message."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        f = self.fields
        # the same client asking for the same thing writes the same line but for the duration:
        # its two halves are quoted once (bounded: the values are the clients')
        key = (f["method"], f["path"], f["status"], f["bytes"], f["cache"], f["remote"],
               f["user"], f["agent"], f.get("cut"))
        halves = _HALVES.get(key)
        if halves is None:
            if len(_HALVES) >= _MAX_HALVES:
                _HALVES.clear()
            # method, status, bytes and cache are tokens that never need quotes
            halves = _HALVES[key] = (
                f"method={f['method']} path={_logfmt(f['path'])} status={f['status']}"
                f" bytes={f['bytes']} duration_ms=",
                f" cache={f['cache']} remote={_logfmt(f['remote'])} user={_logfmt(f['user'])}"
                f" agent={_logfmt(f['agent'])}" + (f" cut={f['cut']}" if f.get("cut") else ""),
            )
        return f"{halves[0]}{f['duration_ms']}{halves[1]}"


_HALVES: dict[tuple[Any, ...], tuple[str, str]] = {}
_MAX_HALVES = 4096


def _logfmt(value: str | None) -> str:
    if value is None:
        return "-"
    return value if _BARE.fullmatch(value) else orjson.dumps(logs.printable(value)).decode()


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        method = request.method
        status = response.status
        request_done(route_of(request), method, status, time)
        cut = request_value(request, CUT_SHORT, None)
        if cut is None and response.body_length == 0:  # aiohttp could not finish sending it
            cut = CutShort(0, "client")
            WEB_LOGGER.warning(
                "%s %s: the client went away before the response was sent", method, request.path
            )
        if cut is not None:
            metrics.CUT_SHORT.labels(cut.cause).inc()
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        printable = logs.printable  # the client's bytes, never a line that cannot be encoded
        user = request_value(request, USER, None)
        fields = {
            "method": method,
            "path": printable(logged_path(request)),
            "status": status,
            # a body cut short never reached aiohttp's count (or reached it with a chunk too many)
            "bytes": response.body_length if cut is None else cut.sent,
            "duration_ms": round(time * 1000, 1),
            "cache": request_value(request, CACHE_OUTCOME, "-"),
            "remote": None if (remote := request.remote) is None else printable(remote),
            "user": None if user is None else printable(user),
            "agent": printable(request.headers.get("User-Agent", "")[:_MAX_AGENT]),
            # a status sent before the body went wrong (or the client left) is not the outcome
            "cut": None if cut is None else cut.cause,
        }
        sink = logs.ACCESS_SINK
        if sink is not None and sink.active():
            sink.write(logger.name, fields, _Line(fields))
            return
        # a record made here, not by logger.info: no caller lookup, no argument formatting
        record = logging.LogRecord(
            logger.name, logging.INFO, __file__, 0, _Line(fields), None, None
        )
        record.fields = fields
        logger.handle(record)


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's request handler writes to (web.AppRunner's `logger`). A request
    its parser refused is the client's fault, not the server's: instead of an error with a
    traceback (or, for a bad method in a connection's first request, a debug line), it gets
    one warning line on pyproxy.web, which never quotes the request (it may hold a secret).
    Everything else passes unchanged, so a server bug still logs its traceback."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        refused = kwargs.get("exc_info")
        if isinstance(refused, HttpProcessingError):
            remote = args[0] if args else None  # aiohttp: "Error handling request from %s"
            WEB_LOGGER.warning(
                "refused a malformed request from %s with %d: %s",
                remote or "-", refused.code or 400, describe_refusal(refused),
            )
            return
        super().log(level, msg, *args, **kwargs)


PROTOCOL_LOG = ProtocolLog(logging.getLogger("pyproxy.http"), {})

# The parsers' messages, and where they quote the client (see describe_refusal):
# - aiohttp's C parser wraps llhttp's own reason: "<reason>:\n\n  b'<the bytes>'\n  <pointer>"
#   (a BadStatusLine puts "Bad status line:\n  " before it);
# - the pure-Python parser writes "<words>: <repr of the bytes>" or "<words> '<repr>'", and for
#   two errors the client's bytes alone: InvalidURLError (the target), TransferEncodingError (a
#   chunk-size line);
# - both quote header names they chose ("Duplicate 'Content-Length' header found.") and llhttp
#   and aiohttp their own constants in backquotes ("Data after `Connection: close`").
_LLHTTP = re.compile(r"(?:Bad status line:\n  )?([^\n]*?):\n\n  ")
_QUOTED = re.compile(
    r"""(?P<bytes>(?<!\w)(?:bytearray\()?b(?P<bq>['"])(?:\\.|(?!(?P=bq)).)*(?:(?P=bq)\)?|$))"""
    r"""|(?P<tick>`[^`]*(?:`|$))"""
    r"""|(?<!\w)(?P<pq>['"])(?P<plain>(?:\\.|(?!(?P=pq)).)*)(?P<closed>(?P=pq))?""",
    re.DOTALL,
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,40}")  # RFC 9110 token, short: a header name
_CONSTANT = re.compile(r"`[\w\- :,]{1,40}`")  # a backquoted constant of the parser's own
_PROSE = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)+")  # words only: "invalid char in url path"
_CHUNKED_WORDS = (  # the pure-Python parser's own TransferEncodingError messages
    "Not enough data", "Unexpected LF in chunk-extension", "Bad chunk-size line ending",
    "Chunk size mismatch", "Bad trailer line ending",
)


def _words(text: str) -> str:
    """The parser's own words in `text`: up to a colon (outside a quote) or a line's end, with a
    quoted header name or backquoted constant kept and any other quote dropped (bytes, a value,
    a URL, a line: what the client sent); "" when nothing readable is left."""
    text = text.split("\n", 1)[0]
    kept, done = [], 0
    for quoted in [*_QUOTED.finditer(text), None]:
        between = text[done:None if quoted is None else quoted.start()]
        if ":" in between:
            kept.append(between.split(":", 1)[0])
            break
        kept.append(between)
        if quoted is None:
            break
        done = quoted.end()
        constant = quoted["tick"] is not None and _CONSTANT.fullmatch(quoted[0])
        if constant or (quoted["closed"] and _TOKEN.fullmatch(quoted["plain"])):
            kept.append(quoted[0])
    words = " ".join("".join(kept).split()).rstrip(" .")
    if not words.isascii() or not words.isprintable():
        return ""
    first, _, rest = words.partition(" ")
    if first[1:].islower():  # "Duplicate ..." -> "duplicate ...", but "Content-Length ..." stays
        words = first[:1].lower() + first[1:] + (" " + rest if rest else "")
    return words[:100]


def describe_refusal(refused: HttpProcessingError) -> str:
    """Why a request was refused, in words that quote nothing the client sent: the parser's own
    words, with a header name it quotes, never a value, a URL, a request line or a body."""
    message = refused.message
    llhttp = _LLHTTP.match(message)
    reason = _words(llhttp[1]) if llhttp else ""  # the C parser's: llhttp's reason
    detail = f" ({reason})" if reason else ""
    if isinstance(refused, LineTooLong):
        return f"a line of its head is longer than {refused.args[1]} bytes"
    if isinstance(refused, BadHttpMethod):
        if "HTTPS" in message:
            return "HTTPS traffic on an HTTP port"
        return "a bad method in the request line"
    if isinstance(refused, BadStatusLine):
        return f"a bad request line{detail}"
    if isinstance(refused, InvalidURLError):  # the Python parser's message is the target itself
        return f"an invalid request target{detail if _PROSE.fullmatch(reason) else ''}"
    if isinstance(refused, InvalidHeader):
        # a name aiohttp chose is a str ("Content-Length"); what the client sent comes as bytes
        name = refused.args[0] if refused.args else None
        if isinstance(name, str) and _TOKEN.fullmatch(name):
            return f"an invalid {name!s} header"
        return "an invalid header"
    if isinstance(refused, TransferEncodingError) and not message.startswith(_CHUNKED_WORDS):
        return "a bad chunk size"  # the Python parser's message for it is the line itself
    return (reason if llhttp else _words(message)) or type(refused).__name__
