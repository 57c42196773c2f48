"""Users and API tokens of a cluster in PostgreSQL: the same interface and rules as
stores/auth.UserStore (scrypt password hashes, tokens stored as their sha256).

Every node holds all users and token hashes in memory (they are few), so checking credentials
asks the database nothing; a write sends `users` inside its transaction and every node reloads
on its next check. `revision()` moves on each such change, so the web layer's credential cache
forgets at once (a revoked token is refused on every node within one notification).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pyproxy.stores.auth import (
    _USERNAME,
    TOKEN_PREFIX,
    TOKEN_USERNAME,
    AuthError,
    Identity,
    UserRecord,
    _token_hash,
    authenticate,
    hash_password,
    user_records,
)
from pyproxy.stores.pg.connect import DatabaseUnavailable
from pyproxy.stores.pg.database import READ_TIMEOUT_S, Connection, Database
from pyproxy.stores.pg.migrations import Migration, register
from pyproxy.stores.pg.notify import Changes, Listener, notify

register(Migration(11, "users and tokens", """
    CREATE TABLE users (
        name text PRIMARY KEY,
        password_hash text NOT NULL,
        admin boolean NOT NULL DEFAULT false,
        created text NOT NULL
    );
    CREATE TABLE tokens (
        token_hash text PRIMARY KEY,       -- sha256 of the token; the token is never stored
        username text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        prefix text NOT NULL,              -- the first characters, to tell tokens apart
        created text NOT NULL
    );
    CREATE INDEX tokens_by_user ON tokens(username);
