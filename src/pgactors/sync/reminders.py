"""``SyncStore``'s reminder methods (``Store``'s, blocking)."""

from __future__ import annotations

from collections.abc import (
    Sequence,
)
from datetime import datetime

from ..reminders import Reminder, ReminderStats
from ..store import Store
from .loop import LoopThread
from .stream import SyncListener


class SyncReminderMethods:
    """Reminders, without ``await``."""

    _store: Store
    _runner: LoopThread

    def set_reminder(
        self,
        type: str,
        id: str,
        name: str,
        *,
        at: datetime | None = None,
        after: float | None = None,
        every: float | None = None,
    ) -> Reminder:
        """Set (or replace) a reminder (``Store.set_reminder``)."""
        return self._runner.run(
            self._store.set_reminder(type, id, name, at=at, after=after, every=every)
        )

    def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """Delete a reminder; False if there was none."""
        return self._runner.run(self._store.cancel_reminder(type, id, name))

    def reminders(
        self,
        type: str | None = None,
        id: str | None = None,
        *,
        due_before: datetime | None = None,
        limit: int = 1000,
    ) -> list[Reminder]:
        """Reminders, soonest first (``Store.reminders``)."""
        return self._runner.run(self._store.reminders(type, id, due_before=due_before, limit=limit))

    def due_reminders(
        self, types: Sequence[str], *, limit: int = 256, after: Reminder | None = None
    ) -> list[Reminder]:
        """Reminders of ``types`` due now, oldest first (``Store.due_reminders``)."""
        return self._runner.run(self._store.due_reminders(types, limit=limit, after=after))

    def lease_reminders(
        self, types: Sequence[str], *, limit: int = 256, seconds: float = 10.0
    ) -> list[Reminder]:
        """``Store.lease_reminders``."""
        return self._runner.run(self._store.lease_reminders(types, limit=limit, seconds=seconds))

    def advance_reminder(self, reminder: Reminder) -> None:
        """``Store.advance_reminder``."""
        self._runner.run(self._store.advance_reminder(reminder))

    def retry_reminder(self, reminder: Reminder, delay: float) -> None:
        """``Store.retry_reminder``."""
        self._runner.run(self._store.retry_reminder(reminder, delay))

    def next_reminder_due(self, types: Sequence[str]) -> float | None:
        """Seconds until the next reminder of ``types`` is due (``Store.next_reminder_due``)."""
        return self._runner.run(self._store.next_reminder_due(types))

    def reminder_stats(self) -> ReminderStats:
        """How many reminders exist and are overdue, and the oldest overdue due time."""
        return self._runner.run(self._store.reminder_stats())

    def reminder_listener(self) -> SyncListener:
        """A blocking listener told of reminders set to be due soon."""
        return SyncListener(self._store.reminder_listener(), self._runner)

    def observe(self, operation: str, seconds: float) -> None:
        """Record one ``operation`` taking ``seconds`` in this store's metrics."""
        self._store.observe(operation, seconds)
