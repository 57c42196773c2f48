"""pyproxy.auth: password hashes, Basic credentials, users and API tokens.

The user-store tests run on both backends (`backends`): the embedded store and a cluster node's
PostgreSQL store (stores/pg/users.py), which must behave the same."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import psycopg
import pytest

from pyproxy.stores import auth
from pyproxy.stores.auth import (
    TOKEN_PREFIX,
    TOKEN_USERNAME,
    AuthError,
    Identity,
    UserStore,
    hash_password,
    parse_basic,
    verify_password,
)
from pyproxy.stores.interfaces import UserStoreAPI
from tests.stores.backends import Backends, settle

PASSWORD = "correct horse battery"
REAL_SCRYPT_N = auth._SCRYPT_N


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low scrypt cost keeps the suite fast; stored hashes carry their own cost, so every
    code path is the same (test_default_cost checks the real one)."""
    monkeypatch.setattr(auth, "_SCRYPT_N", 2**8)


def test_default_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    assert REAL_SCRYPT_N >= 2**14
    monkeypatch.setattr(auth, "_SCRYPT_N", REAL_SCRYPT_N)
    stored = hash_password(PASSWORD)
    assert stored.split("$")[1:4] == [str(REAL_SCRYPT_N), "8", "1"]
    assert verify_password(PASSWORD, stored)


@pytest.fixture
def users(tmp_path: Path, backends: Backends) -> UserStoreAPI:
    return backends.open_users(tmp_path / "data")


@pytest.fixture(scope="module")
def stored_hash() -> str:
    return hash_password(PASSWORD)


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


# ---- password hashes ----


def test_hash_and_verify(stored_hash: str) -> None:
    assert stored_hash.startswith("scrypt$")
    assert PASSWORD not in stored_hash
    assert verify_password(PASSWORD, stored_hash)


@pytest.mark.parametrize("wrong", ["", "correct horse", PASSWORD + " ", PASSWORD.upper(), "ünïcödé"])
def test_wrong_password(stored_hash: str, wrong: str) -> None:
    assert not verify_password(wrong, stored_hash)


def test_hashes_are_salted() -> None:
    assert hash_password("same password") != hash_password("same password")


def test_unicode_password() -> None:
    assert verify_password("pässwörd-€", hash_password("pässwörd-€"))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext",
        "bcrypt$1$2$3$c2FsdA==$ZGlnZXN0",
        "scrypt$16384$8$1$c2FsdA==",  # a field missing
        "scrypt$16384$8$1$c2FsdA==$ZGln$extra",
        "scrypt$lots$8$1$c2FsdA==$ZGlnZXN0",
        "scrypt$16384$8$1$not*base64$ZGlnZXN0",
        "scrypt$16384$8$1$c2FsdA==$not*base64",
        "scrypt$3$8$1$c2FsdA==$ZGlnZXN0",  # n not a power of two: hashlib refuses
        "scrypt$16384$8$1$c2FsdA==$",  # empty digest
    ],
)
def test_malformed_stored_hash_is_false(stored: str) -> None:
    assert verify_password(PASSWORD, stored) is False


# ---- Basic credentials ----


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(b"alice:secret"), ("alice", "secret")),
        ("basic " + base64.b64encode(b"alice:secret").decode(), ("alice", "secret")),
        ("BASIC  " + base64.b64encode(b"alice:secret").decode() + "  ", ("alice", "secret")),
        (basic(b"alice:se:cr:et"), ("alice", "se:cr:et")),  # only the first colon splits
        (basic(b"alice:"), ("alice", "")),
        (basic(b":secret"), ("", "secret")),
        (basic("jörg:pässwörd".encode()), ("jörg", "pässwörd")),
        (basic(b"__token__:pyproxy-abc\n"), ("__token__", "pyproxy-abc\n")),
    ],
)
def test_parse_basic(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Basic",
        "Basic ",
        "Bearer abc.def",
        "Digest username=alice",
        "Basic not-base64!!",
        "Basic YWxpY2U",  # bad padding
        basic(b"no colon here"),
        basic("alice:pässwörd".encode("latin-1")),  # not UTF-8
        # not ASCII: raw bytes that are not UTF-8 (aiohttp decodes them as lone surrogates),
        # and text that is
        b"Basic \xff\xfe".decode("utf-8", "surrogateescape"),
        "Basic ÿþ",
        "Basic YWxpY2U6c2VjcmV0é",
        "Basic \u2028",
    ],
)
def test_parse_basic_rejects(header: str | None) -> None:
    assert parse_basic(header) is None


