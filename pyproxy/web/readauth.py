"""Read access control, decided once per request before any handler runs.

`[auth] read = "anonymous"` (the default): anyone may read. `"authenticated"`: every read route
needs a user's credentials (Basic: user name and password, or `__token__` and an API token).
Either way a private project an owner restricted (`pyproxy restrict`) is readable only by users
holding a role on it, and admins.

Missing or wrong credentials answer 401 with a Basic challenge (pip then retries with the URL's
credentials, netrc or keyring); a restricted project the caller may not read answers 403 on every
route, never 404, which would send pip on to the next index (dependency confusion). Listings
leave out what the caller may not read (`hidden_projects`). The open routes (health, readiness,
metrics) carry no project data; uploads authenticate themselves (legacy.py).

Verifying a password costs ~50 ms of scrypt, so successful verifications are remembered briefly
(`Verifications`). In anonymous mode with nothing restricted, a request costs a clock read and
a dict lookup: no credentials are looked at and no database is queried.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from pyproxy.access import ReadRestrictions
from pyproxy.model import NormalizedName, normalize
from pyproxy.stores.auth import TOKEN_USERNAME, Identity, UserStore, parse_basic
from pyproxy.stores.private import PrivateStore
from pyproxy.web.access_log import USER
from pyproxy.web.context import SERVICES
from pyproxy.web.middleware import text_error

AUTH_CHALLENGE = {hdrs.WWW_AUTHENTICATE: 'Basic realm="pyproxy"'}
# route templates that stay open: they carry no project data, and probes send no credentials
OPEN_ROUTES = frozenset({"/health", "/ready", "/metrics"})
_READ_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})

_IDENTITY = web.RequestKey("readauth_identity", Identity)  # what the credentials proved
_RESTRICTIONS = web.RequestKey("readauth_restrictions", ReadRestrictions)  # judged by these
_PERSONAL = web.RequestKey("readauth_personal", bool)  # the answer depends on who asked


class Verifications:
    """Identities of recently verified Authorization headers, so a read costs a dict lookup
    instead of scrypt.

    Keyed by sha256 of a per-process random salt and the header, so neither credentials nor a
    reusable digest of them is kept. An entry lives at most `ttl` seconds and is dropped as soon
    as the user store's revision moves (a removed user or a revoked token: at once in this
    process, within auth.REVISION_RECHECK_S in the others). Only successes are kept; a header
    being verified is verified once, however many requests carry it meanwhile.
    """

    def __init__(self, users: UserStore, *, ttl: float = 60.0, capacity: int = 4096) -> None:
        self._users = users
        self._ttl = ttl
        self._capacity = capacity
        self._salt = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, tuple[int, int], Identity]] = OrderedDict()
        self._pending: dict[bytes, tuple[tuple[int, int], asyncio.Future[Identity | None]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def identify(self, header: str) -> Identity | None:
        """The identity the Authorization header proves; None if it proves none."""
        key = hashlib.sha256(self._salt + header.encode("utf-8", "surrogatepass")).digest()
        revision = self._users.revision()
        entry = self._entries.get(key)
        if entry is not None:
            expires, verified_at, identity = entry
            if verified_at == revision and time.monotonic() < expires:
                self._entries.move_to_end(key)
                return identity
            del self._entries[key]
        pending = self._pending.get(key)
        if pending is None or pending[0] != revision:
            credentials = parse_basic(header)
            if credentials is None:
                return None
            future = asyncio.ensure_future(asyncio.to_thread(self._users.authenticate, *credentials))
            pending = (revision, future)
            self._pending[key] = pending
            future.add_done_callback(lambda _: self._forget_pending(key, future))
        identity = await asyncio.shield(pending[1])
        # kept only if nothing changed while it was verified (it may be from before a removal)
        if identity is not None and self._users.revision() == pending[0]:
            self._entries[key] = (time.monotonic() + self._ttl, pending[0], identity)
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return identity

    def _forget_pending(self, key: bytes, future: asyncio.Future[Identity | None]) -> None:
        if (held := self._pending.get(key)) is not None and held[1] is future:
            del self._pending[key]
        if not future.cancelled():
            future.exception()  # retrieved, even if every request waiting for it went away


class ReadAccess:
    """What the guard needs, built once per application."""

    def __init__(self, private: PrivateStore, users: UserStore, *, authenticated: bool) -> None:
        self.private = private
        self.authenticated = authenticated
        self.verifications = Verifications(users)


READ_ACCESS = web.AppKey("read_access", ReadAccess)


def setup(app: web.Application) -> None:
    """Install the guard (inside the error middleware, so preflights and errors stay as they
    are) on an application whose services are set."""
    services = app[SERVICES]
    app[READ_ACCESS] = ReadAccess(
        services.private, services.users,
        authenticated=services.settings.read_access == "authenticated",
    )
    app.middlewares.append(guard)
    app.on_response_prepare.append(_keep_out_of_shared_caches)


async def identify(request: web.Request) -> Identity | None:
    """Who the request's credentials prove it is; None when it sent none or wrong ones."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        return None
    identity = await request.app[READ_ACCESS].verifications.identify(header)
    if identity is not None:
        request[_IDENTITY] = identity
        request[USER] = identity.user  # for the access log
    return identity


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def _project(request: web.Request) -> NormalizedName | None:
    """The project a read route is about: {project}, or the first segment of {tail} (/simple/
    and /project/ pages); None for the routes about no single project."""
    info = request.match_info
    name = info.get("project")
    if name is None:
        name = next((part for part in info.get("tail", "").split("/") if part), None)
    return None if name is None else normalize(name)


