"""Single-record loads and saves, coalesced: one statement for every caller waiting at once.

With ``coalesce=False`` each goes alone, as its own statement.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ..backend import CallRequest
from ..coalesce import Coalescer
from ..record import Record
from .connection import Connections, key_params
from .ops import Ops, SaveRequest, call_params, firing_params, record_from_row, save_params

MAX_BATCH = 256
# Statements of one kind in flight at once. One would leave the server idle while the
# client works; more than two splits waiting callers into smaller batches. Measured
# with benchmarks/ on 2 cores: 2 gave the best save and load throughput.
MAX_INFLIGHT = 2
# Firings: their turns keep the client busy, so one statement at a time gathers larger
# batches, which cost both sides less per firing (benchmarks/reminders.py, 2 cores).
FIRING_INFLIGHT = 1


class Coalesced:
    """One coalescer per statement kind: loads, the three kinds of save, and calls."""

    def __init__(self, db: Connections, ops: Ops, *, enabled: bool) -> None:
        self._db = db
        self._q = db.statements
        self._ops = ops
        self.enabled = enabled

        def make(
            execute: Any, execute_one: Any, inflight: int = MAX_INFLIGHT
        ) -> Coalescer[Any, Any]:
            return Coalescer(
                execute, execute_one=execute_one, max_inflight=inflight, max_batch=MAX_BATCH
            )

        self.loads: Coalescer[tuple[str, str], Record | None] = make(
            self._load_batch, self._load_one
        )
        self.lww: Coalescer[SaveRequest, Record] = make(self._save_lww_batch, self._save_one)
        self.create: Coalescer[SaveRequest, Record] = make(self._save_create_batch, self._save_one)
        self.cas: Coalescer[SaveRequest, Record] = make(self._save_cas_batch, self._save_one)
        self.calls: Coalescer[CallRequest, Record] = make(
            self._save_call_batch, self._save_call_one
        )
        self.firings: Coalescer[CallRequest, Record] = make(
            self._fire_batch, self._save_call_one, FIRING_INFLIGHT
        )

    def load(self, type: str, id: str) -> Coroutine[Any, Any, Record | None]:
        """The record, or None (a coroutine to await)."""
        if self.enabled:
            return self.loads.submit((type, id), (type, id))
        return self._load_one((type, id))

    async def save(self, request: SaveRequest) -> Record:
        """Write one record (last write wins, create, or compare-and-set)."""
        if not self.enabled:
            return await self._save_one(request)
        expected = request.expected
        writer = self.lww if expected is None else self.create if expected == 0 else self.cas
        return await writer.submit((request.type, request.id), request)

    async def save_call(self, request: CallRequest) -> Record:
        """Save a state with its call (and move on the reminder it fired, if any)."""
        if self.enabled:
            calls = self.calls if request.advance is None else self.firings
            return await calls.submit((request.type, request.id), request)
        return await self._save_call_one(request)

    async def _load_one(self, key: tuple[str, str]) -> Record | None:
        type, id = key
        rows = await self._db.read(self._q.load, {"type": type, "id": id})
        return record_from_row(type, id, rows[0]) if rows else None

    async def _save_one(self, request: SaveRequest) -> Record:
        async with self._db.connection() as conn:
            record = await self._ops.save_on(
                conn,
                request.type,
                request.id,
                request.text,
                request.expected,
                request.ttl,
                request.sliding,
            )
        self._db.changed()
        return record

    async def _save_call_one(self, request: CallRequest) -> Record:
        async with self._db.connection() as conn:
            record = await self._ops.save_call_on(conn, request)
        self._db.changed()
        return record

    async def _load_batch(self, keys: list[tuple[str, str]]) -> list[Record | None]:
        params = key_params(keys)
        found: list[Record | None] = [None] * len(keys)
        for ord, *rest in await self._db.read(self._q.load_batch, params):
            type, id = keys[ord - 1]
            found[ord - 1] = record_from_row(type, id, tuple(rest))
        return found

    async def _save_batch(
        self, query: bytes, batch: list[SaveRequest]
    ) -> dict[tuple[str, str], tuple[Any, ...]]:
        rows = await self._db.write(query, save_params(batch))
        self._db.changed()
        return {(row[0], row[1]): row[2:] for row in rows}

    async def _save_lww_batch(self, batch: list[SaveRequest]) -> list[Record | BaseException]:
        no_ttl = all(r.ttl is None for r in batch)
        query = self._q.save_lww_batch_plain if no_ttl else self._q.save_lww_batch
        rows = await self._save_batch(query, batch)
        return [r.record(rows[(r.type, r.id)]) for r in batch]

    async def _save_create_batch(self, batch: list[SaveRequest]) -> list[Record | BaseException]:
        rows = await self._save_batch(self._q.save_create_batch, batch)
        return await self._outcomes(batch, rows)

    async def _save_cas_batch(self, batch: list[SaveRequest]) -> list[Record | BaseException]:
        rows = await self._save_batch(self._q.save_cas_batch, batch)
        return await self._outcomes(batch, rows)

    async def _save_call_batch(self, batch: list[CallRequest]) -> list[Record | BaseException]:
        return await self._calls_saved(batch, self._q.save_call_batch, call_params(batch))

    async def _fire_batch(self, batch: list[CallRequest]) -> list[Record | BaseException]:
        return await self._calls_saved(batch, self._q.fire_reminders_batch, firing_params(batch))

    async def _calls_saved(
        self, batch: list[CallRequest], query: bytes, params: dict[str, str]
    ) -> list[Record | BaseException]:
        # write: retried if chosen as a deadlock victim (firings of overlapping batches
        # by several instances); the statement is atomic, so nothing of it was applied.
        rows = {(row[0], row[1]): row[2:] for row in await self._db.write(query, params)}
        if rows:
            self._db.changed()
        outcomes: list[Record | BaseException] = []
        for request in batch:
            row = rows.get((request.type, request.id))
            if row is not None:
                outcomes.append(request.record(row))
            else:  # rare: a stale version, or a retried call
                async with self._db.connection() as conn:
                    outcomes.append(await self._ops.call_lost_on(conn, request))
        return outcomes

    async def _outcomes(
        self, batch: list[SaveRequest], rows: dict[tuple[str, str], tuple[Any, ...]]
    ) -> list[Record | BaseException]:
        """A record for each saved item; for the others, a ``VersionConflict`` naming the
        current version, read after the write committed."""
        actual: dict[tuple[str, str], int] = {}
        lost = [(r.type, r.id) for r in batch if (r.type, r.id) not in rows]
        if lost:
            for type, id, version in await self._db.read(self._q.versions_batch, key_params(lost)):
                actual[(type, id)] = version
        return [
            r.record(rows[(r.type, r.id)]) if (r.type, r.id) in rows else r.conflict(actual)
            for r in batch
        ]
