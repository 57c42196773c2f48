"""Read access control (pyproxy/web/readauth.py), in process: `[auth] read = "authenticated"`,
restricted private projects (403, never 404), listings that leave out what the caller may not
read, the verification cache, and logs free of credentials.

The seeded data dir holds `foo-bar` and `holygrail`, both owned by alice (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient

from pyproxy.model import normalize
from pyproxy.stores import auth, private_reads
from pyproxy.stores.auth import TOKEN_USERNAME, UserStore
from pyproxy.stores.private import PrivateStore
from pyproxy.web import credentials
from pyproxy.web.context import Services
from tests.conftest import PASSWORD, USER, MakeClient, upload
from tests.dists import make_wheel
from tests.web.test_upload import rejections

WHEEL = "foo_bar-1.0-py3-none-any.whl"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
OTHER_PASSWORD = "other-secret-1"
CHALLENGE = 'Basic realm="pyproxy"'

# every read route, as a client would ask for it: path -> status with valid credentials
READ_ROUTES = {
    "/": 200,
    "/search?q=foo": 200,
    "/projects/": 200,
    "/projects": 301,
    "/project/foo-bar/": 200,
    "/project/foo-bar/1.0/": 200,
    "/simple/": 200,
    "/simple": 301,
    "/simple/foo-bar/": 200,
    "/simple/Foo_Bar/": 301,
    f"/files/foo-bar/{WHEEL}": 200,
    f"/files/foo-bar/{WHEEL}.metadata": 200,
    "/pypi/foo-bar/json": 200,
    "/pypi/foo-bar/1.0/json": 200,
    "/pypi/Foo_Bar/json": 301,
    "/foo-bar/json": 200,
    "/simple/pypi/foo-bar/json": 200,
    "/no/such/route": 404,
}
# the routes about the project foo-bar, as a restriction must cover them
PROJECT_ROUTES = [
    "/simple/foo-bar/",
    "/simple/Foo_Bar/",  # judged before the redirect to the normalised spelling
    f"/files/foo-bar/{WHEEL}",
    f"/files/foo-bar/{WHEEL}.metadata",
    "/files/foo-bar/no-such-file-1.0.tar.gz",  # still 403, not 404: nothing to probe
    "/pypi/foo-bar/json",
    "/pypi/foo-bar/2.0/json",
    "/foo-bar/json",
    "/simple/pypi/FOO.bar/json",  # any spelling, judged as its normalised name
    "/project/foo-bar/",
    "/project/foo-bar/1.0/",
    "/project/foo-bar/no-such-file-9.9/",  # an unknown release is 403 too
]

MakeApp = Callable[..., Awaitable[tuple[TestClient, Services]]]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": encode_basic_auth(user, password)}


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users added by these tests hash cheaply (alice, from the seed, keeps the real cost)."""
    monkeypatch.setattr(auth, "_SCRYPT_N", 2**8)


@pytest.fixture
def make_app(make_client: MakeClient) -> MakeApp:
    """`await make_app(**settings) -> (client, services)` on a copy of the seeded data dir, with
    users bob, carol and root (admin), and the access log on."""

    async def make(**overrides: Any) -> tuple[TestClient, Services]:
        test_client, services = await make_client(seeded=True, access_log=True, **overrides)
        for name in ("bob", "carol"):
            services.users.add_user(name, OTHER_PASSWORD)
        services.users.add_user("root", OTHER_PASSWORD, admin=True)
        return test_client, services

    return make


async def status_of(client: TestClient, path: str, headers: dict[str, str] | None = None,
                    method: str = "GET") -> tuple[int, str, dict[str, str]]:
    response = await client.request(method, path, headers=headers, allow_redirects=False)
    return response.status, (await response.read()).decode("utf-8", "replace"), dict(response.headers)


# ------------------------------------------------------------------------ read = authenticated


