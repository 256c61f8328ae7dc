"""Batched statements read the state table by primary key, never by a full scan.

The items of a batch travel as JSON arrays whose length the planner cannot see; left
to itself it plans for 100 items and, on a table of a few thousand rows, joins them
by scanning the whole table (a CAS batch of 16 actors then cost a full scan per
round trip). These tests EXPLAIN every batched statement, with the values bound (a
custom plan) and without (the generic plan a prepared statement may switch to).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import Store
from pgactors.backend import CallRequest
from pgactors.postgres.connection import key_params, numbered
from pgactors.postgres.ops import (
    SaveRequest,
    advance_params,
    call_params,
    firing_params,
    save_params,
)
from pgactors.record import Encoded
from pgactors.reminders import Reminder

ROWS = 3000
BATCH = 16
TYPE = "Plan"


def _ids(batch: int, rows: int) -> list[str]:
    return [f"k{n:05d}" for n in range(0, rows, rows // batch)][:batch]


def _params(batch: int = BATCH, rows: int = ROWS) -> dict[str, dict[str, Any]]:
    ids = _ids(batch, rows)
    keys = [(TYPE, i) for i in ids]
    one_type = {"type": TYPE, "ids": json.dumps(ids)}
    cas = [SaveRequest(TYPE, i, '{"n": 1}', 1) for i in ids]
    calls = [CallRequest(TYPE, i, Encoded('{"n": 1}'), 1, f"call-{i}", "null") for i in ids]
    due = datetime(2026, 1, 1, tzinfo=UTC)
    reminders = [Reminder(TYPE, i, "tick", due, None) for i in ids]
    firings = [replace(c, advance=r) for c, r in zip(calls, reminders, strict=True)]
    return {
        "save_call_batch": call_params(calls),
        "fire_reminders_batch": firing_params(firings),
        "advance_reminders": advance_params(reminders),
        "lease_reminders": {"types": json.dumps([TYPE]), "limit": batch, "seconds": 10.0},
        "next_reminder": {"types": json.dumps([TYPE, "Other"])},
        "applied_calls": {**key_params(keys), "call_ids": json.dumps([c.call_id for c in calls])},
        "load_batch": key_params(keys),
        "versions_batch": key_params(keys),
        "save_cas_batch": save_params(cas),
        "load_many": one_type,
        "current_versions": one_type,
        "delete_many": one_type,
        "save_many": {
            **one_type,
            "datas": json.dumps([{"n": 1}] * batch),
            "expected": json.dumps([None] * batch),
            "ttl": None,
            "sliding": False,
        },
    }


def _scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _state_scans(
    conn: psycopg.Connection[Any],
    query: bytes,
    params: Any,
    options: bytes = b"",
    table: str = "pgactors_state",
) -> set[str]:
    with conn.transaction(force_rollback=True):
        row = conn.execute(b"EXPLAIN (FORMAT JSON%s) %s" % (options, query), params).fetchone()
    assert row is not None
    return {node for node, rel in _scans(row[0][0]["Plan"]) if rel.startswith(table)}


def _insert_states(conn: psycopg.Connection[Any], schema: str, rows: int) -> None:
    """State records ``k00000`` up to ``rows`` (version 1), those missing."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (type, id, version, data) "
            "SELECT %s, 'k' || lpad(g::text, 5, '0'), 1, jsonb_build_object('n', g) "
            "FROM generate_series(0, %s::int) g ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema, "pgactors_state")),
        [TYPE, rows - 1],
    )


