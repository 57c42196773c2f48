"""Versioned migrations on a real PostgreSQL: applied once, in order, by one of several nodes
starting together; a database newer than the code is refused with one line."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    everything = [m.version for m in migrations.registered()]
    assert sorted(v for result in results for v in result) == everything  # each exactly once
    with connect(pg_dsn) as conn:
        assert migrations.migrate(conn) == []
        assert migrations.applied(conn) == set(everything)


def test_every_store_s_migrations_are_known_before_any_is_applied(pg_dsn: str) -> None:
    pg = Path(migrations.__file__).parent
    registering = {path.stem for path in pg.glob("*.py")
                   if re.search(r"^register\(Migration\(", path.read_text(), re.MULTILINE)}
    assert registering == set(migrations.SCHEMA_MODULES)
    # a process that has imported no store (a private-only node opens no cache) migrates all
    versions = [m.version for m in migrations.registered()]
    assert versions == sorted(set(versions))
    script = ("import sys; from pyproxy.stores.pg import connect, migrations; "
              "print(migrations.migrate(connect.connect(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", script, pg_dsn],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(versions)


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


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://pyproxy@127.0.0.1:1/db?password=s3cret",
     "postgresql://pyproxy@127.0.0.1:1/db?password=***"),
    ("postgresql://u@h/db?sslmode=require&sslpassword=s3cret&PASSWORD=s3cret&x=1",
     "postgresql://u@h/db?sslmode=require&sslpassword=***&PASSWORD=***&x=1"),
    ("host=h password=s3cret dbname=db", "host=h password=*** dbname=db"),
    ("host=h password = 's3 \\' cret' dbname=db", "host=h password=*** dbname=db"),
])
def test_every_form_of_a_password_is_redacted(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_a_password_in_the_query_is_never_shown() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        open_pool("postgresql://pyproxy@127.0.0.1:1/pyproxy?password=s3cret")
    assert "s3cret" not in str(caught.value) and "password=***" in str(caught.value)


def test_a_pool_reaches_the_database(pg_dsn: str) -> None:
    pool = open_pool(pg_dsn)
    try:
        with pool.connection() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pool.close()
    assert isinstance(psycopg.__version__, str)