async def test_authenticated_mode_challenges_every_read_route(make_app: MakeApp) -> None:
    client, services = await make_app(read_access="authenticated")
    token = services.users.create_token("bob")
    wrong = {
        "none": None,
        "wrong password": basic("bob", "wrong-password"),
        "unknown user": basic("nobody", "wrong-password"),
        "wrong token": basic(TOKEN_USERNAME, token + "x"),
        "not basic": {"Authorization": "Bearer " + token},
        "garbage": {"Authorization": "Basic !!!"},
    }
    for path in READ_ROUTES:
        for method in ("GET", "HEAD"):
            bodies = set()
            for label, headers in wrong.items() if method == "GET" else [("none", None)]:
                status, body, response_headers = await status_of(client, path, headers, method)
                assert status == 401, (path, method, label, status, body)
                assert response_headers["WWW-Authenticate"] == CHALLENGE, (path, label)
                if method == "GET":
                    assert body.count("\n") == 1 and body.startswith("Unauthorized"), body
                    if headers is not None:
                        bodies.add(body)
            # wrong password and unknown user read alike: nothing tells whether a user exists
            assert len(bodies) <= 1, bodies


async def test_authenticated_mode_serves_password_and_token(make_app: MakeApp) -> None:
    client, services = await make_app(read_access="authenticated")
    token = services.users.create_token("bob")
    for headers in (basic(USER, PASSWORD), basic(TOKEN_USERNAME, token),
                    basic(TOKEN_USERNAME, token + "\n")):
        for path, expected in READ_ROUTES.items():
            status, body, response_headers = await status_of(client, path, headers)
            assert status == expected, (path, status, body)
            assert "WWW-Authenticate" not in response_headers
    # what a proxy must not hand to someone else is marked so
    status, _, response_headers = await status_of(client, f"/files/foo-bar/{WHEEL}",
                                                   basic(USER, PASSWORD))
    assert status == 200 and response_headers["Cache-Control"].startswith("private, ")


async def test_authenticated_mode_leaves_probes_uploads_and_preflights_open(
    make_app: MakeApp, tmp_path: Path
) -> None:
    client, _ = await make_app(read_access="authenticated")
    for path in ("/health", "/ready", "/metrics"):
        status, body, headers = await status_of(client, path)
        assert status == 200, (path, status, body)
        assert "WWW-Authenticate" not in headers
    response = await client.options("/simple/", headers={"Origin": "http://127.0.0.1:1"})
    assert response.status == 204  # browsers send preflights without credentials
    wheel = make_wheel(tmp_path / "dist", "New-Thing", "1.0")
    response = await upload(client, wheel, "bob", OTHER_PASSWORD)
    assert response.status == 200, await response.text()
    response = await upload(client, wheel, None)
    assert response.status == 401  # uploads keep their own check


async def test_removed_user_and_revoked_token_are_refused_at_once(make_app: MakeApp) -> None:
    client, services = await make_app(read_access="authenticated")
    token = services.users.create_token("carol")
    for headers in (basic("bob", OTHER_PASSWORD), basic(TOKEN_USERNAME, token)):
        assert (await status_of(client, "/simple/", headers))[0] == 200
        assert (await status_of(client, "/simple/", headers))[0] == 200  # now from the cache
    services.users.revoke_token(token)
    assert (await status_of(client, "/simple/", basic(TOKEN_USERNAME, token)))[0] == 401
    services.users.remove_user("bob")
    assert (await status_of(client, "/simple/", basic("bob", OTHER_PASSWORD)))[0] == 401
    assert (await status_of(client, "/simple/", basic("carol", OTHER_PASSWORD)))[0] == 200