@pytest.fixture(params=[None, 4], ids=["plain", "partitioned"])
async def loaded(
    request: pytest.FixtureRequest, pg_dsn: str, schema_name: str
) -> AsyncIterator[tuple[Any, psycopg.Connection[Any]]]:
    """The store's statements, and a connection to a state table of ``ROWS`` records."""
    conn = psycopg.connect(pg_dsn, autocommit=True)
    store = await Store.connect(pg_dsn, schema=schema_name)
    await store.init_schema(partitions=request.param)
    _insert_states(conn, schema_name, ROWS)
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema_name, "pgactors_state")))
    calls = sql.Identifier(schema_name, "pgactors_calls")
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (type, id, call_id, result) "
            "SELECT %s, 'k' || lpad(g::text, 5, '0'), 'old-' || g, 'null' "
            "FROM generate_series(0, %s) g"
        ).format(calls),
        [TYPE, ROWS - 1],
    )
    conn.execute(sql.SQL("ANALYZE {}").format(calls))
    reminders = sql.Identifier(schema_name, "pgactors_reminders")
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (type, id, name, due_at) "
            "SELECT %s, 'k' || lpad(g::text, 5, '0'), n, now() + g * interval '1 second' "
            "FROM generate_series(0, %s) g, unnest(ARRAY['tick', 'tock']) n"
        ).format(reminders),
        [TYPE, ROWS - 1],
    )
    conn.execute(sql.SQL("ANALYZE {}").format(reminders))
    try:
        yield store._backend.connections.statements, conn
    finally:
        await store.close()
        conn.close()


@pytest.mark.parametrize("name", sorted(set(_params()) - {"lease_reminders"}))
async def test_batched_statement_reads_state_by_key(
    loaded: tuple[Any, psycopg.Connection[Any]], name: str
) -> None:
    queries, conn = loaded
    query: bytes = getattr(queries, name)
    tables = {
        "applied_calls": ["pgactors_calls"],
        "save_call_batch": ["pgactors_state", "pgactors_calls"],
        "fire_reminders_batch": ["pgactors_state", "pgactors_calls", "pgactors_reminders"],
        "advance_reminders": ["pgactors_reminders"],
        "lease_reminders": ["pgactors_reminders"],
        "next_reminder": ["pgactors_reminders"],
    }.get(name, ["pgactors_state"])
    for table in tables:
        custom = _state_scans(conn, query, _params()[name], table=table)
        generic = _state_scans(conn, numbered(query)[0], None, b", GENERIC_PLAN", table)
        for plan in (custom, generic):
            assert "Seq Scan" not in plan, f"{name} on {table}: {plan}"
            index_scans = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}
            assert plan & index_scans, f"{name} on {table}: {plan}"


def test_import_conflict_check_probes_keys_instead_of_reading_the_index(
    loaded: tuple[Any, psycopg.Connection[Any]],
) -> None:
    queries, conn = loaded
    with conn.transaction(force_rollback=True):
        conn.execute(queries.import_stage)
        conn.execute(
            "INSERT INTO pgactors_import (type, id) SELECT %s, 'new' || g "
            "FROM generate_series(1, %s) g",
            [TYPE, BATCH],
        )
        row = conn.execute(b"EXPLAIN (FORMAT JSON) " + queries.import_conflicts).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    state = {node for node, rel in _scans(plan) if rel.startswith("pgactors_state")}
    assert state and state <= {"Index Scan", "Index Only Scan"}, state
    assert "Merge Join" not in json.dumps(plan) and "Hash Join" not in json.dumps(plan)


# A prepared statement keeps the plan it got when first run; one made while the table
# was small must stay linear in its batch once the table has grown, not scan the batch
# (or the table) once per row. The batch is large enough for that to show.
LINEAR_BATCH = 128
SMALL, GROWN = 200, 1000


def _fill(conn: psycopg.Connection[Any], schema: str, rows: int, others: bool) -> None:
    """State records ``k00000`` up to ``rows`` (version 1); with ``others``, each with
    two due reminders, and the odd ones with their ``call-<id>`` recorded."""
    _insert_states(conn, schema, rows)
    if not others:
        return
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (type, id, name, due_at) "
            "SELECT %s, 'k' || lpad(g::text, 5, '0'), n, '2026-01-01' "
            "FROM generate_series(0, %s::int) g, unnest(ARRAY['tick', 'tock']) n "
            "ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema, "pgactors_reminders")),
        [TYPE, rows - 1],
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (type, id, call_id, result) "
            "SELECT %s, 'k' || lpad(g::text, 5, '0'), 'call-k' || lpad(g::text, 5, '0'), 'null' "
            "FROM generate_series(1, %s::int, 2) g ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema, "pgactors_calls")),
        [TYPE, rows - 1],
    )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture
