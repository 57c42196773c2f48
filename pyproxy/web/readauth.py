"""Read access control, decided once per request before any handler runs.

`[auth] read = "anonymous"` (the default): anyone may read. `"authenticated"`: every read route
needs a user's credentials (Basic: user name and password, or `__token__` and an API token).
Either way a private project an owner restricted (`pyproxy restrict`) is readable only by users
holding a role on it, and admins.

Missing or wrong credentials answer 401 with a Basic challenge (pip then retries with the URL's
credentials, netrc or keyring); a restricted project the caller may not read answers 403 on every
route, never 404, which would send pip on to the next index (dependency confusion). Listings
leave out what the caller may not read (`hidden_projects`). The open routes (health, readiness,
metrics) carry no project data; uploads authenticate themselves (upload.py).

Verifying a password costs ~50 ms of scrypt: credentials.py remembers answers briefly, checks
passwords on threads of their own and limits wrong passwords per client address (429), so a
flood of guesses never holds up file serving or token users. In anonymous mode with nothing
restricted, a request costs a memory read and a dict lookup: no credentials are looked at and
no database is queried.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from pyproxy.access import ReadRestrictions
from pyproxy.model import NormalizedName, PrivateCatalog, normalize
from pyproxy.settings import Settings
from pyproxy.stores.auth import TOKEN_USERNAME, Identity
from pyproxy.stores.interfaces import UserStoreAPI
from pyproxy.web.access_log import USER, request_value
from pyproxy.web.context import SERVICES, trusted_peer
from pyproxy.web.credentials import FailureLimit, PasswordPool, Refused, Verifications
from pyproxy.web.middleware import READ_GUARD, Guard, text_error

AUTH_CHALLENGE = {hdrs.WWW_AUTHENTICATE: 'Basic realm="pyproxy"'}
# route templates that stay open: they carry no project data, and probes send no credentials;
# the cluster's peer route checks a proof of its own (stores.peers)
OPEN_ROUTES = frozenset({"/health", "/ready", "/metrics", "/_internal/inflight/{key}"})
_READ_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})

_IDENTITY = web.RequestKey("readauth_identity", Identity)  # what the credentials proved
_RESTRICTIONS = web.RequestKey("readauth_restrictions", ReadRestrictions)  # judged by these
_PERSONAL = web.RequestKey("readauth_personal", bool)  # the answer depends on who asked


class ReadAccess:
    """What the guard needs, built once per application."""

    def __init__(
        self, private: PrivateCatalog, users: UserStoreAPI, settings: Settings
    ) -> None:
        self.private = private
        self.authenticated = settings.read_access == "authenticated"
        self.trust_forwarded = settings.trust_forwarded
        self.verifications = Verifications(
            users,
            PasswordPool(settings.password_threads, settings.password_queue),
            FailureLimit(settings.password_failures_per_minute),
        )


READ_ACCESS = web.AppKey("read_access", ReadAccess)


def setup(app: web.Application) -> None:
    """Install the guard (run by the error middleware inside itself, so preflights and errors
    stay as they are) on an application whose services are set; app.py calls
    keep_out_of_shared_caches on every response."""
    services = app[SERVICES]
    app[READ_ACCESS] = ReadAccess(services.catalog, services.users, services.settings)
    app[READ_GUARD] = Guard(unguarded, guard)
    app.on_cleanup.append(_close)


async def _close(app: web.Application) -> None:
    app[READ_ACCESS].verifications.close()


async def identify(request: web.Request) -> Identity | None:
    """Who the request's credentials prove it is; None when it sent none or wrong ones. A
    password check that cannot be made now raises 429 or 503 (with Retry-After)."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        return None
    access = request.app[READ_ACCESS]
    try:
        identity = await access.verifications.identify(header, client_address(request, access))
    except Refused as refused:
        raise _refusal(refused) from None
    if identity is not None:
        request[_IDENTITY] = identity
        request[USER] = identity.user  # for the access log
    return identity


def client_address(request: web.Request, access: ReadAccess) -> str:
    """Whom wrong passwords are counted against: the peer, or behind a proxy that `[server]
    trust_forwarded` trusts, the client it names in X-Forwarded-For (the right-most entry that
    is not a trusted proxy itself; the left-most when every peer is trusted)."""
    remote = request.remote or ""
    # context.py's reading of the setting, so both uses of forwarded headers trust alike
    if not trusted_peer(access.trust_forwarded, remote):
        return remote
    hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", ())
            for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not trusted_peer(access.trust_forwarded, hop):
            return hop[:64]
    return hops[0][:64] if hops else remote


def _refusal(refused: Refused) -> web.HTTPException:
    kind = web.HTTPTooManyRequests if refused.status == 429 else web.HTTPServiceUnavailable
    return kind(reason=refused.message, text=refused.message + "\n", content_type="text/plain",
                headers={hdrs.RETRY_AFTER: str(refused.retry_after)})


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


def unguarded(request: web.Request) -> bool:
    """Whether the request has nothing to check: not a read, an open route, or (the common
    case) anonymous reads with nothing restricted."""
    if request.method not in _READ_METHODS or _route(request) in OPEN_ROUTES:
        return True
    access = request.app[READ_ACCESS]
    return not access.authenticated and not access.private.restricted_readers()


async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run by middleware.errors for what `unguarded` leaves (and so safe to call for any)."""
    if unguarded(request):
        return await handler(request)
    access = request.app[READ_ACCESS]
    restrictions = ReadRestrictions(access.private.restricted_readers())
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
    restrictions: ReadRestrictions | None = request.get(_RESTRICTIONS)
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


def keep_out_of_shared_caches(request: web.Request, response: web.StreamResponse) -> None:
    """Before any response goes out (app.py's one response hook): an answer that depended on
    who asked must not be reused for someone else by a proxy."""
    if request_value(request, _PERSONAL, False):
        cache_control = response.headers.get(hdrs.CACHE_CONTROL)
        if cache_control and "private" not in cache_control:
            response.headers[hdrs.CACHE_CONTROL] = "private, " + cache_control