# ---- users ----


def test_add_and_authenticate(users: UserStoreAPI) -> None:
    users.add_user("alice", PASSWORD)
    users.add_user("root", PASSWORD, admin=True)
    assert users.exists("alice")
    assert users.users() == [("alice", False, 0), ("root", True, 0)]
    assert users.authenticate("alice", PASSWORD) == Identity("alice", admin=False, via_token=False)
    assert users.authenticate("root", PASSWORD) == Identity("root", admin=True, via_token=False)
    assert users.authenticate("alice", "wrong password") is None
    assert users.authenticate("nobody", PASSWORD) is None
    assert users.authenticate("ALICE", PASSWORD) is None  # names are exact


@pytest.mark.parametrize(
    "name",
    ["", "-alice", ".alice", "_alice", "al ice", "alice/bob", "alice:bob", "ä", "a" * 65, "alice\n",
     TOKEN_USERNAME],
)
def test_invalid_user_names(users: UserStoreAPI, name: str) -> None:
    with pytest.raises(AuthError) as caught:
        users.add_user(name, PASSWORD)
    assert "\n" not in str(caught.value)
    assert users.users() == []


@pytest.mark.parametrize("name", ["a", "alice", "Alice.Bob_2-x", "a" * 64, "9lives"])
def test_valid_user_names(users: UserStoreAPI, name: str) -> None:
    users.add_user(name, PASSWORD)
    assert users.exists(name)


@pytest.mark.parametrize("password", ["", "short", "7chars!"])
def test_short_password(users: UserStoreAPI, password: str) -> None:
    with pytest.raises(AuthError, match="8 characters"):
        users.add_user("alice", password)
    assert not users.exists("alice")


def test_duplicate_user(users: UserStoreAPI) -> None:
    users.add_user("alice", PASSWORD)
    with pytest.raises(AuthError, match="already exists"):
        users.add_user("alice", "another password")
    assert users.authenticate("alice", PASSWORD) is not None


def test_token_username_cannot_log_in_with_a_password(users: UserStoreAPI) -> None:
    with pytest.raises(AuthError):
        users.add_user(TOKEN_USERNAME, PASSWORD)
    assert users.authenticate(TOKEN_USERNAME, PASSWORD) is None


def test_remove_user_cascades_tokens(users: UserStoreAPI) -> None:
    users.add_user("alice", PASSWORD)
    users.add_user("bob", PASSWORD)
    alice_token = users.create_token("alice")
    bob_token = users.create_token("bob")
    users.remove_user("alice")
    assert not users.exists("alice")
    assert users.authenticate("alice", PASSWORD) is None
    assert users.authenticate(TOKEN_USERNAME, alice_token) is None
    assert users.tokens("alice") == []
    assert users.authenticate(TOKEN_USERNAME, bob_token) == Identity("bob", False, via_token=True)
    assert users.users() == [("bob", False, 1)]
    # the name is free again, and its old tokens stay dead
    users.add_user("alice", PASSWORD)
    assert users.authenticate(TOKEN_USERNAME, alice_token) is None


def test_remove_unknown_user(users: UserStoreAPI) -> None:
    with pytest.raises(AuthError, match="no user"):
        users.remove_user("nobody")


def test_users_persist_across_instances(tmp_path: Path, backends: Backends) -> None:
    first = backends.open_users(tmp_path)
    first.add_user("alice", PASSWORD)
    token = first.create_token("alice")
    backends.close(first)
    second = backends.open_users(tmp_path)
    assert second.authenticate("alice", PASSWORD) is not None
    assert second.authenticate(TOKEN_USERNAME, token) is not None


