"""Versioned migrations on a real PostgreSQL: applied once, in order, by one of several nodes
starting together; a database newer than the code is refused with one line."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from pyproxy.stores.pg import migrations
from pyproxy.stores.pg.connect import DatabaseUnavailable, connect, open_pool, redact_dsn


def test_migrations_apply_once_however_many_nodes_start_together(pg_dsn: str) -> None:
    def start() -> list[int]:
        with connect(pg_dsn) as conn:
            return migrations.migrate(conn)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: start(), range(6)))
    everything = sorted(m.version for m in migrations.MIGRATIONS)
    assert sorted(v for result in results for v in result) == everything  # each exactly once
    with connect(pg_dsn) as conn:
        assert migrations.migrate(conn) == []
        assert migrations.applied(conn) == set(everything)


def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    with connect(pg_dsn) as conn:
        migrations.migrate(conn)
        conn.execute("INSERT INTO schema_versions (version, name) VALUES (9999, 'future')")
        conn.commit()
        with pytest.raises(migrations.SchemaTooNew, match="9999"):
            migrations.migrate(conn)


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    dsn = "postgresql://pyproxy:s3cret@127.0.0.1:1/pyproxy"
    with pytest.raises(DatabaseUnavailable) as caught:
        open_pool(dsn)
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert "127.0.0.1:1" in message
    assert redact_dsn(dsn) == "postgresql://pyproxy:***@127.0.0.1:1/pyproxy"


def test_a_pool_reaches_the_database(pg_dsn: str) -> None:
    pool = open_pool(pg_dsn)
    try:
        with pool.connection() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pool.close()
    assert isinstance(psycopg.__version__, str)