async def small_table(
    pg_dsn: str, schema_name: str
) -> AsyncIterator[tuple[Any, psycopg.Connection[Any]]]:
    """The store's statements, and a connection to a state table of ``SMALL`` records
    and nothing else (never analyzed, as in a store that has just started)."""
    conn = psycopg.connect(pg_dsn, autocommit=True)
    store = await Store.connect(pg_dsn, schema=schema_name)
    await store.init_schema()
    _fill(conn, schema_name, SMALL, others=False)
    try:
        yield store._backend.connections.statements, conn
    finally:
        await store.close()
        conn.close()


# The lease is a function (planned at each call): see the test after this one.
@pytest.mark.parametrize("name", sorted(set(_params()) - {"lease_reminders"}))
async def test_batch_planned_on_a_small_table_stays_linear(
    small_table: tuple[Any, psycopg.Connection[Any]], schema_name: str, name: str
) -> None:
    queries, conn = small_table
    query, order = numbered(getattr(queries, name))
    params = _params(LINEAR_BATCH, GROWN)[name]
    execute = sql.SQL("EXECUTE batch ({})").format(
        sql.SQL(", ").join(sql.Literal(params[key]) for key in order)
    )
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(b"PREPARE batch AS " + query)
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("EXPLAIN ") + execute)  # the plan is made now, on SMALL rows
    _fill(conn, schema_name, GROWN, others=True)
    with conn.transaction(force_rollback=True):
        row = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + execute).fetchone()
    assert row is not None
    nodes = list(_nodes(row[0][0]["Plan"]))
    touched = max(n["Actual Rows"] > 0 for n in nodes if n.get("Relation Name"))
    assert touched, "the batch's records were not found: the test proves nothing"
    # Rows each node produced or filtered out, over all its loops.
    work = {
        f"{n['Node Type']} {n.get('Relation Name', '')}".strip(): (
            n["Actual Rows"]
            + n.get("Rows Removed by Filter", 0)
            + n.get("Rows Removed by Join Filter", 0)
        )
        * n["Actual Loops"]
        for n in nodes
    }
    worst = max(work, key=lambda k: work[k])
    assert work[worst] <= 4 * LINEAR_BATCH, f"{name}: {worst} did {work[worst]:.0f} rows of work"


async def test_lease_reads_due_reminders_in_index_order_on_a_table_never_analyzed(
    pg_dsn: str, schema_name: str
) -> None:
    """A backlog of due reminders, no statistics: the lease function's statement (seen
    through auto_explain) reads them from the index in due order, about as many as it
    takes, with no sort of the whole backlog."""
    store = await Store.connect(pg_dsn, schema=schema_name)
    await store.init_schema()
    backlog, taken = 4000, 256
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        _fill(conn, schema_name, backlog // 2, others=True)
        plans: list[dict[str, Any]] = []
        conn.add_notice_handler(
            lambda d: (
                plans.append(json.loads(d.message_primary.split("\n", 1)[1]))
                if d.message_primary and d.message_primary.startswith("duration:")
                else None
            )
        )
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_format = json",
            "SET auto_explain.log_level = notice",
        ):
            conn.execute(setting)
        with conn.transaction(force_rollback=True):
            rows = conn.execute(
                store._backend.connections.statements.lease_reminders,
                {"types": json.dumps([TYPE]), "limit": taken, "seconds": 10.0},
            ).fetchall()
    await store.close()
    assert len(rows) == taken
    inner = [p["Plan"] for p in plans if "pgactors_reminders" in json.dumps(p["Plan"])]
    assert inner, plans
    nodes = [n for plan in inner for n in _nodes(plan)]
    read = [
        n
        for n in nodes
        if n.get("Relation Name") == "pgactors_reminders"
        and n["Node Type"].endswith("Scan")
        and n["Node Type"] != "Tid Scan"
    ]
    assert read and all(n["Node Type"] == "Index Scan" for n in read), read
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in read) <= 2 * taken
