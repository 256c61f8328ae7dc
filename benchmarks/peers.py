"""Hand-written psycopg peer ("the seeds' approach"): a plain pool, one statement per call.

No validation, no error translation, no record objects: each call borrows a connection
from an ``AsyncConnectionPool``, runs pgactors' own SQL text with psycopg parameters
(``Jsonb`` for the document) and returns the row. This is the floor a thin Python layer
over psycopg can reach on the same event loop.

The SQL text is composed by the parent process (:mod:`benchmarks.statements`) and handed
over, so a process measuring this peer never imports pgactors.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from benchmarks.harness import RECORD_TYPE, Op, Params, bump

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


@dataclass(frozen=True)
class Peer:
    """The pool and the statements (``save_lww``, ``load``, ``save_cas``) by name."""

    pool: Pool
    statements: Mapping[str, str]

    def sql(self, name: str) -> bytes:
        return self.statements[name].encode()


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


NO_TTL: dict[str, Any] = {"ttl": None, "sliding": False}
"""The single-record statements' expiry parameters, for a save without ``ttl``."""


def upsert(peer: Peer, p: Params) -> Op:
    """One ``INSERT ... ON CONFLICT DO UPDATE`` (pgactors' ``save_lww``) on a random key."""
    statement = peer.sql("save_lww")
    pool = peer.pool

    async def op(rng: random.Random) -> int:
        params = {"type": RECORD_TYPE, "id": p.key(rng), "data": Jsonb(p.payload), **NO_TTL}
        async with pool.connection() as conn:
            cur = await conn.execute(statement, params)
            await cur.fetchone()
        return 0

    return op


def select(peer: Peer, p: Params) -> Op:
    """One ``SELECT data, version, created_at, updated_at`` (pgactors' ``load``)."""
    statement = peer.sql("load")
    pool = peer.pool

    async def op(rng: random.Random) -> int:
        params = {"type": RECORD_TYPE, "id": p.key(rng)}
        async with pool.connection() as conn:
            cur = await conn.execute(statement, params)
            if await cur.fetchone() is None:
                raise RuntimeError(f"key {params['id']!r} was not preloaded")
        return 0

    return op


def cas(peer: Peer, p: Params) -> Op:
    """The ``load`` SELECT, then ``save_cas`` of ``counter + 1``; retried on 0 rows."""
    load_statement = peer.sql("load")
    cas_statement = peer.sql("save_cas")
    pool = peer.pool

    async def op(rng: random.Random) -> int:
        key = p.key(rng)
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
                "data": Jsonb(bump(row[0])),
                "expected": row[1],
                **NO_TTL,
            }
            async with pool.connection() as conn:
                cur = await conn.execute(cas_statement, params)
                written = await cur.fetchone()
            if written is not None:
                return conflicts
            conflicts += 1

    return op


FACTORIES: dict[str, Callable[[Peer, Params], Op]] = {
    "upsert": upsert,
    "select": select,
    "cas": cas,
}

STATEMENTS = ("save_lww", "load", "save_cas")
"""The pgactors queries this peer runs; the parent composes them for the schema."""
