"""The test servers themselves: PostgreSQL and moto start, answer, stop and start again, and moto
refuses a second conditional create of one key (what the cluster's single flight relies on)."""

from __future__ import annotations

import asyncio

import obstore
import psycopg
import pytest
from obstore.store import S3Store

from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server


def test_postgres_answers_and_comes_back(postgres: PostgresServer, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_dsn, connect_timeout=2)
    postgres.start()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select 2").fetchone() == (2,)


async def test_moto_refuses_a_second_conditional_create(s3: S3Server, bucket: str) -> None:
    store = S3Store(bucket, endpoint=s3.endpoint, region="us-east-1",
                    client_options={"allow_http": True})
    await obstore.put_async(store, "k", b"one", mode="create")
    results = await asyncio.gather(
        *(obstore.put_async(store, "k", b"two", mode="create") for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, obstore.exceptions.AlreadyExistsError) for r in results)
    assert bytes(await (await obstore.get_async(store, "k")).bytes_async()) == b"one"