async def test_another_process_removing_a_user_or_revoking_a_token_is_refused_at_once(
    make_app: MakeApp,
) -> None:
    """What `pyproxy user remove` and `token revoke` do, from another process (here: another
    store on the same data dir): the very next request is refused, however recently the
    credentials were verified."""
    client, services = await make_app(read_access="authenticated")
    token = services.users.create_token("carol")
    password, token_headers = basic("bob", OTHER_PASSWORD), basic(TOKEN_USERNAME, token)
    for headers in (password, token_headers, password, token_headers):  # now remembered
        assert (await status_of(client, "/simple/", headers))[0] == 200
    cli_store = UserStore(services.settings.data_dir)  # what the CLI opens
    try:
        cli_store.revoke_token(token)
        assert (await status_of(client, "/simple/", token_headers))[0] == 401
        assert (await status_of(client, "/simple/", password))[0] == 200
        cli_store.remove_user("bob")
        assert (await status_of(client, "/simple/", password))[0] == 401
    finally:
        cli_store.close()
    assert (await status_of(client, "/simple/", basic("carol", OTHER_PASSWORD)))[0] == 200


# ------------------------------------------------------------------------ password checks


class Hashes:
    """Every scrypt call, by the name of the thread it ran on (and that thread's niceness).
    While `gate` is clear, calls wait for it: the password pool stays saturated for as long as
    a test needs."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.niceness: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def clear(self) -> None:
        self.threads.clear()
        self.niceness.clear()


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hashes]:
    seen = Hashes()
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        seen.threads.append(threading.current_thread().name)
        seen.niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        seen.gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(auth.hashlib, "scrypt", counting)
    yield seen
    seen.gate.set()


async def test_checks_are_remembered_coalesced_and_made_on_their_own_threads(
    make_app: MakeApp, hashes: Hashes
) -> None:
    client, _ = await make_app(read_access="authenticated")
    hashes.clear()
    headers = basic("bob", OTHER_PASSWORD)
    hashes.gate.clear()  # the first check waits until all ten requests asked for it
    requests = [asyncio.ensure_future(status_of(client, "/simple/", headers)) for _ in range(10)]
    while len(hashes.threads) < 1:
        await asyncio.sleep(0.01)
    hashes.gate.set()
    assert [status for status, _, _ in await asyncio.gather(*requests)] == [200] * 10
    for _ in range(10):
        assert (await status_of(client, "/simple/foo-bar/", headers))[0] == 200
    assert len(hashes.threads) == 1
    # the same wrong password costs one hash, however often it is sent
    for _ in range(3):
        assert (await status_of(client, "/simple/", basic("bob", "wrong-one")))[0] == 401
    assert len(hashes.threads) == 2
    # never in the default pool that file serving and page rendering use, and (Linux) at a
    # lower priority than the event loop's thread
    assert all(name.startswith("pyproxy-password") for name in hashes.threads), hashes.threads
    if sys.platform == "linux":
        lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + credentials.PASSWORD_NICENESS)
        assert hashes.niceness == [lowered] * 2


async def test_a_remembered_failure_is_forgotten_when_users_change(
    make_app: MakeApp, hashes: Hashes
) -> None:
    client, services = await make_app(read_access="authenticated")
    headers = basic("bob", "the-new-password")
    assert (await status_of(client, "/simple/", headers))[0] == 401
    cli_store = UserStore(services.settings.data_dir)  # what the CLI opens
    try:
        cli_store.remove_user("bob")
        cli_store.add_user("bob", "the-new-password")
    finally:
        cli_store.close()
    assert (await status_of(client, "/simple/", headers))[0] == 200


async def test_a_token_is_answered_while_password_checks_are_saturated(
    make_app: MakeApp, hashes: Hashes
) -> None:
    """A flood of random passwords fills the password pool (1 thread, 2 waiting) and is
    refused beyond it; meanwhile a token client downloads a file, which opens it in the
    default thread pool. Ordering, not timing: the token's answer arrives while every
    password check is still held."""
    client, services = await make_app(
        read_access="authenticated", password_threads=1, password_queue=2,
        password_failures_per_minute=0,
    )
    token = basic(TOKEN_USERNAME, services.users.create_token("carol"))
    hashes.clear()
    hashes.gate.clear()
    try:
        guesses = [
            asyncio.ensure_future(status_of(client, "/simple/", basic("bob", f"guess-{n}")))
            for n in range(10)
        ]

        async def refused_beyond_the_pool() -> None:
            while sum(guess.done() for guess in guesses) < 7:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(refused_beyond_the_pool(), 30)  # a guard against a hang
        for guess in (guess for guess in guesses if guess.done()):
            status, body, headers = guess.result()
            assert status == 503 and headers["Retry-After"] == "1", (status, body)
            assert body.startswith("Service Unavailable: too many password checks"), body
        status, _, _ = await asyncio.wait_for(
            status_of(client, f"/files/foo-bar/{WHEEL}", token), 30
        )
        assert status == 200
        assert (await asyncio.wait_for(status_of(client, "/simple/", token), 30))[0] == 200
        assert not hashes.gate.is_set() and sum(not guess.done() for guess in guesses) == 3
    finally:
        hashes.gate.set()
    assert sorted(status for status, _, _ in await asyncio.gather(*guesses)) == [401] * 3 + [503] * 7
    assert len(hashes.threads) == 3


async def test_wrong_passwords_from_one_address_are_limited_with_429(
    make_app: MakeApp, hashes: Hashes, tmp_path: Path
) -> None:
    client, services = await make_app(read_access="authenticated", password_failures_per_minute=3)
    token = basic(TOKEN_USERNAME, services.users.create_token("carol"))
    remembered = basic("bob", OTHER_PASSWORD)
    assert (await status_of(client, "/simple/", remembered))[0] == 200
    hashes.clear()
    for n in range(3):
        assert (await status_of(client, "/simple/", basic("bob", f"guess-{n}")))[0] == 401
    assert (await status_of(client, "/simple/", basic("bob", "guess-0")))[0] == 401  # remembered
    status, body, headers = await status_of(client, "/simple/", basic("bob", "guess-3"))
    assert status == 429, (status, body)
    assert body.startswith("Too Many Requests: 3 wrong passwords from this address"), body
    assert body.count("\n") == 1 and 0 < int(headers["Retry-After"]) <= 60
    assert len(hashes.threads) == 3  # the refused guess was not hashed
    # a right password is not checked either (that would tell a guess apart) ...
    assert (await status_of(client, "/simple/", basic("carol", OTHER_PASSWORD)))[0] == 429
    throttled_before = (await rejections(client)).get("throttled", 0)
    response = await upload(client, make_wheel(tmp_path / "dist", "New-Thing", "1.0"), "carol",
                            OTHER_PASSWORD)
    assert response.status == 429 and "Retry-After" in response.headers
    assert (await rejections(client))["throttled"] == throttled_before + 1
    # ... but tokens and credentials already proven still work
    assert (await status_of(client, "/simple/", token))[0] == 200
    assert (await status_of(client, "/simple/", remembered))[0] == 200
    assert len(hashes.threads) == 3


async def test_behind_a_trusted_proxy_failures_count_per_forwarded_client(
    make_app: MakeApp, hashes: Hashes
) -> None:
    client, _ = await make_app(read_access="authenticated", password_failures_per_minute=2,
                               trust_forwarded=("127.0.0.0/8",))

    async def guess(n: int, forwarded: str) -> int:
        headers = {**basic("bob", f"guess-{n}"), "X-Forwarded-For": forwarded}
        return (await status_of(client, "/simple/", headers))[0]

    assert [await guess(n, "192.0.2.7") for n in range(3)] == [401, 401, 429]
    # another client behind the same proxy; a spoofed left-most entry changes nothing
    assert await guess(3, "192.0.2.8") == 401
    assert await guess(4, "203.0.113.9, 192.0.2.7") == 429
    # a chain of trusted proxies: the client is the right-most address that is not one
    assert await guess(5, "192.0.2.7, 127.0.0.2") == 429


async def test_no_credentials_in_the_logs(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    client, services = await make_app(read_access="authenticated")
    services.private.restrict(normalize("holygrail"))
    token = services.users.create_token("bob")
    secrets = [PASSWORD, OTHER_PASSWORD, token, "wrong-password"]
    sent = [basic(USER, PASSWORD), basic("bob", OTHER_PASSWORD), basic(TOKEN_USERNAME, token),
            basic(USER, "wrong-password")]
    for headers in sent:
        for path in ("/simple/", f"/files/foo-bar/{WHEEL}", "/pypi/foo-bar/json",
                     "/simple/holygrail/", "/nope"):
            await status_of(client, path, headers)
    await upload(client, make_wheel(tmp_path / "dist", "HolyGrail", "9"), USER, "wrong-password")
    text = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    assert "status=200" in caplog.text or '"status": 200' in text  # the access log was on
    for secret in secrets + [h["Authorization"].split()[1] for h in sent]:
        assert secret not in text


# ------------------------------------------------------------------------ restricted projects


async def _restricted(make_app: MakeApp, **settings: Any) -> tuple[TestClient, Services]:
    client, services = await make_app(**settings)
    foo = normalize("foo-bar")
    assert services.private.restrict(foo)
    services.private.grant(foo, "bob", "reader")
    return client, services


@pytest.mark.parametrize("mode", ["anonymous", "authenticated"])
async def test_restricted_project_answers_403_never_404(make_app: MakeApp, mode: str) -> None:
    client, _ = await _restricted(make_app, read_access=mode)
    readers = {"alice (owner)": basic(USER, PASSWORD), "bob (reader)": basic("bob", OTHER_PASSWORD),
               "root (admin)": basic("root", OTHER_PASSWORD)}
    for path in PROJECT_ROUTES:
        status, body, headers = await status_of(client, path)
        assert status == 401 and headers["WWW-Authenticate"] == CHALLENGE, (path, status, body)
        status, body, _ = await status_of(client, path, basic("carol", "wrong-password"))
        assert status == 401, (path, status, body)
        status, body, headers = await status_of(client, path, basic("carol", OTHER_PASSWORD))
        assert status == 403, (path, status, body)
        assert "restricted" in body and "pyproxy grant foo-bar carol --read" in body
        assert body.count("\n") == 1 and "WWW-Authenticate" not in headers
        for who, reader in readers.items():
            status, body, _ = await status_of(client, path, reader)
            expected = 404 if "no-such-file" in path else 301 if "Foo_Bar" in path else 200
            assert status == expected, (path, who, status, body)
    # the other private project is not affected
    expected = 401 if mode == "authenticated" else 200
    assert (await status_of(client, "/simple/holygrail/"))[0] == expected
    assert (await status_of(client, "/simple/holygrail/", basic("carol", OTHER_PASSWORD)))[0] == 200


async def test_listings_leave_out_what_the_caller_may_not_read(make_app: MakeApp) -> None:
    client, _ = await _restricted(make_app)
    callers: dict[str, dict[str, str] | None] = {
        "anonymous": None, "carol": basic("carol", OTHER_PASSWORD),
        "bob": basic("bob", OTHER_PASSWORD), "root": basic("root", OTHER_PASSWORD),
    }
    # twice round, so a rendering cached for one caller is never served to another
    for _ in range(2):
        for who, headers in callers.items():
            sees = who in ("bob", "root")
            status, body, _ = await status_of(
                client, "/simple/", {**(headers or {}), "Accept": SIMPLE_JSON}
            )
            names = {p["name"] for p in json.loads(body)["projects"]}
            assert status == 200 and ("Foo-Bar" in names) == sees and "HolyGrail" in names, (who, names)
            status, body, _ = await status_of(client, "/simple/", headers)
            assert ('"foo-bar/"' in body) == sees and '"holygrail/"' in body, who
            status, body, _ = await status_of(client, "/projects/", headers)
            assert ("/project/foo-bar/" in body) == sees and "/project/holygrail/" in body, who
            status, body, _ = await status_of(client, "/search?q=ba", headers)
            assert ("/project/foo-bar/" in body) == sees, who
            status, body, response_headers = await status_of(client, "/search?q=foo-bar", headers)
            if sees:  # an exact name goes straight to its page
                assert status == 302 and response_headers["Location"] == "/project/foo-bar/"
            else:
                assert status == 200 and "/project/foo-bar/" not in body, (who, status)


async def test_restriction_can_be_undone_and_readers_revoked(make_app: MakeApp) -> None:
    client, services = await _restricted(make_app)
    foo = normalize("foo-bar")
    bob = basic("bob", OTHER_PASSWORD)
    assert (await status_of(client, "/simple/foo-bar/", bob))[0] == 200
    services.private.revoke(foo, "bob")
    assert (await status_of(client, "/simple/foo-bar/", bob))[0] == 403
    assert services.private.restrict(foo, undo=True)
    assert (await status_of(client, "/simple/foo-bar/"))[0] == 200
    assert '"foo-bar/"' in (await status_of(client, "/simple/"))[1]


async def test_a_personal_page_leaves_the_kept_headers_as_they_were(make_app: MakeApp) -> None:
    """A page's headers are built once per revision (simple.py): marking one answer `private`
    must not mark the next one, once the project is no longer restricted."""
    client, services = await _restricted(make_app)
    bob = basic("bob", OTHER_PASSWORD)
    for accept in (None, SIMPLE_JSON):
        headers = {**bob, **({"Accept": accept} if accept else {})}
        for _ in range(2):
            status, _, response_headers = await status_of(client, "/simple/foo-bar/", headers)
            assert status == 200
            assert response_headers["Cache-Control"].startswith("private, max-age="), accept
    assert services.private.restrict(normalize("foo-bar"), undo=True)
    for accept in (None, SIMPLE_JSON):
        status, _, response_headers = await status_of(
            client, "/simple/foo-bar/", {"Accept": accept} if accept else None
        )
        assert status == 200
        assert response_headers["Cache-Control"].startswith("max-age="), accept


async def test_another_process_restricting_or_revoking_a_reader_takes_effect_at_once(
    make_app: MakeApp,
) -> None:
    """`pyproxy restrict` and `grant --revoke` from another process: the very next request is
    judged by the new rule."""
    client, services = await make_app()
    foo = normalize("foo-bar")
    bob = basic("bob", OTHER_PASSWORD)
    assert (await status_of(client, "/simple/foo-bar/"))[0] == 200
    cli_store = PrivateStore(services.private.directory)  # what the CLI opens
    try:
        cli_store.restrict(foo)
        assert (await status_of(client, "/simple/foo-bar/"))[0] == 401
        cli_store.grant(foo, "bob", "reader")
        assert (await status_of(client, "/simple/foo-bar/", bob))[0] == 200
        assert (await status_of(client, "/simple/foo-bar/", bob))[0] == 200
        cli_store.revoke(foo, "bob")
        assert (await status_of(client, "/simple/foo-bar/", bob))[0] == 403
    finally:
        cli_store.close()


async def test_a_reader_cannot_upload(make_app: MakeApp, tmp_path: Path) -> None:
    client, _ = await _restricted(make_app)
    wheel = make_wheel(tmp_path / "dist", "Foo_Bar", "9.0")
    response = await upload(client, wheel, "bob", OTHER_PASSWORD)
    assert response.status == 403, await response.text()


# ------------------------------------------------------------------------ read = anonymous


async def test_anonymous_mode_asks_nothing_and_queries_nothing(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing restricted, reads need no credentials, wrong ones are not even looked at,
    and the guard adds no database query."""
    monkeypatch.setattr(private_reads, "DB_RECHECK_S", 60.0)  # the backstop query, once a second
    client, services = await make_app()
    for path, expected in READ_ROUTES.items():
        for headers in (None, basic(USER, "wrong-password")):
            status, body, response_headers = await status_of(client, path, headers)
            assert status == expected, (path, status, body)
            assert "private" not in response_headers.get("Cache-Control", "")
    statements: list[str] = []
    services.private._reader.set_trace_callback(statements.append)
    services.users._db.set_trace_callback(statements.append)
    try:
        for headers in (None, basic(USER, "wrong-password")):
            for _ in range(5):
                assert (await status_of(client, "/search", headers))[0] == 200  # no data read
    finally:
        services.private._reader.set_trace_callback(None)
        services.users._db.set_trace_callback(None)
    assert statements == []
