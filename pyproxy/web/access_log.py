"""The access log and the per-request metrics, recorded once each response has been sent.

An aiohttp access logger (given to the AppRunner, see `runner_options`) rather than a middleware:
aiohttp calls it after the last byte, so status, size and duration are final (also for errors
raised as HTTPException and for files sent with sendfile), and it adds no coroutine per request.

One record per request on the "pyproxy.access" logger, at INFO, with these fields: method, path
(the query is dropped except `format=`, so nothing secret in a query string is written), status,
bytes (sent, headers included), duration_ms, cache (hit | miss | coalesced | private | -, set
by the file handler as request[CACHE_OUTCOME]), remote, user (request[USER], set by whatever
authenticated the request), agent. Headers other than User-Agent are never read, so no
Authorization value can reach the log; URL user info is not part of the request's path.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from pyproxy import logs, metrics

LOGGER = logging.getLogger("pyproxy.access")
# set by handlers for this log: how a file was had (hit | miss | coalesced | private), and who
# the request authenticated as
CACHE_OUTCOME = web.RequestKey("cache", str)
USER = web.RequestKey("user", str)
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405, preflights)
_MAX_AGENT = 512
# logfmt values that need no quotes: printable ASCII without space, '"', '=' and '\'
_BARE = re.compile(r"[!#-<>-\[\]-~]+")


def runner_options() -> dict[str, Any]:
    """Keyword arguments for web.AppRunner (or a TestServer) that turn the access log on."""
    return {"access_log_class": AccessLogger, "access_log": LOGGER}


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
        # method, status, bytes, duration and cache are tokens that never need quotes
        return (
            f"method={f['method']} path={_logfmt(f['path'])} status={f['status']}"
            f" bytes={f['bytes']} duration_ms={f['duration_ms']} cache={f['cache']}"
            f" remote={_logfmt(f['remote'])} user={_logfmt(f['user'])} agent={_logfmt(f['agent'])}"
        )


def _logfmt(value: str | None) -> str:
    if value is None:
        return "-"
    return value if _BARE.fullmatch(value) else orjson.dumps(value).decode()


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        method = request.method
        status = response.status
        metrics.request_done(route_of(request), method, status, time)
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        fields = {
            "method": method,
            "path": logged_path(request),
            "status": status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 1),
            "cache": request.get(CACHE_OUTCOME, "-"),
            "remote": request.remote,
            "user": request.get(USER),
            "agent": request.headers.get("User-Agent", "")[:_MAX_AGENT],
        }
        sink = logs.ACCESS_SINK
        if sink is not None and sink.active():
            sink.write(logger.name, fields, _Line(fields))
            return
        # a record made here, not by logger.info: no caller lookup, no argument formatting
        record = logging.LogRecord(logger.name, logging.INFO, __file__, 0, _Line(fields), None, None)
        record.fields = fields
        logger.handle(record)
