"""Firing reminders for an ``ActorSystem``: each due reminder once, on whichever
instance claims it.

A due reminder is claimed (``FOR UPDATE SKIP LOCKED``) in the transaction that runs
the actor's ``on_reminder`` turn under the actor's row lock, saves its state and
advances the reminder (a one-shot is deleted; a periodic one moves to its next due
time after now). All of that commits together or not at all, so a reminder fires
exactly once per due time, even if an instance dies mid-firing: the rollback releases
the claim and another instance fires it. Between due times an instance sleeps until
the next one (at most ``HORIZON`` seconds) and wakes early when told of a reminder
set to be due sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import typing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import PgActorsError
from .reminders import HORIZON, Reminder
from .retry import back_off

if TYPE_CHECKING:
    from .actors import Actor, ActorSystem

logger = logging.getLogger("pgactors.reminders")
# Reminders fired at once by one instance (each in its own transaction and connection).
CONCURRENCY = 8
# Due reminders read per round.
ROUND = 256
# A firing whose on_reminder raised is tried again this many seconds later.
RETRY_DELAY = 5.0
# The first wait (seconds, doubling up to 1 s) when due reminders could not be fired.
STUCK_WAIT = 0.02


class ReminderFiring:
    """The background task of one ``ActorSystem`` that fires its classes' reminders."""

    def __init__(
        self, system: ActorSystem, owns: typing.Callable[[str, str], bool] | None = None
    ) -> None:
        self._system = system
        self._store = system.store
        self._owns = owns
        self._classes: dict[str, type[Actor[Any]]] = {}
        self._types: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.fired = 0
        self.failed = 0
        self.sleeps = 0  # times it waited for the next due time (or a notification)

    def add(self, classes: typing.Iterable[type[Actor[Any]]]) -> None:
        """Fire the reminders of these classes too (started at once inside a running
        event loop, else on the system's first use)."""
        for cls in classes:
            self._classes[cls.type_name] = cls
        self._types = sorted(self._classes)
        with contextlib.suppress(RuntimeError):  # no running event loop yet
            asyncio.get_running_loop()
            self.start()

    def start(self) -> None:
        """Start firing in the background."""
        if self._task is None and self._types:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="pgactors-reminders"
            )

    async def stop(self) -> None:
        """Stop firing; a firing under way is rolled back (its reminder fires again)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        listener = self._store.reminder_listener()
        failures = 0
        while True:
            try:
                await listener.connect()
                failures = stuck = 0
                while True:
                    if await self.fire_due():
                        stuck = 0
                        continue
                    wait = await self._store.next_reminder_due(self._types)
                    if wait is not None and wait <= 0:
                        # Overdue, yet none fired here: another instance holds them, or
                        # their firing fails. Look again soon, not in a tight loop.
                        wait = min(STUCK_WAIT * 2**stuck, 1.0)
                        stuck = min(stuck + 1, 10)
                    timeout = HORIZON if wait is None else min(wait, HORIZON)
                    self.sleeps += 1
                    await listener.wait(timeout)
            except asyncio.CancelledError:
                await listener.close()
                raise
            except Exception:
                logger.exception("firing reminders failed; retrying")
                await listener.close()
                await back_off(failures)
                failures += 1

    async def fire_due(self) -> int:
        """Fire the reminders due now (up to one round); return how many fired here."""
        due = await self._store.due_reminders(self._types, limit=ROUND)
        if self._owns is not None:
            due = [r for r in due if self._owns(r.type, r.id)]
        # Instances read the same due list: each takes it in its own order, so they
        # rarely reach for the same reminder at once (a taken one is skipped).
        random.shuffle(due)
        results = await asyncio.gather(*(self._fire(r) for r in due), return_exceptions=True)
        fired = 0
        for reminder, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                logger.warning(
                    "firing reminder %s/%s %r failed, it stays due: %s",
                    reminder.type,
                    reminder.id,
                    reminder.name,
                    result,
                )
            elif result:
                fired += 1
        return fired

    async def _fire(self, due: Reminder) -> bool:
        """Claim and fire one reminder; False if another instance had it."""
        cls = self._classes[due.type]
        async with self._slots:
            activation = await self._system.activation(cls, due.id)
            async with activation.lock:
                try:
                    async with self._store.transaction() as tx:
                        reminder = await tx.claim_reminder(due.type, due.id, due.name)
                        if reminder is None:
                            return False
                        done = await self._system.reminder_turn(tx, activation, reminder.name)
                        if done is None:
                            self.failed += 1
                            await tx.retry_reminder(reminder, RETRY_DELAY)
                        else:
                            await tx.advance_reminder(reminder)
                except PgActorsError:
                    activation.stale = True  # what it ran did not commit
                    raise
                if done is not None:
                    done()
                    self.fired += 1
                    lateness = (datetime.now(UTC) - reminder.due_at).total_seconds()
                    self._store.observe("reminder_fired", max(lateness, 0.0))
                return True


__all__ = ["CONCURRENCY", "RETRY_DELAY", "ReminderFiring"]
