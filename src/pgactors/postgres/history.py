"""The history role: the history table, its trigger, retention and statistics.

The row trigger that keeps replaced versions exists only while some type has history
enabled, and names those types in its WHEN clause: writes of any other type call no
function and queue no trigger event. Enabling or disabling re-creates it in one
transaction, which briefly locks the state table against writes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql

from .. import schema
from ..errors import PgActorsError
from ..history import HistoryInfo, HistoryPolicy, PastVersion
from .connection import Conn, Connections, Statements, json_list
from .records import PostgresRecords


def past_version(type: str, id: str, row: Sequence[Any]) -> PastVersion:
    """A ``PastVersion`` from the columns of ``history_versions``."""
    data, version, created_at, updated_at, payload, manifest, expires_at, at, deleted = row
    return PastVersion(
        type,
        id,
        None if payload is not None else data,
        version,
        created_at,
        updated_at,
        None if payload is None else bytes(payload),
        manifest if payload is not None else None,
        expires_at,
        replaced_at=at,
        deleted=deleted,
    )


def _iso(at: datetime) -> str:
    return at.isoformat()


def _row_json(past: PastVersion) -> dict[str, Any]:
    """A past version as ``history_import`` reads it (payload in base64)."""
    return {
        "type": past.type,
        "id": past.id,
        "version": past.version,
        "data": past.data,
        "payload": None if past.payload is None else base64.b64encode(past.payload).decode(),
        "manifest": past.manifest,
        "created_at": _iso(past.created_at),
        "updated_at": _iso(past.updated_at),
        "expires_at": None if past.expires_at is None else _iso(past.expires_at),
        "replaced_at": _iso(past.replaced_at),
        "deleted": past.deleted,
    }


class PostgresHistory:
    """Past versions in the history table; the purger of ``records`` enforces retention."""

    def __init__(self, db: Connections, records: PostgresRecords) -> None:
        self._db = db
        self._q = db.statements
        self._records = records

    async def enable(self, type: str, keep_versions: int | None, keep_days: float | None) -> None:
        params = {"type": type, "keep_versions": keep_versions, "keep_days": keep_days}
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute(self._q.history_lock)
            await conn.execute(self._q.history_enable, params)
            await retrigger(conn, self._q)
        self._records.purge_also(self.purge)

    async def purge_if_kept(self) -> None:
        """Run the background purger if some type's history has limits (at connect: so
        every process, not only the one that enabled it, enforces retention)."""
        try:
            kept = await self._db.read(self._q.history_limited, {})
        except PgActorsError:  # no schema yet, or one from before history
            return
        if kept:
            self._records.purge_also(self.purge)

    async def disable(self, type: str) -> bool:
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute(self._q.history_lock)
            cur = await conn.execute(self._q.history_disable, {"type": type})
            disabled = cur.rowcount > 0
            if disabled:
                await retrigger(conn, self._q)
        return disabled

    async def versions(
        self, type: str, id: str, limit: int, version: int | None = None
    ) -> list[PastVersion]:
        params = {"type": type, "id": id, "limit": limit, "version": version}
        rows = await self._db.read(self._q.history_versions, params)
        return [past_version(type, id, row) for row in rows]

    async def purge(self) -> int:
        async with self._db.connection() as conn:
            cur = await conn.execute(self._q.history_purge)
        return cur.rowcount

    async def info(self) -> list[HistoryInfo]:
        rows = await self._db.read(self._q.history_stats, {})
        return [
            HistoryInfo(type, enabled, versions, days, int(count), int(size))
            for type, enabled, versions, days, count, size in rows
        ]

    async def export(self, types: list[str] | None, chunk: int) -> AsyncIterator[list[PastVersion]]:
        params = {"types": None if types is None else json_list(types)}
        async with self._db.connection() as conn, conn.transaction():
            cur = conn.cursor("pgactors_history_export")
            await cur.execute(self._q.history_export, params)
            while rows := await cur.fetchmany(chunk):
                yield [past_version(row[0], row[1], _reordered(row)) for row in rows]


def _reordered(row: Sequence[Any]) -> tuple[Any, ...]:
    """``history_export``'s columns after type and id, in ``past_version``'s order."""
    _, _, version, data, payload, manifest, created, updated, expires, at, deleted = row
    return (data, version, created, updated, payload, manifest, expires, at, deleted)


async def restore_on(
    conn: Conn, q: Statements, policies: list[HistoryPolicy], rows: list[PastVersion]
) -> None:
    """Set the history settings and append past versions, in ``conn``'s transaction."""
    if policies:
        await conn.execute(q.history_lock)
        for p in policies:
            params = {"type": p.type, "keep_versions": p.keep_versions, "keep_days": p.keep_days}
            await conn.execute(q.history_enable, params)
            if not p.enabled:
                await conn.execute(q.history_disable, {"type": p.type})
        await retrigger(conn, q)
    if rows:
        await conn.execute(q.history_import, {"rows": json.dumps([_row_json(r) for r in rows])})


async def retrigger(conn: Conn, q: Statements) -> None:
    """Re-create the trigger for the enabled types (drop it when there are none); the
    types are a literal of the statement (a trigger's WHEN takes no parameters)."""
    cur = await conn.execute(q.history_enabled_types)
    types = [row[0] for row in await cur.fetchall()]
    await conn.execute(q.history_drop_trigger)
    if types:
        template = schema.queries()["history_create_trigger"]
        literal = sql.Literal("{" + ",".join(json.dumps(t) for t in types) + "}")
        await conn.execute(q.compose(template, types=literal))
