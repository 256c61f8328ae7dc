"""The reminders role: set (coalesced), cancel, list; due times and stats; the listener."""

from __future__ import annotations

from ..changes import FeedListener
from ..coalesce import Coalescer
from ..reminders import Reminder, ReminderRequest, ReminderStats
from .coalesced import MAX_BATCH, MAX_INFLIGHT
from .connection import Connections, json_list, listen_conninfo
from .feed import PostgresListener
from .ops import Ops, advance_params, reminder_channel


class PostgresReminders:
    """Reminders in their table; concurrent sets share one statement."""

    def __init__(self, db: Connections, ops: Ops) -> None:
        self._db = db
        self._q = db.statements
        self._config = db.config
        self._ops = ops
        self._advances: Coalescer[Reminder, None] = Coalescer(
            self._advance_batch,
            execute_one=self._advance_one,
            max_inflight=MAX_INFLIGHT,
            max_batch=MAX_BATCH,
        )
        self._sets: Coalescer[ReminderRequest, Reminder] = Coalescer(
            self._set_batch,
            execute_one=self._set_one,
            max_inflight=MAX_INFLIGHT,
            max_batch=MAX_BATCH,
        )

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        """Set or replace one reminder."""
        key = (request.type, request.id, request.name)
        return await self._sets.submit(key, request)

    async def _set_one(self, request: ReminderRequest) -> Reminder:
        async with self._db.connection() as conn:
            return (await self._ops.set_reminders_on(conn, [request]))[0]

    async def _set_batch(self, batch: list[ReminderRequest]) -> list[Reminder | BaseException]:
        async with self._db.connection() as conn:
            return list(await self._ops.set_reminders_on(conn, batch))

    async def advance(self, reminder: Reminder) -> None:
        """After a firing: delete a one-shot, move a periodic reminder past now; concurrent
        advances share one statement."""
        await self._advances.submit((reminder.type, reminder.id, reminder.name), reminder)

    async def _advance_one(self, reminder: Reminder) -> None:
        await self._db.write(self._q.advance_reminders, advance_params([reminder]))

    async def _advance_batch(self, batch: list[Reminder]) -> list[BaseException | None]:
        # write: retried if chosen as a deadlock victim (instances advancing overlapping
        # batches); the statement is atomic, so nothing of it was applied.
        await self._db.write(self._q.advance_reminders, advance_params(batch))
        return [None] * len(batch)

    async def retry(self, reminder: Reminder, delay: float) -> None:
        """After a failed firing: due again in ``delay`` seconds (if unchanged)."""
        async with self._db.connection() as conn:
            await self._ops.retry_reminder_on(conn, reminder, delay)

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """Delete a reminder; False if there was none."""
        async with self._db.connection() as conn:
            return await self._ops.cancel_reminder_on(conn, type, id, name)

    async def reminders(
        self, type: str | None, id: str | None, due_before: object, limit: int
    ) -> list[Reminder]:
        """Reminders (of ``type``, ``id``, due before ``due_before``), soonest first."""
        params = {"type": type, "id": id, "due_before": due_before, "limit": limit}
        return [Reminder(*row) for row in await self._db.read(self._q.list_reminders, params)]

    async def due(self, types: list[str], limit: int, after: Reminder | None) -> list[Reminder]:
        """Up to ``limit`` due reminders of ``types``, oldest first (then by key), after
        ``after`` (not locked)."""
        params = {
            "types": json_list(types),
            "limit": limit,
            "after_due": None if after is None else after.due_at,
            "after_type": None if after is None else after.type,
            "after_id": None if after is None else after.id,
            "after_name": None if after is None else after.name,
        }
        return [Reminder(*row) for row in await self._db.read(self._q.due_reminders, params)]

    async def lease(self, types: list[str], limit: int, seconds: float) -> list[Reminder]:
        """Up to ``limit`` due reminders of ``types`` that no other instance holds, taken
        for ``seconds``."""
        params = {"types": json_list(types), "limit": limit, "seconds": seconds}
        return [Reminder(*row) for row in await self._db.write(self._q.lease_reminders, params)]

    async def next_due(self, types: list[str]) -> float | None:
        """Seconds until the next reminder of ``types`` is due (negative: overdue)."""
        rows = await self._db.read(self._q.next_reminder, {"types": json_list(types)})
        return None if rows[0][0] is None else float(rows[0][0])

    async def stats(self) -> ReminderStats:
        """How many reminders exist and are overdue, and the oldest overdue due time."""
        rows = await self._db.read(self._q.reminder_stats, {})
        total, overdue, oldest = rows[0]
        return ReminderStats(int(total), int(overdue), oldest)

    def listener(self) -> FeedListener:
        """Hears (as space-separated type names) of reminders set to be due soon."""
        conninfo = listen_conninfo(self._config, self._db.conninfo, self._db.pooled)
        return PostgresListener(conninfo, self._config, reminder_channel(self._config))
