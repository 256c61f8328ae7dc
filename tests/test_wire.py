"""The store's statements sent through libpq directly (postgres/wire.py) and its JSON
decoding (postgres/decoding.py), against the real server."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import time
import weakref
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from pgactors import Store
from pgactors.postgres import decoding
from pgactors.postgres.wire import WIRE


async def _until_running(dsn: str, schema: str, *, waiting: bool) -> None:
    """Until a statement on ``schema`` waits on a lock (``waiting``), or until none runs."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as probe:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            cur = await probe.execute(
                "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) "
                "FROM pg_stat_activity WHERE state = 'active' AND position(%s in query) > 0 "
                "AND pid <> pg_backend_pid()",
                [schema],
            )
            row = await cur.fetchone()
            assert row is not None
            if (row[0] > 0) if waiting else (row[1] == 0):
                return
            assert asyncio.get_running_loop().time() < deadline, f"waiting={waiting}: {row}"
            await asyncio.sleep(0.01)


async def test_a_cancelled_statement_is_cancelled_in_the_server_too(
    pg_dsn: str, schema_name: str
) -> None:
    """A caller cancelled while its statement waits on a lock (moving a fired reminder
    on): the statement is cancelled in the server too, so it does not go on once the
    lock is released, and the one pooled connection serves the next statements with
    their own results."""
    async with await Store.connect(pg_dsn, schema=schema_name, pool_max_size=1) as store:
        await store.init_schema()
        await store.save("P", "a", {"n": 1})
        await store.set_reminder("P", "a", "r", at=datetime.now(UTC))
        (reminder,) = await store.due_reminders(["P"])
        table = sql.Identifier(schema_name, "pgactors_reminders")
        async with await psycopg.AsyncConnection.connect(pg_dsn) as locker:
            await locker.execute(sql.SQL("SELECT 1 FROM {} FOR UPDATE").format(table))
            advance = asyncio.create_task(store.advance_reminder(reminder))
            await _until_running(pg_dsn, schema_name, waiting=True)
            advance.cancel()
            with pytest.raises(asyncio.CancelledError):
                await advance
            await locker.rollback()
        # Had the statement gone on in the server, it would have deleted the reminder.
        await _until_running(pg_dsn, schema_name, waiting=False)
        assert [r.name for r in await store.reminders("P", "a")] == ["r"]
        record = await store.load("P", "a")
        assert record is not None and record.data == {"n": 1}
        assert await store.load("P", "missing") is None
        assert (await store.reminder_stats()).total == 1


TRICKY = (
    '{"big": 1180591620717411303424, "neg": -9223372036854775809, "tiny": 1e-300, '
    '"max": 1.7976931348623157e308, "tenth": 0.1, "whole": 2.0, "exp": 1E2, '
    '"text": "\\u00e9\\ud83d\\ude00 \\" \\\\ \\n \\u0001", "raw": "é😀", '
    '"deep": [[[{"k": [true, false, null]}]]], "dup": 1, "dup": 2, "huge": 1e400}'
)


async def test_json_columns_decode_as_json_loads_does(pg_store: Store, pg_dsn: str) -> None:
    """A record written by SQL with numbers and strings at the edges loads as the same
    values, of the same types, as ``json.loads`` makes of PostgreSQL's text of it."""
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        insert = "INSERT INTO {} (type, id, version, data) VALUES ('J', 'x', 1, %s::jsonb)"
        await conn.execute(sql.SQL(insert).format(table), [TRICKY])
        cur = await conn.execute(
            sql.SQL("SELECT data::text FROM {} WHERE type = 'J'").format(table)
        )
        row = await cur.fetchone()
    assert row is not None
    expected = json.loads(row[0])
    record = await pg_store.load("J", "x")
    assert record is not None
    assert record.data == expected
    assert {k: type(v) for k, v in record.data.items()} == {k: type(v) for k, v in expected.items()}
    assert isinstance(record.data["big"], int) and record.data["huge"] == 10**400
    many = await pg_store.load_many("J", ["x"])
    assert many["x"].data == expected


