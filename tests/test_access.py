"""pyproxy.access: who may upload and who may read, as pure rules over role rows."""

from __future__ import annotations

import pytest

from pyproxy.access import (
    ROLES,
    UPLOAD_ROLES,
    Claim,
    ReadRestrictions,
    RoleRows,
    may_claim,
    may_upload,
    under_prefix,
)
from pyproxy.model import normalize

OWNED: RoleRows = [("alice", "owner"), ("bob", "maintainer"), ("carol", "reader")]


@pytest.mark.parametrize(
    ("user", "roles", "admin", "allowed"),
    [
        ("anyone", None, False, True),  # a new name: claiming it is decided elsewhere
        ("alice", OWNED, False, True),  # owner
        ("bob", OWNED, False, True),  # maintainer
        ("carol", OWNED, False, False),  # a reader may read, not upload
        ("mallory", OWNED, False, False),  # no role at all
        ("mallory", OWNED, True, True),  # admins upload anywhere
        ("mallory", [], False, True),  # reserved (remove, reserve) with nobody holding it
        ("mallory", [("carol", "reader")], False, True),  # readers alone do not hold a name
        ("carol", [("carol", "reader")], False, True),
    ],
)
def test_may_upload(user: str, roles: RoleRows | None, admin: bool, allowed: bool) -> None:
    assert may_upload(user, roles, admin=admin) is allowed


def test_upload_roles_are_roles() -> None:
    assert set(ROLES) > UPLOAD_ROLES and "reader" in ROLES and "reader" not in UPLOAD_ROLES


FOO, BAR = normalize("foo"), normalize("bar")
RESTRICTED = ReadRestrictions({FOO: frozenset({"alice", "bob"})})


@pytest.mark.parametrize(
    ("user", "admin", "reads_foo"),
    [("alice", False, True), ("bob", False, True), ("carol", False, False),
     (None, False, False), ("root", True, True), (None, True, True)],
)
def test_read_restrictions(user: str | None, admin: bool, reads_foo: bool) -> None:
    assert RESTRICTED.may_read(FOO, user, admin=admin) is reads_foo
    assert RESTRICTED.may_read(BAR, user, admin=admin)  # not restricted: anyone who may read
    assert (FOO in RESTRICTED.hidden_from(user, admin=admin)) is not reads_foo
    assert BAR not in RESTRICTED.hidden_from(user, admin=admin)


def test_nothing_restricted_is_false() -> None:
    assert not ReadRestrictions()
    assert ReadRestrictions().hidden_from(None, admin=False) == frozenset()
    assert RESTRICTED


@pytest.mark.parametrize(
    ("name", "prefixes", "under"),
    [
        ("acme-widgets", ("acme-",), True),
        ("acme", ("acme-",), False),  # the prefix includes its separator
        ("acmeless", ("acme-",), False),
        ("corp-x", ("acme-", "corp-"), True),
        ("acme-widgets", (), False),
    ],
)
def test_under_prefix(name: str, prefixes: tuple[str, ...], under: bool) -> None:
    assert under_prefix(name, prefixes) is under


@pytest.mark.parametrize(
    ("reserved_prefix", "listed_upstream", "claim"),
    [
        (False, False, Claim.FREE),
        (False, True, Claim.UPSTREAM),
        (True, False, Claim.RESERVED_PREFIX),
        (True, True, Claim.RESERVED_PREFIX),
    ],
)
def test_may_claim(reserved_prefix: bool, listed_upstream: bool, claim: Claim) -> None:
    assert may_claim(reserved_prefix=reserved_prefix, listed_upstream=listed_upstream) is claim