def test_revision_moves_at_once_for_every_instance(tmp_path: Path, backends: Backends,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's store sees another process's change (the CLI's store stands in for it) on its
    very next revision(), without waiting for the database backstop (on PostgreSQL: as soon
    as the change's notification arrived, which `settle` waits for)."""
    monkeypatch.setattr(auth, "REVISION_RECHECK_S", 3600.0)
    server, cli = backends.open_users(tmp_path), backends.open_users(tmp_path)
    cli.add_user("alice", PASSWORD)
    settle(server)
    seen = server.revision()
    for change in (lambda: cli.create_token("alice"), lambda: cli.revoke_token(
            cli.create_token("alice")), lambda: server.add_user("bob", PASSWORD),
            lambda: cli.remove_user("alice")):
        change()
        settle(server)
        assert server.revision() != seen
        seen = server.revision()
    with pytest.raises(AuthError):  # nothing committed, nothing to drop
        cli.remove_user("alice")
    settle(server)
    assert server.revision() == seen


def test_a_token_revoked_elsewhere_is_refused_once_heard(tmp_path: Path, backends: Backends) -> None:
    """What a server remembers of tokens and passwords is dropped on another instance's change."""
    server, cli = backends.open_users(tmp_path), backends.open_users(tmp_path)
    cli.add_user("alice", PASSWORD)
    token = cli.create_token("alice")
    settle(server)
    assert server.authenticate(TOKEN_USERNAME, token) == Identity("alice", False, via_token=True)
    cli.revoke_token(token)
    settle(server)
    assert server.authenticate(TOKEN_USERNAME, token) is None
    cli.remove_user("alice")
    settle(server)
    assert server.password_record("alice") is None


# ---- tokens ----


def test_token_create_and_authenticate(users: UserStoreAPI) -> None:
    users.add_user("root", PASSWORD, admin=True)
    token = users.create_token("root")
    assert token.startswith(TOKEN_PREFIX)
    assert len(token) > len(TOKEN_PREFIX) + 40
    assert users.authenticate(TOKEN_USERNAME, token) == Identity("root", admin=True, via_token=True)
    assert users.users() == [("root", True, 1)]
    ((prefix, created),) = users.tokens("root")
    assert token.startswith(prefix) and len(prefix) == len(TOKEN_PREFIX) + 6 and created
    assert users.create_token("root") != token


def test_token_is_not_stored(users: UserStoreAPI, tmp_path: Path, backends: Backends) -> None:
    users.add_user("alice", PASSWORD)
    token = users.create_token("alice")
    secret = token.removeprefix(TOKEN_PREFIX).encode()
    for path in (tmp_path / "data").iterdir():
        assert secret not in path.read_bytes()
    if backends.kind == "postgresql":
        with psycopg.connect(backends.dsn) as conn:
            rows = conn.execute("SELECT t::text FROM tokens t UNION ALL SELECT u::text FROM users u")
            assert not any(secret.decode() in row[0] for row in rows)


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t\n"])
def test_token_with_trailing_whitespace(users: UserStoreAPI, suffix: str) -> None:
    users.add_user("alice", PASSWORD)
    token = users.create_token("alice")
    assert users.authenticate(TOKEN_USERNAME, token + suffix) == Identity("alice", False, True)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "x",
        lambda t: t.upper(),
        lambda t: t[:14],  # the shown prefix is not a credential
        lambda t: "",
    ],
)
def test_wrong_token(users: UserStoreAPI, mangle) -> None:  # type: ignore[no-untyped-def]
    users.add_user("alice", PASSWORD)
    token = users.create_token("alice")
    assert users.authenticate(TOKEN_USERNAME, mangle(token)) is None


def test_token_is_not_a_password(users: UserStoreAPI) -> None:
    users.add_user("alice", PASSWORD)
    token = users.create_token("alice")
    assert users.authenticate("alice", token) is None


def test_token_for_unknown_user(users: UserStoreAPI) -> None:
    with pytest.raises(AuthError, match="no user"):
        users.create_token("nobody")


def test_revoke_by_whole_token(users: UserStoreAPI) -> None:
    users.add_user("alice", PASSWORD)
    revoked = users.create_token("alice")
    kept = users.create_token("alice")
    assert users.revoke_token(revoked) == 1
    assert users.authenticate(TOKEN_USERNAME, revoked) is None
    assert users.authenticate(TOKEN_USERNAME, kept) is not None
    with pytest.raises(AuthError, match="no such token"):
        users.revoke_token(revoked)


def _scripted_tokens(monkeypatch: pytest.MonkeyPatch, *randoms: str) -> None:
    """The random part of the next tokens, in order (43 characters, as token_urlsafe(32))."""
    values = iter(randoms)
    monkeypatch.setattr(secrets, "token_urlsafe", lambda nbytes=None: next(values))


def test_revoke_by_prefix(users: UserStoreAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    users.add_user("alice", PASSWORD)
    _scripted_tokens(monkeypatch, "Revoked" + "r" * 36, "Kept00" + "k" * 37)
    revoked = users.create_token("alice")
    kept = users.create_token("alice")
    prefix = next(p for p, _ in users.tokens("alice") if revoked.startswith(p))
    assert not kept.startswith(prefix)
    assert users.revoke_token(prefix) == 1
    assert users.authenticate(TOKEN_USERNAME, revoked) is None
    assert users.authenticate(TOKEN_USERNAME, kept) is not None
    assert [p for p, _ in users.tokens("alice")] == [kept[: len(prefix)]]


def test_revoke_by_a_shared_prefix_revokes_every_token_with_it(
    users: UserStoreAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.add_user("alice", PASSWORD)
    _scripted_tokens(monkeypatch, "Shared" + "a" * 37, "Shared" + "b" * 37, "Other0" + "c" * 37)
    first, second, other = (users.create_token("alice") for _ in range(3))
    prefixes = [p for p, _ in users.tokens("alice")]
    assert len(set(prefixes)) == 2
    shared = next(p for p in prefixes if first.startswith(p))
    assert second.startswith(shared)
    assert users.revoke_token(shared) == 2
    assert users.authenticate(TOKEN_USERNAME, first) is None
    assert users.authenticate(TOKEN_USERNAME, second) is None
    assert users.authenticate(TOKEN_USERNAME, other) is not None


@pytest.mark.parametrize("value", ["", "pyproxy-", "pyproxy-ab", "nothing", "pyproxy-zzzzzz"])
def test_revoke_unknown_or_too_short(users: UserStoreAPI, value: str) -> None:
    users.add_user("alice", PASSWORD)
    users.create_token("alice")
    with pytest.raises(AuthError):
        users.revoke_token(value)
    assert len(users.tokens("alice")) == 1


def test_short_prefix_never_matches_many(users: UserStoreAPI) -> None:
    users.add_user("alice", PASSWORD)
    for _ in range(3):
        users.create_token("alice")
    with pytest.raises(AuthError):
        users.revoke_token(TOKEN_PREFIX)  # would match every token by LIKE; must not
    assert len(users.tokens("alice")) == 3


def test_dummy_hash_is_cached() -> None:
    assert auth._dummy_hash() == auth._dummy_hash()


def test_export_and_import_users_between_backends(tmp_path: Path, backends: Backends) -> None:
    """What one store exports, another takes: the same password and tokens work there."""
    source, target = backends.open_users(tmp_path / "a"), UserStore(tmp_path / "b")
    try:
        source.add_user("alice", PASSWORD, admin=True)
        token = source.create_token("alice")
        (record,) = source.export_users()
        assert record.name == "alice" and record.admin and len(record.tokens) == 1
        assert token not in repr(record)
        assert target.import_user(record) == (True, 1)
        assert target.import_user(record) == (False, 0)
        assert target.authenticate(TOKEN_USERNAME, token) == Identity("alice", True, via_token=True)
        back = backends.open_users(tmp_path / "c")  # the other way, into this backend
        source.remove_user("alice")
        settle(back)
        assert back.import_user(target.export_users()[0]) == (True, 1)
        settle(back)
        assert back.authenticate("alice", PASSWORD) == Identity("alice", True, via_token=False)
    finally:
        target.close()