def _unauthorized(request: web.Request, why: str) -> web.Response:
    if request.headers.get(hdrs.AUTHORIZATION):
        message = (
            f"Unauthorized: the credentials sent are not valid here ({why} needs a user name and"
            f" password, or an API token with user name {TOKEN_USERNAME})."
        )
    else:
        message = (
            f"Unauthorized: {why} needs a user name and password, or an API token with user"
            f" name {TOKEN_USERNAME}."
        )
    return text_error(401, message, AUTH_CHALLENGE)


def _forbidden(project: NormalizedName, user: str) -> web.Response:
    return text_error(
        403,
        f"Forbidden: project {project!r} is restricted and user {user!r} may not read it."
        f" An owner can allow it with: pyproxy grant {project} {user} --read",
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in _READ_METHODS or _route(request) in OPEN_ROUTES:
        return await handler(request)
    access = request.app[READ_ACCESS]
    restrictions = ReadRestrictions(access.private.restricted_readers())
    if not access.authenticated and not restrictions:
        return await handler(request)  # the common case: nothing to check
    project = _project(request)
    restricted = project is not None and project in restrictions.readers
    identity: Identity | None = None
    # an unrestricted project's answer is the same for everyone: its reader need not be known
    if access.authenticated or restricted or (restrictions and project is None):
        identity = await identify(request)
        request[_PERSONAL] = True
        if identity is None and access.authenticated:
            return _unauthorized(request, "this index")
    if restricted:
        assert project is not None
        if identity is None:
            return _unauthorized(request, f"project {project!r}")
        if not restrictions.may_read(project, identity.user, admin=identity.admin):
            return _forbidden(project, identity.user)
    request[_RESTRICTIONS] = restrictions
    return await handler(request)


def hidden_projects(request: web.Request) -> frozenset[NormalizedName]:
    """The restricted projects this request's caller may not read, for listings to leave out."""
    restrictions = request.get(_RESTRICTIONS)
    if not restrictions:
        return frozenset()
    identity = request.get(_IDENTITY)
    if identity is None:
        return frozenset(restrictions.readers)
    return restrictions.hidden_from(identity.user, admin=identity.admin)


def visible(request: web.Request, names: Iterable[str]) -> list[str]:
    """`names` (in any spelling) without those the caller may not read."""
    hidden = hidden_projects(request)
    return [name for name in names if not hidden or normalize(name) not in hidden]


async def _keep_out_of_shared_caches(request: web.Request, response: web.StreamResponse) -> None:
    """An answer that depended on who asked must not be reused for someone else by a proxy."""
    if request.get(_PERSONAL):
        cache_control = response.headers.get(hdrs.CACHE_CONTROL)
        if cache_control and "private" not in cache_control:
            response.headers[hdrs.CACHE_CONTROL] = "private, " + cache_control
