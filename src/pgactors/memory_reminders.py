"""The in-memory twin's reminders (same rules as the PostgreSQL table), and its listeners."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

from .reminders import HORIZON, Reminder, ReminderRequest, ReminderStats

Entries = dict[tuple[str, str, str], tuple[datetime, float | None]]


class MemoryListener:
    """Receives the payloads published to its registry while connected."""

    def __init__(self, registry: set[MemoryListener]) -> None:
        self._registry = registry
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def connect(self) -> None:
        """Start receiving."""
        self._registry.add(self)

    async def wait(self, seconds: float) -> list[str]:
        """Payloads, as soon as any arrive; empty after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                payloads = [await self.queue.get()]
        except TimeoutError:
            return []
        while not self.queue.empty():
            payloads.append(self.queue.get_nowait())
        return payloads

    async def ping(self) -> None:
        """Nothing to check in memory."""

    async def close(self) -> None:
        """Stop receiving."""
        self._registry.discard(self)


def _reminder(key: tuple[str, str, str], entry: tuple[datetime, float | None]) -> Reminder:
    return Reminder(*key, *entry)


def _order(reminder: Reminder) -> tuple[datetime, str, str, str]:
    return (reminder.due_at, reminder.type, reminder.id, reminder.name)


def set_entry(entries: Entries, request: ReminderRequest) -> Reminder:
    """Set or replace a reminder."""
    schedule = request.schedule
    now = datetime.now(UTC)
    due = schedule.at or now + timedelta(seconds=schedule.after or 0.0)
    key = (request.type, request.id, request.name)
    entries[key] = (due, schedule.every)
    return _reminder(key, entries[key])


def advance_entry(entries: Entries, reminder: Reminder) -> None:
    """Delete a one-shot, move a periodic reminder to its first due time after now;
    only if it is still as claimed."""
    key = (reminder.type, reminder.id, reminder.name)
    if entries.get(key) != (reminder.due_at, reminder.period):
        return
    if reminder.period is None:
        del entries[key]
        return
    elapsed = (datetime.now(UTC) - reminder.due_at).total_seconds()
    periods = math.floor(elapsed / reminder.period) + 1
    entries[key] = (reminder.due_at + timedelta(seconds=reminder.period * periods), reminder.period)


def retry_entry(entries: Entries, reminder: Reminder, delay: float) -> None:
    """Due again after ``delay`` seconds, if still as claimed."""
    key = (reminder.type, reminder.id, reminder.name)
    if entries.get(key, (None,))[0] == reminder.due_at:
        entries[key] = (datetime.now(UTC) + timedelta(seconds=delay), reminder.period)


class MemoryReminders:
    """The reminders role of the in-memory backend."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.entries: Entries = {}
        # Taken reminders: until when, for the due time they were taken at.
        self._leases: dict[tuple[str, str, str], tuple[datetime, datetime]] = {}
        self._lock = lock
        self._listeners: set[MemoryListener] = set()

    def woken(self, reminders: list[Reminder]) -> None:
        """Tell listeners of the types with reminders due within the horizon."""
        soon = datetime.now(UTC) + timedelta(seconds=HORIZON)
        types = sorted({r.type for r in reminders if r.due_at <= soon})
        if types:
            for listener in self._listeners:
                listener.queue.put_nowait(" ".join(types))

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        """Set or replace one reminder."""
        async with self._lock:
            reminder = set_entry(self.entries, request)
        self.woken([reminder])
        return reminder

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """Delete a reminder; False if there was none."""
        async with self._lock:
            return self.entries.pop((type, id, name), None) is not None

    async def reminders(
        self, type: str | None, id: str | None, due_before: datetime | None, limit: int
    ) -> list[Reminder]:
        """Reminders (of ``type``, ``id``, due before ``due_before``), soonest first."""
        found = [
            _reminder(key, entry)
            for key, entry in self.entries.items()
            if (type is None or key[0] == type)
            and (id is None or key[1] == id)
            and (due_before is None or entry[0] < due_before)
        ]
        found.sort(key=lambda r: (r.due_at, r.type, r.id, r.name))
        return found[:limit]

    async def due(
        self, types: list[str], limit: int, after: Reminder | None = None
    ) -> list[Reminder]:
        """Up to ``limit`` due reminders of ``types``, oldest first (then by key), after
        ``after``."""
        now = datetime.now(UTC)
        found = [
            _reminder(key, entry)
            for key, entry in self.entries.items()
            if key[0] in types and entry[0] <= now
        ]
        found.sort(key=_order)
        if after is not None:
            found = [r for r in found if _order(r) > _order(after)]
        return found[:limit]

    async def advance(self, reminder: Reminder) -> None:
        """After a firing: delete a one-shot, move a periodic reminder past now."""
        async with self._lock:
            advance_entry(self.entries, reminder)

    async def retry(self, reminder: Reminder, delay: float) -> None:
        """After a failed firing: due again in ``delay`` seconds."""
        async with self._lock:
            retry_entry(self.entries, reminder, delay)

    async def lease(self, types: list[str], limit: int, seconds: float) -> list[Reminder]:
        """Due reminders of ``types`` no other caller holds, taken for ``seconds``."""
        now = datetime.now(UTC)
        async with self._lock:
            self._leases = {k: v for k, v in self._leases.items() if v[1] > now}
            found = []
            for r in await self.due(types, len(self.entries)):
                due_at, until = self._leases.get((r.type, r.id, r.name), (None, now))
                if due_at == r.due_at and until > now:
                    continue
                found.append(r)
                if len(found) == limit:
                    break
            for r in found:
                self._leases[(r.type, r.id, r.name)] = (r.due_at, now + timedelta(seconds=seconds))
            return found

    async def next_due(self, types: list[str]) -> float | None:
        """Seconds until the next reminder of ``types`` is due (negative: overdue)."""
        dues = [entry[0] for key, entry in self.entries.items() if key[0] in types]
        return None if not dues else (min(dues) - datetime.now(UTC)).total_seconds()

    async def stats(self) -> ReminderStats:
        """How many reminders exist and are overdue, and the oldest overdue due time."""
        now = datetime.now(UTC)
        overdue = [entry[0] for entry in self.entries.values() if entry[0] <= now]
        return ReminderStats(len(self.entries), len(overdue), min(overdue, default=None))

    def listener(self) -> MemoryListener:
        """Hears (as space-separated type names) of reminders set to be due soon."""
        return MemoryListener(self._listeners)


__all__ = ["MemoryListener", "MemoryReminders"]
