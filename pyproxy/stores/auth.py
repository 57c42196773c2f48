"""Users and API tokens: slow salted password hashes, hashed tokens, Basic credentials."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pyproxy.stores import sqlite
from pyproxy.stores.changes import ChangeCounter

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,      -- sha256 of the token; the token itself is never stored
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    prefix TEXT NOT NULL,             -- the first characters, to tell tokens apart when revoking
    created TEXT NOT NULL
)
"""

TOKEN_USERNAME = "__token__"
TOKEN_PREFIX = "pyproxy-"
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# scrypt cost: ~50 ms per check on one core; uploads are rare enough to afford it
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
# how often revision() also asks the database whether it changed (normally the counter says)
REVISION_RECHECK_S = 0.5


class AuthError(Exception):
    """A user-management request that cannot be done; the message says why."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    admin: bool
    via_token: bool


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_hash: str  # sha256 hex of the token
    prefix: str
    created: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as `pyproxy export` writes it: hashes only, never a password or a token."""

    name: str
    password_hash: str
    admin: bool
    created: str
    tokens: tuple[TokenRecord, ...] = ()

    def check(self) -> None:
        """ValueError unless every field is what the store writes."""
        if not _USERNAME.fullmatch(self.name) or self.name == TOKEN_USERNAME:
            raise ValueError(f"{self.name!r} is not a user name")
        if not re.fullmatch(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+",
                            self.password_hash):
            raise ValueError(f"user {self.name!r}: not a password hash pyproxy writes")
        for token in self.tokens:
            if not re.fullmatch(r"[0-9a-f]{64}", token.token_hash):
                raise ValueError(f"user {self.name!r}: a token hash is not sha256 hex")
            if not token.prefix.startswith(TOKEN_PREFIX):
                raise ValueError(f"user {self.name!r}: a token prefix is not pyproxy's")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded[0]}${encoded[1]}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(username, password) from an Authorization header, or None if absent, not Basic or
    malformed (whatever bytes it holds: aiohttp decodes a header that is not UTF-8 with
    surrogates, and base64 refuses any text that is not ASCII)."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # ValueError: not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    return username, password


