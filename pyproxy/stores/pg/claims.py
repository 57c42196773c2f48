"""Claiming a cluster download (stores.clusterflight) in one thread hop and at most two round
trips on a lock connection, since it stands between a cold request and upstream.

The first statement reads the index and the in-flight row and, only where the key is not
committed (with the sha256 asked for), tries the key's advisory lock. A commit between that
statement's snapshot and its lock (the last leader recorded the object, then let go) is caught
by the second one, run only by the new holder: a fresh snapshot of the index that names this
node the leader unless the key is committed after all (then the lock is let go at once).

The connection is the lock's (autocommit, held by AdvisoryLocks), so neither statement waits
for the pool, checks a connection or pays a BEGIN and COMMIT; before, the same claim took the
pool four times, some 13 round trips in four thread hops. Blocking: call from a thread.
Errors reaching the server are DatabaseUnavailable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from pyproxy.stores.pg.connect import DatabaseUnavailable, describe
from pyproxy.stores.pg.locks import AdvisoryLocks, HeldLock

__all__ = ["Claim", "claim_download", "warm_claims"]

log = logging.getLogger("pyproxy.clusterblobs")

_LOOK = """
    SELECT CASE WHEN b.key IS NULL OR (%(sha256)s::text IS NOT NULL AND b.sha256 <> %(sha256)s)
                THEN pg_try_advisory_lock(hashtextextended(%(lock)s, 0)) END,
           b.sha256, b.size, i.node_url
    FROM (VALUES (1)) AS one (x)
    LEFT JOIN cache_blobs AS b ON b.key = %(key)s
    LEFT JOIN cache_inflight AS i ON i.key = %(key)s
"""
_LEAD = """
    WITH held AS (
        SELECT sha256, size FROM cache_blobs
        WHERE key = %(key)s AND (%(sha256)s::text IS NULL OR sha256 = %(sha256)s)
    ), lead AS (
        INSERT INTO cache_inflight (key, node_url) SELECT %(key)s, %(node)s
        WHERE NOT EXISTS (SELECT FROM held)
        ON CONFLICT (key) DO UPDATE SET node_url = excluded.node_url, started = now()
    )
    SELECT sha256, size FROM held
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """One of: the key is committed (`committed`: its sha256 and size), this node leads its
    download (`lock`, held until the publisher lets go), or neither (`leader`: the node that
    downloads it, if one is named)."""

    committed: tuple[str, int] | None = None
    lock: HeldLock | None = None
    leader: str | None = None


def claim_download(locks: AdvisoryLocks, key: str, sha256: str | None, node_url: str) -> Claim:
    name = "blob:" + key
    params = {"key": key, "sha256": sha256, "lock": name, "node": node_url}
    lock, (held, size, leader) = locks.try_lock_with(name, _LOOK, params)
    if held is not None and sha256 is not None and held != sha256:
        log.warning("the index has %r with another sha256 (%s): not using it", key, held)
    elif lock is None and held is not None:
        return Claim(committed=_committed(held, size))
    if lock is None:
        return Claim(leader=None if leader is None else str(leader))
    try:
        row = lock.conn.execute(_LEAD, params).fetchone()
    except psycopg.Error as exc:
        lock.conn.close()  # the server lets go of the lock with the session
        raise DatabaseUnavailable(
            f"the cluster database cannot record a download: {describe(exc)}"
        ) from None
    if row is None:
        return Claim(lock=lock)
    locks.release(lock)  # committed meanwhile: from the bucket
    return Claim(committed=_committed(*row))


def warm_claims(locks: AdvisoryLocks) -> None:
    """At start-up: two idle lock connections, each having run the claim's first statement
    once (the key "" is no file's). A node's first cold file paid 8-12 ms for its claim, later
    ones about 1: a connect to refill the idle connections beside it, and the server
    session's first look at the index's tables (their catalog entries, the plan)."""
    locks.warm("blob:", _LOOK, {"key": "", "sha256": None, "lock": "blob:"}, connections=2)


def _committed(sha256: object, size: object) -> tuple[str, int]:
    assert isinstance(sha256, str) and isinstance(size, int)
    return sha256, size
