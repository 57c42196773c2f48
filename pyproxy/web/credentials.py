"""Which identity an Authorization header proves, remembered so a read rarely costs a check."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict

from pyproxy.stores.auth import Identity, UserStore, parse_basic


class Verifications:
    """Identities of recently verified Authorization headers, so a read costs a dict lookup
    instead of scrypt.

    Keyed by sha256 of a per-process random salt and the header, so neither credentials nor a
    reusable digest of them is kept. An entry lives at most `ttl` seconds and is dropped as soon
    as the user store's revision moves (a removed user or a revoked token, in any process: the
    next request checks again). Only successes are kept; a header being verified is verified
    once, however many requests carry it meanwhile.
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