def _token_hash(token: str) -> str:
    # tokens carry 256 random bits, so a fast hash is enough to keep them unusable if leaked
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / "auth.sqlite3"
        self._db = sqlite.connect(self._path, SCHEMA)
        self._lock = threading.Lock()  # authenticate() runs in worker threads
        # bumped after every commit, by whichever process made it (the CLI, any worker), so
        # what a server remembers about credentials is dropped before its next request
        self._changes = ChangeCounter(directory / "auth.changes")
        # the database's own counter: a backstop for a writer that died before its bump
        self._data_version = 0
        self._checked = float("-inf")

    def close(self) -> None:
        self._db.close()
        self._changes.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with sqlite.write_transaction(self._db):
            yield self._db
        self._changes.bump()  # committed: every process sees the change on its next revision()

    def revision(self) -> tuple[int, int]:
        """Moves whenever users or tokens change, in this process or any other, at once: the
        shared change counter is a memory read; the database is asked only every
        REVISION_RECHECK_S (the backstop)."""
        now = time.monotonic()
        if now - self._checked >= REVISION_RECHECK_S:
            with self._lock:
                self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
            self._checked = now
        return self._changes.value, self._data_version

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        if not _USERNAME.fullmatch(name) or name == TOKEN_USERNAME:
            raise AuthError(
                f"{name!r} is not a valid user name: use letters, digits, '.', '_' or '-'"
            )
        if len(password) < 8:
            raise AuthError("the password must be at least 8 characters long")
        with self._write():
            if self._db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AuthError(f"user {name!r} already exists")
            self._db.execute(
                "INSERT INTO users (name, password_hash, admin, created) VALUES (?, ?, ?, ?)",
                (name, hash_password(password), int(admin), datetime.now(UTC).isoformat()),
            )

    def remove_user(self, name: str) -> None:
        with self._write():
            if self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise AuthError(f"no user {name!r}")

    def users(self) -> list[tuple[str, bool, int]]:
        """(name, admin, number of tokens) for every user."""
        rows = self._db.execute(
            "SELECT name, admin, (SELECT count(*) FROM tokens WHERE tokens.user = users.name)"
            " FROM users ORDER BY name"
        ).fetchall()
        return [(row[0], bool(row[1]), row[2]) for row in rows]

    def exists(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
        return row is not None

    def create_token(self, user: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write():
            if not self.exists(user):
                raise AuthError(f"no user {user!r}")
            self._db.execute(
                "INSERT INTO tokens (token_hash, user, prefix, created) VALUES (?, ?, ?, ?)",
                (_token_hash(token), user, token[: len(TOKEN_PREFIX) + 6],
                 datetime.now(UTC).isoformat()),
            )
        return token

    def revoke_token(self, token_or_prefix: str) -> int:
        """Revoke one token given whole, or every token starting with a shown prefix."""
        with self._write():
            count = self._db.execute(
                "DELETE FROM tokens WHERE token_hash = ?", (_token_hash(token_or_prefix),)
            ).rowcount
            if count == 0 and len(token_or_prefix) >= len(TOKEN_PREFIX) + 6:
                count = self._db.execute(
                    "DELETE FROM tokens WHERE prefix = ?", (token_or_prefix,)
                ).rowcount
        if count == 0:
            raise AuthError("no such token")
        return count

    def tokens(self, user: str) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT prefix, created FROM tokens WHERE user = ? ORDER BY created", (user,)
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def token_identity(self, token: str) -> Identity | None:
        """The identity an API token proves, or None: one indexed lookup of its sha256, cheap
        enough for the event loop. Tokens never cost a password hash."""
        with self._lock:
            row = self._db.execute(
                "SELECT users.name, users.admin FROM tokens"
                " JOIN users ON users.name = tokens.user WHERE token_hash = ?",
                (_token_hash(token.strip()),),  # pasted tokens often carry a newline
            ).fetchone()
        return None if row is None else Identity(row[0], bool(row[1]), via_token=True)

    def password_record(self, username: str) -> tuple[str, bool] | None:
        """(stored password hash, admin) of a user, or None: a lookup, no hashing."""
        if username == TOKEN_USERNAME:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash, admin FROM users WHERE name = ?", (username,)
            ).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def export_users(self) -> list[UserRecord]:
        """Every user with its password hash and its tokens' hashes, for `pyproxy export`."""
        with self._lock:
            users = self._db.execute(
                "SELECT name, password_hash, admin, created FROM users ORDER BY name"
            ).fetchall()
            tokens = self._db.execute(
                "SELECT user, token_hash, prefix, created FROM tokens ORDER BY created"
            ).fetchall()
        return user_records(users, tokens)

    def import_user(self, record: UserRecord) -> tuple[bool, int]:
        """Add an exported user and its tokens unless there: (user added, tokens added). A user
        already there keeps its password; its exported tokens are added. ValueError for a
        record that is not one."""
        record.check()
        with self._write():
            added = self._db.execute(
                "INSERT INTO users (name, password_hash, admin, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (record.name, record.password_hash, int(record.admin), record.created),
            ).rowcount == 1
            tokens = 0
            for token in record.tokens:
                tokens += self._db.execute(
                    "INSERT INTO tokens (token_hash, user, prefix, created) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (token_hash) DO NOTHING",
                    (token.token_hash, record.name, token.prefix, token.created),
                ).rowcount
        return added, tokens

    def authenticate(self, username: str, password: str) -> Identity | None:
        """The identity these credentials prove, or None. Blocking (scrypt): run off the loop."""
        return authenticate(self, username, password)


class _Credentials(Protocol):
    def token_identity(self, token: str) -> Identity | None: ...

    def password_record(self, username: str) -> tuple[str, bool] | None: ...


def authenticate(users: _Credentials, username: str, password: str) -> Identity | None:
    """The identity these credentials prove to a user store (of either backend), or None.
    Blocking (scrypt): run off the loop."""
    if username == TOKEN_USERNAME:
        return users.token_identity(password)
    record = users.password_record(username)
    if not check_password(password, None if record is None else record[0]):
        return None
    assert record is not None
    return Identity(username, record[1], via_token=False)


def user_records(
    users: Iterable[Sequence[Any]], tokens: Iterable[Sequence[Any]]
) -> list[UserRecord]:
    """Export records from rows of (name, password_hash, admin, created) and of (user,
    token_hash, prefix, created), as both backends select them."""
    held: dict[str, list[TokenRecord]] = {}
    for user, token_hash, prefix, created in tokens:
        held.setdefault(user, []).append(TokenRecord(token_hash, prefix, created))
    return [
        UserRecord(name, password_hash, bool(admin), created, tuple(held.get(name, ())))
        for name, password_hash, admin, created in users
    ]


def check_password(password: str, stored: str | None) -> bool:
    """verify_password, or for a user that does not exist (`stored` None) the same cost spent
    on a dummy hash and False, so the answer's timing does not tell whether a user exists."""
    if stored is None:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, stored)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))
