"""Users and API tokens in an export (`pyproxy export --include-users`): `private/users.jsonl`,
one user per line with its scrypt password hash and its tokens' sha256 hashes. No password and no
token is ever written: nothing here lets anyone in who could not get in before, but the hashes
are secrets of their own kind (a password hash can be attacked offline), so the export directory
must be kept as private as the data directory.

Import adds every user that is not there (one that is keeps its password) and every token whose
hash is not there, so the same credentials work against the target at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyproxy.ops.transfer_format import Report, read_jsonl, write_jsonl
from pyproxy.stores.auth import TokenRecord, UserRecord
from pyproxy.stores.interfaces import UserStoreAPI

USERS = Path("private") / "users.jsonl"


def _as_json(record: UserRecord) -> dict[str, Any]:
    return {
        "name": record.name, "password_hash": record.password_hash, "admin": record.admin,
        "created": record.created,
        "tokens": [
            {"token_hash": t.token_hash, "prefix": t.prefix, "created": t.created}
            for t in record.tokens
        ],
    }


def _text(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str):
        raise ValueError(f"not a user record: {key} is not text")
    return value


def _from_json(fields: dict[str, Any]) -> UserRecord:
    tokens = fields.get("tokens") or []
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise ValueError("not a user record: tokens is not a list of records")
    if not isinstance(fields.get("admin"), bool):
        raise ValueError("not a user record: admin is not true or false")
    record = UserRecord(
        _text(fields, "name"), _text(fields, "password_hash"), fields["admin"],
        _text(fields, "created"),
        tuple(
            TokenRecord(_text(t, "token_hash"), _text(t, "prefix"), _text(t, "created"))
            for t in tokens
        ),
    )
    record.check()
    return record


def export_users(users: UserStoreAPI, target: Path, report: Report) -> None:
    records = users.export_users()
    report.copied = write_jsonl(target / USERS, (_as_json(r) for r in records))


def import_users(users: UserStoreAPI, source: Path, report: Report) -> None:
    for fields in _records(source):
        name = fields.get("name")
        try:
            added, _tokens = users.import_user(_from_json(fields))
        except ValueError as exc:
            report.fail(f"user {name!r}", str(exc))
            continue
        if added:
            report.copied += 1
        else:
            report.skipped += 1


def _records(source: Path) -> Iterator[dict[str, Any]]:
    yield from read_jsonl(source / USERS)
