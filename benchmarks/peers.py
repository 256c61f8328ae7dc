"""Hand-written psycopg peers ("the seeds' approach"): a plain pool, one statement per call.

No validation, no error translation, no record objects: each call borrows a connection
from an ``AsyncConnectionPool``, runs pgactors' own SQL text with psycopg parameters
(``Jsonb`` for the document) and returns the row. This is the floor a thin Python layer
over psycopg can reach on the same event loop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from benchmarks.harness import RECORD_TYPE, Op
from benchmarks.statements import query

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


async def open_pool(dsn: str, size: int) -> Pool:
    """An autocommit pool with ``size`` connections, all open before it returns."""
    pool: Pool = AsyncConnectionPool(
        dsn,
        kwargs={"autocommit": True},
        min_size=size,
        max_size=size,
        open=False,
        name="bench-psycopg-peer",
    )
    await pool.open(wait=True, timeout=60)
    return pool


def upsert(pool: Pool, schema_name: str, keys: Sequence[str], payload: dict[str, Any]) -> Op:
    """One ``INSERT ... ON CONFLICT DO UPDATE`` (pgactors' ``save_lww``) on a random key."""
    statement = query("save_lww", schema_name).encode()
    count = len(keys)

    async def op(rng: random.Random) -> int:
        params = {"type": RECORD_TYPE, "id": keys[rng.randrange(count)], "data": Jsonb(payload)}
        async with pool.connection() as conn:
            cur = await conn.execute(statement, params)
            await cur.fetchone()
        return 0

    return op


def select(pool: Pool, schema_name: str, keys: Sequence[str]) -> Op:
    """One ``SELECT data, version, created_at, updated_at`` (pgactors' ``load``)."""
    statement = query("load", schema_name).encode()
    count = len(keys)

    async def op(rng: random.Random) -> int:
        params = {"type": RECORD_TYPE, "id": keys[rng.randrange(count)]}
        async with pool.connection() as conn:
            cur = await conn.execute(statement, params)
            if await cur.fetchone() is None:
                raise RuntimeError(f"key {params['id']!r} was not preloaded")
        return 0

    return op


def cas(pool: Pool, schema_name: str, keys: Sequence[str], payload: dict[str, Any]) -> Op:
    """The ``load`` SELECT, then ``save_cas`` (``UPDATE ... AND version = %s``); retry on 0 rows."""
    load_statement = query("load", schema_name).encode()
    cas_statement = query("save_cas", schema_name).encode()
    count = len(keys)

    async def op(rng: random.Random) -> int:
        key = keys[rng.randrange(count)]
        conflicts = 0
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(load_statement, {"type": RECORD_TYPE, "id": key})
                row = await cur.fetchone()
            if row is None:
                raise RuntimeError(f"key {key!r} was not preloaded")
            params = {
                "type": RECORD_TYPE,
                "id": key,
                "data": Jsonb(payload),
                "expected": row[1],
            }
            async with pool.connection() as conn:
                cur = await conn.execute(cas_statement, params)
                written = await cur.fetchone()
            if written is not None:
                return conflicts
            conflicts += 1

    return op
