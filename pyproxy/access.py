"""Who may upload to a private project and who may read it: pure rules over the role rows the
private store returns (no I/O, no messages).

Roles on a private project: `owner` and `maintainer` may upload; `reader` may only read, which
matters once the project is restricted (`pyproxy restrict`). Admins may upload to and read
every project.

A new name (no private project yet) is claimed by its first upload, unless `may_claim` says
otherwise: a name upstream lists, or one under `[uploads] reserved_prefixes`, becomes private
only through an admin (an admin's upload, or `pyproxy reserve NAME`), so no uploader can hide a
public project from every client, and no public project can appear under a company prefix.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from pyproxy.model import NormalizedName

ROLES: Final = ("owner", "maintainer", "reader")
UPLOAD_ROLES: Final = frozenset({"owner", "maintainer"})

# (user, role) rows of one private project, as the store returns them
RoleRows = Sequence[tuple[str, str]]


def may_upload(user: str, roles: RoleRows | None, *, admin: bool) -> bool:
    """Whether `user` may upload to a project whose role rows are `roles` (None: no private
    project of that name). An existing project takes uploads from its owners and maintainers;
    one where nobody holds either role (a name reserved by `remove` or `reserve`) from anyone,
    who then becomes its owner."""
    if admin or roles is None:
        return True
    uploaders = {holder for holder, role in roles if role in UPLOAD_ROLES}
    return not uploaders or user in uploaders


class Claim(enum.Enum):
    """Whether a plain user's upload may create a new private project."""

    FREE = "free"
    RESERVED_PREFIX = "reserved prefix"  # under [uploads] reserved_prefixes
    UPSTREAM = "upstream"  # a project of the upstream index


def under_prefix(name: str, prefixes: Iterable[str]) -> bool:
    """Whether a normalised name starts with one of `prefixes` (normalised as names are)."""
    return any(name.startswith(prefix) for prefix in prefixes)


def may_claim(*, reserved_prefix: bool, listed_upstream: bool) -> Claim:
    """The rule for a new name and a user who is not an admin (admins claim any name). The
    prefix comes first: such a name is never looked up upstream."""
    if reserved_prefix:
        return Claim.RESERVED_PREFIX
    return Claim.UPSTREAM if listed_upstream else Claim.FREE


@dataclass(frozen=True, slots=True)
class ReadRestrictions:
    """The restricted projects and who may read each: the users holding any role on it.
    Admins read everything; every other project is readable by anyone allowed to read."""

    readers: Mapping[NormalizedName, frozenset[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.readers)

    def may_read(self, project: NormalizedName, user: str | None, *, admin: bool) -> bool:
        allowed = self.readers.get(project)
        return allowed is None or admin or (user is not None and user in allowed)

    def hidden_from(self, user: str | None, *, admin: bool) -> frozenset[NormalizedName]:
        """The projects a listing must leave out for this reader."""
        if admin:
            return frozenset()
        return frozenset(name for name, users in self.readers.items() if user not in users)
