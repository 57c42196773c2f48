"""Claiming a cluster download (pyproxy/stores/pg/claims.py) on a real PostgreSQL: a committed
key is read, a free one is led (named in cache_inflight, its lock held), a locked one names its
leader, and an index row with another sha256 is not used."""

from __future__ import annotations

import logging

import psycopg
import pytest

from pyproxy.stores.pg.claims import claim_download, warm_claims
from pyproxy.stores.pg.locks import AdvisoryLocks
from pyproxy.stores.pg.migrations import migrate

SHA = "ab" * 32
NODE_A, NODE_B = "http://127.0.0.1:1", "http://127.0.0.1:2"


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn) as conn:
        migrate(conn)
    return pg_dsn


def _commit(dsn: str, key: str, sha256: str = SHA, size: int = 7) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO cache_blobs (key, sha256, size, last_used) VALUES (%s, %s, %s, 0)",
                     (key, sha256, size))


def _inflight(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT key, node_url FROM cache_inflight ORDER BY key").fetchall()


def test_a_free_key_is_led_and_the_others_follow_its_leader(dsn: str) -> None:
    a, b = AdvisoryLocks(dsn), AdvisoryLocks(dsn)
    try:
        led = claim_download(a, SHA, SHA, NODE_A)
        assert led.lock is not None and led.committed is None
        assert _inflight(dsn) == [(SHA, NODE_A)]
        follower = claim_download(b, SHA, SHA, NODE_B)
        assert (follower.lock, follower.committed, follower.leader) == (None, None, NODE_A)
        assert b.try_lock("blob:" + SHA) is None  # the leader holds it
        a.release(led.lock)
        taken = claim_download(b, SHA, SHA, NODE_B)  # a leader gone: taken over
        assert taken.lock is not None
        assert _inflight(dsn) == [(SHA, NODE_B)]
        b.release(taken.lock)
    finally:
        a.close()
        b.close()


def test_a_committed_key_is_read_and_locks_nothing(dsn: str) -> None:
    _commit(dsn, SHA)
    locks, other = AdvisoryLocks(dsn), AdvisoryLocks(dsn)
    try:
        for sha256 in (SHA, None):  # a file listed without a sha256 takes the index's
            claim = claim_download(locks, SHA, sha256, NODE_A)
            assert (claim.committed, claim.lock) == ((SHA, 7), None)
        assert _inflight(dsn) == []
        held = other.try_lock("blob:" + SHA)
        assert held is not None, "the claim left the key locked"
        other.release(held)
    finally:
        locks.close()
        other.close()


def test_an_index_row_with_another_sha256_is_not_used(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    key = "k" * 64
    _commit(dsn, key, sha256="cd" * 32)
    locks = AdvisoryLocks(dsn)
    try:
        with caplog.at_level(logging.WARNING, logger="pyproxy.clusterblobs"):
            claim = claim_download(locks, key, SHA, NODE_A)
        assert claim.committed is None and claim.lock is not None
        assert "another sha256" in caplog.text
        locks.release(claim.lock)
    finally:
        locks.close()


def test_warming_leaves_two_idle_connections_no_lock_and_no_row(dsn: str) -> None:
    locks, other = AdvisoryLocks(dsn), AdvisoryLocks(dsn)
    try:
        warm_claims(locks)
        warm_claims(other)  # two nodes starting at once: each warms, neither keeps a lock
        assert len(locks._idle) == 2
        assert other.try_lock("blob:") is not None  # the warm-up's key, let go of
        assert _inflight(dsn) == []
        led = claim_download(locks, SHA, SHA, NODE_A)  # a warmed connection claims as before
        assert led.lock is not None and _inflight(dsn) == [(SHA, NODE_A)]
        locks.release(led.lock)
    finally:
        locks.close()
        other.close()
