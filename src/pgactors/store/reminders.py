"""``Store``'s reminder methods: durable, named wake-ups by ``(type, id, name)``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..changes import FeedListener
from ..checks import int_in_range
from ..errors import InvalidInput
from ..record import check_id, check_type
from ..reminders import Reminder, ReminderStats, check_name, reminder_request
from .base import StoreBase

MAX_REMINDER_LIMIT = 100_000


class ReminderMethods(StoreBase):
    """Setting, cancelling and listing reminders; what a reminder runtime reads."""

    async def set_reminder(
        self,
        type: str,
        id: str,
        name: str,
        *,
        at: datetime | None = None,
        after: float | None = None,
        every: float | None = None,
    ) -> Reminder:
        """Set (or replace) reminder ``name`` of record ``type/id``: due at ``at`` (an aware
        datetime) or ``after`` seconds from now; ``every`` seconds again after that (alone:
        first due one period from now). Raises ``InvalidInput`` before anything is stored."""
        request = reminder_request(type, id, name, at, after, every)
        return await self._backend.reminders.set_reminder(request)

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """Delete the reminder; False if there was none."""
        return await self._backend.reminders.cancel_reminder(
            check_type(type), check_id(id), check_name(name)
        )

    async def reminders(
        self,
        type: str | None = None,
        id: str | None = None,
        *,
        due_before: datetime | None = None,
        limit: int = 1000,
    ) -> list[Reminder]:
        """Reminders (of ``type``, of ``id``, due before ``due_before``), soonest first."""
        if type is not None:
            type = check_type(type)
        if id is not None:
            id = check_id(id)
        if due_before is not None and (
            not isinstance(due_before, datetime) or due_before.utcoffset() is None
        ):
            raise InvalidInput(f"due_before must be a timezone-aware datetime, got {due_before!r}")
        if not int_in_range(limit, 1, MAX_REMINDER_LIMIT):
            raise InvalidInput(
                f"limit must be an int from 1 to {MAX_REMINDER_LIMIT}, got {limit!r}"
            )
        return await self._backend.reminders.reminders(type, id, due_before, limit)

    async def due_reminders(
        self, types: Sequence[str], *, limit: int = 256, after: Reminder | None = None
    ) -> list[Reminder]:
        """Reminders of ``types`` due now, oldest first (by due time, then type, id and
        name); ``after``, the last of a previous page, continues after it."""
        if not int_in_range(limit, 1, MAX_REMINDER_LIMIT):
            raise InvalidInput(
                f"limit must be an int from 1 to {MAX_REMINDER_LIMIT}, got {limit!r}"
            )
        if after is not None and not isinstance(after, Reminder):
            raise InvalidInput(f"after must be a Reminder (a page's last), got {after!r}")
        return await self._backend.reminders.due([check_type(t) for t in types], limit, after)

    async def lease_reminders(
        self, types: Sequence[str], *, limit: int = 256, seconds: float = 10.0
    ) -> list[Reminder]:
        """Reminders of ``types`` due now that no other caller has taken, oldest first,
        taken for ``seconds`` (``FOR UPDATE SKIP LOCKED``): instances firing reminders
        share them out. Replacing, moving on or putting off a reminder frees it."""
        if not int_in_range(limit, 1, MAX_REMINDER_LIMIT):
            raise InvalidInput(
                f"limit must be an int from 1 to {MAX_REMINDER_LIMIT}, got {limit!r}"
            )
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds < 86400
        ):
            raise InvalidInput(f"seconds must be a number from 0 to 86400, got {seconds!r}")
        return await self._backend.reminders.lease(
            [check_type(t) for t in types], limit, float(seconds)
        )

    async def advance_reminder(self, reminder: Reminder) -> None:
        """After firing ``reminder`` (as ``due_reminders`` gave it): delete a one-shot, move
        a periodic one to its first due time after now. One replaced or cancelled since
        is left as it is."""
        await self._backend.reminders.advance(reminder)

    async def retry_reminder(self, reminder: Reminder, delay: float) -> None:
        """After a failed firing: ``reminder`` is due again ``delay`` seconds from now
        (unless it changed since)."""
        await self._backend.reminders.retry(reminder, delay)

    async def next_reminder_due(self, types: Sequence[str]) -> float | None:
        """Seconds (server clock) until the next reminder of ``types`` is due; negative
        when one is overdue, None when there is none."""
        return await self._backend.reminders.next_due([check_type(t) for t in types])

    async def reminder_stats(self) -> ReminderStats:
        """How many reminders exist and are overdue, and the oldest overdue due time."""
        return await self._backend.reminders.stats()

    def reminder_listener(self) -> FeedListener:
        """A listener told (as space-separated type names) when a reminder is set to be
        due within ``reminders.HORIZON`` seconds; ``connect`` it before use."""
        return self._backend.reminders.listener()