"""))

TOPIC = "users"


@dataclass(frozen=True, slots=True)
class _Known:
    passwords: dict[str, tuple[str, bool]]  # user -> (password hash, admin)
    tokens: dict[str, str]  # token hash -> user


class PgUserStore:
    """`listener` None (the CLI): nothing is held, every check asks the database."""

    def __init__(self, db: Database, listener: Listener | None) -> None:
        self.db = db
        self._listener = listener
        self._changes = Changes()
        if listener is not None:
            listener.subscribe(TOPIC, lambda _: self._changes.mark(TOPIC))
            listener.on_lost(self._changes.mark_all)
        self._lock = threading.Lock()
        self._seen = -1
        self._known: _Known | None = None

    def close(self) -> None:
        """The database and the listener belong to whoever opened them (compose)."""

    def revision(self) -> tuple[int, int]:
        """Moves on every change any node commits (once its notification arrives: at once on
        the node that wrote), and when the listener was lost."""
        return self._changes.value, 0

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.db.transaction() as conn:
            yield conn
            notify(conn, TOPIC)
        self._changes.mark(TOPIC)

    def _held(self) -> _Known:
        """Every user and token hash, reloaded after a change; the old copy while the
        database cannot be reached."""
        if self._listener is None:
            self._changes.mark_all()
        with self._lock:
            if self._changes.value != self._seen or self._known is None:
                seen = self._changes.value
                old = self._known
                if old is None or self._listener is None or self._listener.connected:
                    try:
                        self._known = self._load()
                        self._seen = seen
                        self._changes.take()
                    except DatabaseUnavailable:
                        if old is None:
                            raise
            assert self._known is not None
            return self._known

    def _load(self) -> _Known:
        with self.db.transaction(timeout=READ_TIMEOUT_S) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            users = conn.execute("SELECT name, password_hash, admin FROM users").fetchall()
            tokens = conn.execute("SELECT token_hash, username FROM tokens").fetchall()
        return _Known(
            {str(name): (str(hashed), bool(admin)) for name, hashed, admin in users},
            {str(hashed): str(user) for hashed, user in tokens},
        )

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        if not _USERNAME.fullmatch(name) or name == TOKEN_USERNAME:
            raise AuthError(
                f"{name!r} is not a valid user name: use letters, digits, '.', '_' or '-'"
            )
        if len(password) < 8:
            raise AuthError("the password must be at least 8 characters long")
        hashed = hash_password(password)  # before the transaction: ~50 ms of scrypt
        with self._write() as conn:
            inserted = conn.execute(
                "INSERT INTO users (name, password_hash, admin, created) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, hashed, admin, datetime.now(UTC).isoformat()),
            ).rowcount
            if not inserted:
                raise AuthError(f"user {name!r} already exists")

    def remove_user(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount == 0:
                raise AuthError(f"no user {name!r}")

    def users(self) -> list[tuple[str, bool, int]]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, admin, (SELECT count(*) FROM tokens WHERE tokens.username = name)"
                " FROM users ORDER BY name COLLATE \"C\""
            ).fetchall()
        return [(str(row[0]), bool(row[1]), int(row[2])) for row in rows]

    def exists(self, name: str) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT 1 FROM users WHERE name = %s", (name,)).fetchone()
        return row is not None

    def create_token(self, user: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = %s FOR SHARE", (user,)).fetchone() \
                    is None:
                raise AuthError(f"no user {user!r}")
            conn.execute(
                "INSERT INTO tokens (token_hash, username, prefix, created)"
                " VALUES (%s, %s, %s, %s)",
                (_token_hash(token), user, token[: len(TOKEN_PREFIX) + 6],
                 datetime.now(UTC).isoformat()),
            )
        return token

    def revoke_token(self, token_or_prefix: str) -> int:
        """Revoke one token given whole, or every token starting with a shown prefix."""
        with self._write() as conn:
            count = conn.execute(
                "DELETE FROM tokens WHERE token_hash = %s", (_token_hash(token_or_prefix),)
            ).rowcount
            if count == 0 and len(token_or_prefix) >= len(TOKEN_PREFIX) + 6:
                count = conn.execute(
                    "DELETE FROM tokens WHERE prefix = %s", (token_or_prefix,)
                ).rowcount
            if count == 0:
                raise AuthError("no such token")  # nothing changed: rolled back, no notice
        return count

    def tokens(self, user: str) -> list[tuple[str, str]]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT prefix, created FROM tokens WHERE username = %s ORDER BY created",
                (user,),
            ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]

    def token_identity(self, token: str) -> Identity | None:
        """From memory: a dict lookup of the token's sha256."""
        known = self._held()
        user = known.tokens.get(_token_hash(token.strip()))
        if user is None or user not in known.passwords:
            return None
        return Identity(user, known.passwords[user][1], via_token=True)

    def password_record(self, username: str) -> tuple[str, bool] | None:
        if username == TOKEN_USERNAME:
            return None
        return self._held().passwords.get(username)

    def export_users(self) -> list[UserRecord]:
        """Every user with its password hash and its tokens' hashes, for `pyproxy export`."""
        with self.db.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            users = conn.execute(
                "SELECT name, password_hash, admin, created FROM users ORDER BY name COLLATE \"C\""
            ).fetchall()
            tokens = conn.execute(
                "SELECT username, token_hash, prefix, created FROM tokens ORDER BY created"
            ).fetchall()
        return user_records(users, tokens)

    def import_user(self, record: UserRecord) -> tuple[bool, int]:
        """As UserStore.import_user: (user added, tokens added); a user there keeps its
        password, its exported tokens are added."""
        record.check()
        with self._write() as conn:
            added = conn.execute(
                "INSERT INTO users (name, password_hash, admin, created) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (record.name, record.password_hash, record.admin, record.created),
            ).rowcount == 1
            tokens = 0
            for token in record.tokens:
                tokens += conn.execute(
                    "INSERT INTO tokens (token_hash, username, prefix, created)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (token_hash) DO NOTHING",
                    (token.token_hash, record.name, token.prefix, token.created),
                ).rowcount
        return added, tokens

    def authenticate(self, username: str, password: str) -> Identity | None:
        return authenticate(self, username, password)
