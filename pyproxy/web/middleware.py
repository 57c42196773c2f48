"""Cross-cutting HTTP behaviour: error mapping, CORS on every response, preflights, and the
count of handlers in flight."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, LooseHeaders

from pyproxy.model import Forbidden, NotFound, Unavailable
from pyproxy.publish.rejections import reason_phrase
from pyproxy.stores.outages import DatabaseUnavailable
from pyproxy.web.lifecycle import IN_FLIGHT

log = logging.getLogger("pyproxy.web")

# on every answer (the Fetch standard reads only these off a response that is not a preflight's)
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": (
        "Content-Length, Content-Range, ETag, Last-Modified, X-Pyproxy-Cache"
    ),
}
# on the answers to preflights (OPTIONS) too: what the request to come may use
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": (
        "Accept, Authorization, Content-Type, If-Match, If-Modified-Since, If-None-Match,"
        " If-Range, If-Unmodified-Since, Range"
    ),
    "Access-Control-Max-Age": "86400",
}


def text_error(status: int, message: str, headers: LooseHeaders | None = None) -> web.Response:
    """A plain-text error whose reason phrase carries the message too (twine shows it)."""
    return web.Response(
        status=status, reason=reason_phrase(message), text=message + "\n", headers=headers,
        content_type="text/plain",
    )


# nginx's word for it: the client closed the connection before it was answered
CLIENT_CLOSED = 499


@dataclass(frozen=True, slots=True)
class Guard:
    """The read guard (readauth.py), run by `errors` inside itself rather than as a middleware
    of its own: a request with nothing to check (`unguarded`, most of them) costs no coroutine."""

    unguarded: Callable[[web.Request], bool]
    check: Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


READ_GUARD = web.AppKey("read_guard", Guard)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The only middleware (one coroutine per request for all of this): counts the handlers
    running, for a graceful stop (lifecycle.InFlight), and runs the read guard (READ_GUARD)
    before the handler. Preflights get 204; repository errors and an unreachable database
    become 403/404/503; a client that went away (e.g. mid-upload) gets a 499 that is never
    sent but recorded; anything unexpected a 500 (its traceback logged)."""
    in_flight = request.app[IN_FLIGHT]
    in_flight.begin()
    try:
        if request.method == hdrs.METH_OPTIONS:
            return web.Response(status=204)  # CORS preflight, for any path
        guard = request.app[READ_GUARD]
        if guard.unguarded(request):
            return await handler(request)
        return await guard.check(request, handler)
    except web.HTTPException:
        raise
    except Forbidden as exc:  # e.g. a file [policy] holds back: the message says until when
        return text_error(403, f"Forbidden: {exc}")
    except NotFound as exc:
        return text_error(404, f"Not Found: {exc}")
    except Unavailable as exc:
        # no Retry-After: pip would sleep that long before each of its retries
        return text_error(503, f"Service Unavailable: {exc}")
    except DatabaseUnavailable as exc:  # a cluster's PostgreSQL: uploads and admin writes
        log.warning("%s %s: %s", request.method, request.path, exc)
        return text_error(503, f"Service Unavailable: {exc}")
    except ConnectionError:
        transport = request.transport
        if transport is None or transport.is_closing():
            # aiohttp cannot send it, and records it (with one warning line: see access_log)
            return text_error(CLIENT_CLOSED, "Client Closed Request")
        log.exception("unhandled error for %s %s", request.method, request.path)
        return text_error(500, "Internal Server Error: the error was logged on the server")
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return text_error(500, "Internal Server Error: the error was logged on the server")
    finally:
        in_flight.end()


def add_cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Before any response goes out (app.py's one response hook): browsers (micropip) need CORS
    on 200s, redirects and errors alike; a handler may have set one of them itself."""
    headers = response.headers
    items = _PREFLIGHT_ITEMS if request.method == hdrs.METH_OPTIONS else _CORS_ITEMS
    for name, value in items:
        headers.setdefault(name, value)


_CORS_ITEMS = tuple(CORS_HEADERS.items())
_PREFLIGHT_ITEMS = tuple(PREFLIGHT_HEADERS.items())