@pytest.mark.parametrize(
    "text", [b"1e400", b"-1e400", b'"\\ud800"', b'{"a": [1, 2.5, "x"]}', '{"s": "é"}']
)
def test_decoding_gives_what_json_loads_gives(text: bytes | str) -> None:
    """What msgspec refuses (numbers beyond a double, a lone surrogate) goes to
    ``json.loads``; the rest decodes the same."""
    got, expected = decoding.loads(text), json.loads(text)
    assert repr(got) == repr(expected)
    if isinstance(expected, float):
        assert math.isinf(got)


async def test_the_wire_keeps_no_connection_alive(pg_dsn: str) -> None:
    """What the wire remembers per connection (its prepared statements) goes with the
    connection: one the pool closed and dropped is freed."""
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    rows = await WIRE.fetch(conn, b"SELECT $1::int + 1", [41], prepare=True)
    assert rows == [(42,)]
    assert await WIRE.fetch(conn, b"SELECT $1::int + 1", [1], prepare=True) == [(2,)]
    gone = weakref.ref(conn)
    await conn.close()
    del conn
    gc.collect()
    assert gone() is None


async def test_a_prepare_cancelled_midway_leaves_no_name_to_collide_with(pg_dsn: str) -> None:
    """A caller cancelled while its statement was being prepared: the server may hold
    the prepared statement, unnoted; the next run on that connection prepares under
    another name and succeeds."""
    query = b"SELECT $1::int * 2"
    deadline = time.monotonic() + 30
    while True:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            first = asyncio.create_task(WIRE.fetch(conn, query, [1], prepare=True))
            await asyncio.sleep(0)  # the prepare is sent, and its answer awaited
            assert not first.done()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            # The cancel reached the server after it had prepared (else try again):
            # prepared in the server, never noted here.
            if await cur.fetchone() == (1,):
                assert await WIRE.fetch(conn, query, [21], prepare=True) == [(42,)]
                return
        assert time.monotonic() < deadline, "the cancel always came before the prepare"


async def test_a_rollback_keeps_the_statements_the_wire_prepared(
    pg_dsn: str, schema_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On one pooled connection: a statement sent through psycopg often enough to be
    prepared by psycopg (save_many), then a transaction rolled back. Were psycopg to
    prepare, its rollback would DEALLOCATE ALL, the wire's statements with them, and
    the next save would fail (or the store would take the server for a pooler)."""
    async with await Store.connect(pg_dsn, schema=schema_name, pool_max_size=1) as store:
        await store.init_schema()
        await store.save("P", "a", {"n": 0})
        for n in range(8):
            await store.save_many("P", {"b": {"n": n}, "c": {"n": n}})
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.save("P", "a", {"n": -1})
                raise RuntimeError("roll back")
        assert (await store.save("P", "a", {"n": 1})).version == 2
        async with store.transaction() as tx:
            await tx.save("P", "a", {"n": 2})
        loaded = await store.load("P", "a")
        assert loaded is not None and loaded.data == {"n": 2}
    assert "transaction pooler" not in caplog.text


async def test_batch_statements_are_prepared_by_the_wire_only(
    pg_dsn: str, schema_name: str
) -> None:
    """save_many, delete_many and the purges run as the wire's prepared statements, so
    repeating them is not planned afresh each time; psycopg prepares nothing itself."""
    async with await Store.connect(pg_dsn, schema=schema_name, pool_max_size=1) as store:
        await store.init_schema()
        for n in range(6):
            await store.save_many("P", {"a": {"n": n}, "b": {"n": n}})
            assert await store.delete_many("P", ["b", "absent"]) == 1
            await store.purge_expired()
        async with store._backend.connections.pool.connection() as conn:
            cur = await conn.execute("SELECT name, statement FROM pg_prepared_statements")
            prepared = await cur.fetchall()
    names = [name for name, _ in prepared]
    assert all(name.startswith("pgactors_") for name in names), names
    table = f'"{schema_name}"."pgactors_state"'
    assert sum(f"INSERT INTO {table}" in text for _, text in prepared) == 1  # save_many
    assert sum(f"DELETE FROM {table}" in text for _, text in prepared) == 2  # delete, purge
