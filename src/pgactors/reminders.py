"""Reminders: durable, named wake-ups of a record's owner (an actor), by ``(type, id, name)``.

A reminder is due at a time; a periodic one (``every``) fires again every period after
that. The store keeps them (``Store.set_reminder``, ``cancel_reminder``, ``reminders``);
``firing.py`` fires them for an ``ActorSystem``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from .errors import InvalidInput
from .record import TYPE_RE, check_id, check_type

MAX_PERIOD: Final = 10 * 365 * 86400.0  # ten years, in seconds
# A reminder due within this many seconds wakes sleeping instances at once (a
# notification); instances never sleep longer than this, so later ones are found anyway.
HORIZON: Final = 30.0
# Firings are recorded as calls with ids starting so (``Store.save_call``).
CALL_PREFIX: Final = "reminder:"


@dataclass(frozen=True, slots=True)
class Reminder:
    """A stored reminder: due at ``due_at``; ``period`` seconds between firings, or None."""

    type: str
    id: str
    name: str
    due_at: datetime
    period: float | None


@dataclass(frozen=True, slots=True)
class ReminderStats:
    """How many reminders exist, how many are overdue, and the oldest overdue due time."""

    total: int
    overdue: int
    oldest_overdue: datetime | None


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a reminder is due: at ``at``, else ``after`` seconds from now (server time);
    ``every`` seconds after that again, or once."""

    at: datetime | None
    after: float | None
    every: float | None


@dataclass(frozen=True, slots=True)
class ReminderRequest:
    """One checked reminder to set."""

    type: str
    id: str
    name: str
    schedule: Schedule


def reminder_call_id(reminder: Reminder) -> str:
    """The call id a firing of ``reminder`` at its due time is recorded under."""
    name = reminder.name
    if len(name) > 160:  # call ids hold 200 characters
        name = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"{CALL_PREFIX}{name}@{reminder.due_at.timestamp():.6f}"


def check_name(name: object) -> str:
    """A reminder name: the same rule as a type name."""
    if not isinstance(name, str) or not TYPE_RE.match(name):
        raise InvalidInput(
            f"reminder name must start with a letter and contain only letters, digits and "
            f"_ . : - (at most 255 characters), got {name!r}"
        )
    return name


def _seconds(what: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_PERIOD
    ):
        raise InvalidInput(
            f"{what} must be a finite number of seconds > 0 (at most {MAX_PERIOD:g}), got {value!r}"
        )
    return float(value)


def check_schedule(
    at: datetime | None = None, after: float | None = None, every: float | None = None
) -> Schedule:
    """The schedule of ``remind(at=..., after=..., every=...)``; ``InvalidInput`` if it is
    not one of: ``after``, ``at``, ``every``, ``every`` with ``after`` or ``at``."""
    if at is not None and after is not None:
        raise InvalidInput("give at or after, not both")
    if at is None and after is None and every is None:
        raise InvalidInput("a reminder needs at, after or every")
    if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
        raise InvalidInput(f"at must be a timezone-aware datetime, got {at!r}")
    period = None if every is None else _seconds("every", every)
    delay = None if after is None else _seconds("after", after)
    if at is None and delay is None:
        delay = period  # every alone: first due one period from now
    return Schedule(at, delay, period)


def reminder_request(
    type: str,
    id: str,
    name: str,
    at: datetime | None = None,
    after: float | None = None,
    every: float | None = None,
) -> ReminderRequest:
    """A checked reminder; ``InvalidInput`` names what is wrong."""
    return ReminderRequest(
        check_type(type), check_id(id), check_name(name), check_schedule(at, after, every)
    )


__all__ = [
    "CALL_PREFIX",
    "HORIZON",
    "Reminder",
    "ReminderRequest",
    "ReminderStats",
    "Schedule",
    "check_name",
    "check_schedule",
    "reminder_call_id",
    "reminder_request",
]
