"""Claiming a cluster download (stores.clusterflight) in one thread hop and one round trip on a
lock connection, since it stands between a cold request and upstream.

The one statement is `cache_claim` (stores.pg.blobindex's migration 34): it reads the index
and, only where the key is not committed (with the sha256 asked for), tries the key's advisory
lock; a holder looks at the index again (a function's statements each read a fresh snapshot),
so a commit made between the first look and the lock (the last leader recorded the object,
then let go) is read from the bucket and the lock let go at once, and otherwise names this node
the leader in `cache_inflight`. One that does not get the lock reads who leads.

The connection is the lock's (autocommit, held by AdvisoryLocks), so the statement waits for
no pool, checks no connection and pays no BEGIN and COMMIT; before, the same claim took the
pool four times, some 13 round trips in four thread hops, then two statements. Blocking: call
from a thread. Errors reaching the server are DatabaseUnavailable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyproxy.stores.pg.locks import AdvisoryLocks, HeldLock

__all__ = ["Claim", "claim_download", "download_lock", "warm_claims"]

log = logging.getLogger("pyproxy.clusterblobs")

_CLAIM = "SELECT * FROM cache_claim(%(key)s, %(sha256)s, %(lock)s, %(node)s)"


@dataclass(frozen=True, slots=True)
class Claim:
    """One of: the key is committed (`committed`: its sha256 and size), this node leads its
    download (`lock`, held until the publisher lets go), or neither (`leader`: the node that
    downloads it, if one is named)."""

    committed: tuple[str, int] | None = None
    lock: HeldLock | None = None
    leader: str | None = None


def download_lock(key: str) -> str:
    """The advisory lock of `key`'s download: its leader holds it from its claim until the
    object and the row are committed."""
    return "blob:" + key


def claim_download(locks: AdvisoryLocks, key: str, sha256: str | None, node_url: str) -> Claim:
    name = download_lock(key)
    params = {"key": key, "sha256": sha256, "lock": name, "node": node_url}
    lock, (held, size, leader, other) = locks.try_lock_with(name, _CLAIM, params)
    if other is not None:
        log.warning("the index has %r with another sha256 (%s): not using it", key, other)
    if lock is not None:
        return Claim(lock=lock)
    if held is not None:
        return Claim(committed=_committed(held, size))
    return Claim(leader=None if leader is None else str(leader))


def warm_claims(locks: AdvisoryLocks) -> None:
    """At start-up: two idle lock connections, each having run a claim once (of the key "",
    no file's; rolled back, so it writes nothing). A node's first cold file paid 8-12 ms for
    its claim, later ones about 1: a connect to refill the idle connections beside it, and the
    server session's first claim (the function compiled, its statements planned)."""
    locks.warm("blob:", _CLAIM, {"key": "", "sha256": None, "lock": "blob:", "node": ""},
               connections=2)


def _committed(sha256: object, size: object) -> tuple[str, int]:
    assert isinstance(sha256, str) and isinstance(size, int)
    return sha256, size
