"""The lean write path: saves are HOT updates unless an index was asked for."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import Store
from pgactors.postgres.ops import SaveRequest, save_params

RECORDS = 200
ROUNDS = 10
CALLERS = 16  # as in the write benchmarks
DEADLINE = 30.0


def _payload(i: int, round: int) -> dict[str, object]:
    """About 330 bytes of JSON, as in the write benchmarks."""
    return {
        "name": f"player-{i}",
        "level": round,
        "score": i * 7 + round,
        "tags": ["a", "b", "c"],
        "bio": "x" * 220,
    }


async def _update_counts(
    dsn: str, schema: str, at_least: int, table: str = "pgactors_state"
) -> tuple[int, int]:
    """``(n_tup_upd, n_tup_hot_upd)`` of ``table``, once ``at_least`` updates show
    (statistics reach pg_stat_user_tables when the writing sessions end)."""
    query = sql.SQL(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE schemaname = {} AND relname = {}"
    ).format(sql.Literal(schema), sql.Literal(table))
    deadline = time.monotonic() + DEADLINE
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(query)).fetchone()
            if row is not None and row[0] >= at_least:
                return int(row[0]), int(row[1])
            assert time.monotonic() < deadline, f"statistics show {row} updates"
            await asyncio.sleep(0.1)


async def _save_rounds(dsn: str, schema: str, rounds: range) -> None:
    """Each round saves every record once, from ``CALLERS`` concurrent callers."""
    async with await Store.connect(dsn, schema=schema) as store:
        slots = asyncio.Semaphore(CALLERS)

        async def save(i: int, round: int) -> None:
            async with slots:
                await store.save("Player", f"p{i}", _payload(i, round))

        for round in rounds:
            await asyncio.gather(*(save(i, round) for i in range(RECORDS)))


async def test_saves_over_existing_records_are_hot_updates(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema()
    await _save_rounds(pg_dsn, schema_name, range(ROUNDS + 1))  # the first round inserts
    updates, hot = await _update_counts(pg_dsn, schema_name, RECORDS * ROUNDS)
    assert updates == RECORDS * ROUNDS
    assert hot >= 0.9 * updates, f"{hot} of {updates} updates were HOT"

    # An index on all of the type's data, asked for: its saves can no longer be HOT.
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.create_index("Player", "*")
    await _save_rounds(pg_dsn, schema_name, range(ROUNDS + 1, 2 * ROUNDS + 1))
    updates_after, hot_after = await _update_counts(pg_dsn, schema_name, 2 * RECORDS * ROUNDS)
    assert hot_after - hot < 0.1 * (updates_after - updates)


async def test_upgrade_drops_the_indexes_every_save_rewrote(
    pg_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgactors import schema as schema_module

    before = tuple(m for m in schema_module.migrations() if m.version < 7)
    monkeypatch.setattr(schema_module, "migrations", lambda: before)
    async with await Store.connect(pg_dsn, schema=schema_name) as old:
        await old.init_schema()
        await old.save("Player", "p1", _payload(1, 0))
    assert await _state_indexes(pg_dsn, schema_name) == {
        "pgactors_state_pkey",
        "pgactors_state_expires_idx",
        "pgactors_state_type_updated_idx",
        "pgactors_state_data_idx",
    }
    monkeypatch.undo()
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        assert await store.init_schema() == len(schema_module.migrations()) - len(before)
        assert all(present for _, _, present in await store.verify_schema())
        loaded = await store.load("Player", "p1")
        assert loaded is not None and loaded.data == _payload(1, 0)
    assert await _state_indexes(pg_dsn, schema_name) == {
        "pgactors_state_pkey",
        "pgactors_state_expires_idx",
    }
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'pgactors_state'",
            [schema_name],
        )
        assert await cur.fetchone() == (["fillfactor=70"],)


async def _state_indexes(dsn: str, schema: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            [schema, "pgactors_state"],
        )
        return {row[0] for row in await cur.fetchall()}


async def test_reminder_leases_are_hot_updates(pg_dsn: str, schema_name: str) -> None:
    """A lease changes nothing indexed, and the reminders table leaves room on its pages
    for it: leasing a backlog of reminders adds no index entries."""
    due = 2000
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema()
        past = datetime.now(UTC) - timedelta(seconds=1)
        for start in range(0, due, 500):
            await asyncio.gather(
                *(
                    store.set_reminder("Job", f"j{i}", "tick", at=past)
                    for i in range(start, start + 500)
                )
            )
        leased = 0
        while leased < due:
            taken = await store.lease_reminders(["Job"], limit=256, seconds=60)
            assert taken, f"only {leased} of {due} reminders could be leased"
            leased += len(taken)
    updates, hot = await _update_counts(pg_dsn, schema_name, due, table="pgactors_reminders")
    assert hot >= 0.9 * updates, f"{hot} of {updates} leases were HOT"


async def test_one_caller_through_a_large_pool_uses_one_connection(
    pg_dsn: str, schema_name: str
) -> None:
    """The pool hands out its most recently used connection: one caller's saves run on
    one warm server process, not on each of the pool's 8 in turn. (The change feed's
    numbering pass, running while a save holds that one, takes a second.)"""
    name = f"lifo_{schema_name}"
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, application_name=name)
    count = (
        "SELECT count(*), count(*) FILTER (WHERE state_change > %s) "
        "FROM pg_stat_activity WHERE application_name = %s"
    )
    async with (
        await Store.connect(dsn, schema=schema_name, pool_min_size=8, pool_max_size=8) as store,
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as probe,
    ):
        await store.init_schema()
        started = await (await probe.execute("SELECT clock_timestamp()")).fetchone()
        assert started is not None
        for i in range(40):
            await store.save("Player", f"p{i % 5}", _payload(i, 0))
        used = await (await probe.execute(count, [started[0], name])).fetchone()
        assert used is not None and used[0] == 8, f"{used[0]} connections open"
        assert used[1] <= 2, f"{used[1]} connections ran the saves"


# A batch in which no save has a ttl runs the statement that computes no expiry; it must
# leave every row as the statement with the ttl parameters would, from any prior state.
PRIOR: dict[str, dict[str, Any] | None] = {
    "absent": None,
    "no expiry": {},
    "fixed expiry": {"ttl": 600},
    "sliding expiry": {"ttl": 600, "sliding": True},
    "expired": {"ttl": 600, "sliding": True},
}


def _outcome(conn: psycopg.Connection[Any], query: bytes, params: dict[str, str]) -> Any:
    """What ``query`` returns and leaves in the rows, times relative to the save's own
    (new record?, time to expiry); rolled back."""
    with conn.transaction(force_rollback=True):
        returned = conn.execute(query, params).fetchall()
        rows = conn.execute(
            "SELECT id, version, created_at = now(), expires_at - updated_at, ttl_seconds "
            "FROM pgactors_state WHERE type = 'P' ORDER BY id"
        ).fetchall()
    saved = sorted(
        (id, v, created == updated, expires and expires - updated)
        for _, id, v, created, updated, expires in returned
    )
    return saved, rows


async def test_a_batch_without_ttl_writes_what_the_ttl_statement_would(pg_store: Store) -> None:
    ids = {name: f"r{n}" for n, name in enumerate(PRIOR)}
    for name, prior in PRIOR.items():
        if prior is not None:
            await pg_store.save("P", ids[name], {"old": True}, **prior)
    batch = [SaveRequest("P", id, '{"new": true}', None) for id in ids.values()]
    params = save_params(batch)
    assert json.loads(params["ttls"]) == [None] * len(batch)
    statements = pg_store._backend.connections.statements  # type: ignore[attr-defined]
    assert pg_store.config.dsn is not None
    with psycopg.connect(pg_store.config.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(pg_store.config.schema)))
        conn.execute(
            "UPDATE pgactors_state SET expires_at = now() - interval '1 second' WHERE id = %s",
            [ids["expired"]],
        )
        full = _outcome(conn, statements.save_lww_batch, params)
        plain = _outcome(conn, statements.save_lww_batch_plain, params)
    assert plain == full
    # And what that is: the prior states do tell the statement's branches apart.
    ten = timedelta(minutes=10)
    after = {  # (version, new record, time to expiry, sliding ttl)
        "absent": (1, True, None, None),
        "no expiry": (2, False, None, None),
        "fixed expiry": (2, False, None, None),
        "sliding expiry": (2, False, ten, 600),
        "expired": (1, True, None, None),
    }
    assert {id: tuple(rest) for id, *rest in full[1]} == {ids[n]: after[n] for n in PRIOR}
