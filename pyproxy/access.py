"""Who may upload to a private project and who may read it: pure rules over the role rows the
private store returns (no I/O, no messages).

Roles on a private project: `owner` and `maintainer` may upload; `reader` may only read, which
matters once the project is restricted (`pyproxy restrict`). Admins may upload to and read
every project.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
