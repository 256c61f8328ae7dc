"""Firing reminders for an ``ActorSystem``: each due time applied once, whichever
instances run.

A firing is an ``on_reminder`` turn whose state is saved with a call id naming the
reminder and its due time (``Store.save_call``), exactly as the Ray silos make calls
exactly-once: the state and the record of the firing commit together, and a second
firing of the same due time (another instance, or a retry after a crash) finds the
record and changes nothing. The same statement moves the reminder on (a one-shot
deleted; a periodic one to its next due time after now), if it is still as it was
fired (``save_call(advance=...)``). Concurrent firings share that statement (it is
coalesced), so there is no transaction per firing. Each firing is a task: a slow
``on_reminder`` holds up no other. Between due times an instance sleeps until the next
one (at most ``HORIZON`` seconds) and wakes early when told of a reminder set to be due
sooner, or, with firings under way, as each ends. A firing still running when its
lease ends no longer holds a place among the instance's firings: it goes on, and the
instance takes others, so hung ``on_reminder`` calls cannot stop it. Recorded firings
are purged after ``CALL_RETENTION`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import typing
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .changes import FeedListener
from .errors import PgActorsError
from .reminders import CALL_PREFIX, HORIZON, Reminder
from .retry import back_off

if TYPE_CHECKING:
    from .actors import Actor, ActorSystem

logger = logging.getLogger("pgactors.reminders")
# Reminders fired at once by one instance: their saves are coalesced into shared
# statements, one at a time, so the turns waiting for the next statement are what
# the client works on while the server runs the current one. On 2 cores, in
# interleaved runs of 20,000 firings, 256 fired more per second than 128, and 512
# about 12% more than 256 (statements of 256 firings); 1,024 did no better than 512.
CONCURRENCY = 512
# Due reminders taken at a time (more are taken when half of them have fired). Not
# more: instances share a backlog by these leases (1,024 fired no faster).
ROUND = 512
# Pages of due reminders a Ray silo reads, at most, to find its own among other silos'.
OWNED_PAGES = 64
# A firing whose on_reminder raised is tried again this many seconds later.
RETRY_DELAY = 5.0
# How long stop() waits for the firing task before cancelling it again (seconds).
STOP_WAIT = 1.0
# How long a due reminder taken by an instance is its own (seconds).
LEASE = 10.0
# Firings are remembered this long (seconds): a firing retried later would run again.
CALL_RETENTION = 3600.0
PURGE_INTERVAL = 60.0
# The first wait (seconds, doubling up to 1 s) when due reminders could not be fired.
STUCK_WAIT = 0.02


class ReminderFiring:
    """The background task of one ``ActorSystem`` that fires its classes' reminders.

    Firings run as tasks of their own: a slow ``on_reminder`` holds up only its own
    actor, and the instance goes on taking and firing the others as they fall due."""

    def __init__(
        self, system: ActorSystem, owns: typing.Callable[[str, str], bool] | None = None
    ) -> None:
        self._system = system
        self._store = system.store
        self._owns = owns
        self._classes: dict[str, type[Actor[Any]]] = {}
        self._types: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._listener: FeedListener | None = None
        self._queued: deque[Reminder] = deque()
        self._firing: dict[asyncio.Task[bool], Reminder] = {}
        # Firings in the order they started, to find those that outlast their lease
        # (settled ones are dropped as they reach the front); and those found so.
        self._started: deque[tuple[float, asyncio.Task[bool]]] = deque()
        self._overdue: set[asyncio.Task[bool]] = set()
        self._taken: set[Reminder] = set()  # queued or firing: not taken twice
        self._room: asyncio.Event | None = None  # set once half a round is left
        self._settled: asyncio.Event | None = None  # set as each firing settles
        self.fired = 0
        self.failed = 0
        self.repeated = 0  # firings found already applied (lease ran out, or a crash)
        self.sleeps = 0  # times it waited for the next due time (or a notification)
        self._moved = 0  # firings settled that moved their reminder on
        self._next_purge = 0.0
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Reminders taken by this instance and not yet settled (fired, found applied,
        failed or left due): the counters are final for them only once this is 0."""
        return len(self._queued) + len(self._firing)

    def _busy(self) -> int:
        """``in_flight`` without the firings that outlasted their lease: what limits how
        many more this instance takes and starts."""
        lapsed = time.monotonic() - LEASE
        started = self._started
        while started and (started[0][1] not in self._firing or started[0][0] <= lapsed):
            _, task = started.popleft()
            if task in self._firing:
                self._overdue.add(task)
        return self.in_flight - len(self._overdue)

    def _lapses_in(self) -> float | None:
        """Seconds until the oldest firing that counts in ``_busy`` outlasts its lease."""
        return self._started[0][0] + LEASE - time.monotonic() if self._started else None

    def add(self, classes: typing.Iterable[type[Actor[Any]]]) -> None:
        """Fire the reminders of these classes too (started at once inside a running
        event loop, else on the system's first use)."""
        for cls in classes:
            self._classes[cls.type_name] = cls
        self._types = sorted(self._classes)
        if self._types and self._listener is None:
            # Made now, so that a store that cannot LISTEN says so here (ConfigError).
            self._listener = self._store.reminder_listener()
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
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            # A cancellation that lands as a wait completes can be swallowed (asyncio
            # before 3.12), so the loop also checks the flag, and we cancel again.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_WAIT)
            self._stopping = False

    async def _run(self) -> None:
        listener = self._listener
        assert listener is not None
        self._room, self._settled = asyncio.Event(), asyncio.Event()
        failures = 0
        try:
            while not self._stopping:
                try:
                    await listener.connect()
                    failures = 0
                    await self._look(listener)
                except Exception:
                    logger.exception("firing reminders failed; retrying")
                    await listener.close()
                    await back_off(failures)
                    failures += 1
        finally:
            self._queued.clear()
            self._started.clear()
            firing = list(self._firing)
            for task in firing:
                task.cancel()
            await listener.close()
            if firing:
                await asyncio.wait(firing)

    async def _look(self, listener: FeedListener) -> None:
        """Take due reminders while there is room, then sleep until the next is due."""
        assert self._room is not None and self._settled is not None
        stuck, moved = 0, self._moved
        while not self._stopping:
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + PURGE_INTERVAL
                await self._purge()
            self._start()  # those queued behind firings that have since outlasted their lease
            if self._busy() > ROUND // 2:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._lapses_in()):
                        await self._room.wait()
                continue
            self._settled.clear()
            if await self._take():
                continue  # a backlog: take more as soon as there is room
            # While firings are under way here, theirs are among the due reminders:
            # the next look is when one settles.
            wait = -1.0 if self._firing else await self._store.next_reminder_due(self._types)
            if self._moved != moved:
                stuck, moved = 0, self._moved
            if wait is not None and wait <= 0:
                # Overdue, yet not taken here: still firing here or at another instance,
                # or their firing fails. Look again soon, not in a tight loop.
                wait = min(STUCK_WAIT * 2**stuck, 1.0)
                stuck = min(stuck + 1, 10)
            timeout = HORIZON if wait is None else min(wait, HORIZON)
            await self._sleep(listener, timeout)

    async def _sleep(self, listener: FeedListener, seconds: float) -> None:
        """Wait for a notification or ``seconds``; with firings under way, for one of
        them to settle or ``seconds`` (a notification is then read on the next look)."""
        assert self._settled is not None
        self.sleeps += 1
        if self._firing or self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._settled.wait()
            return
        await listener.wait(seconds)

    async def _take(self) -> bool:
        """Queue the due reminders not taken yet; True if there may be more due now.

        Taken ``ROUND`` at a time, and more are taken once half of them have fired, so
        the statements that save firings stay full. At most ``CONCURRENCY`` fire at
        once; the others wait in a queue, not as tasks."""
        if self._owns is not None:
            due = await self._owned_due()
        else:
            # Taken for LEASE seconds: other instances take others. One still firing
            # when its lease runs out may be fired again elsewhere: the call record
            # makes that second firing change nothing.
            due = await self._store.lease_reminders(self._types, limit=ROUND, seconds=LEASE)
        for reminder in due:
            if reminder not in self._taken:
                self._taken.add(reminder)
                self._queued.append(reminder)
        self._start()
        return len(due) == ROUND

    def _start(self) -> None:
        while self._queued and self._busy() - len(self._queued) < CONCURRENCY:
            reminder = self._queued.popleft()
            task = asyncio.create_task(self._fire_logged(reminder))
            self._firing[task] = reminder
            self._started.append((time.monotonic(), task))
            task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[bool]) -> None:
        self._taken.discard(self._firing.pop(task))
        self._overdue.discard(task)
        if not task.cancelled():
            if (exc := task.exception()) is not None:
                logger.error("firing a reminder failed", exc_info=exc)
            elif task.result():
                self._moved += 1
        if not self._stopping:
            self._start()
        if self._settled is not None:
            self._settled.set()
        if self._room is not None and self._busy() <= ROUND // 2:
            self._room.set()

    async def _owned_due(self) -> list[Reminder]:
        """The due reminders of this system's actors not yet taken (a Ray silo: nobody
        else fires these, and they are not leased), read page by page past other
        silos' backlog."""
        owns, after = self._owns, None
        assert owns is not None
        for _ in range(OWNED_PAGES):
            page = await self._store.due_reminders(self._types, limit=ROUND, after=after)
            owned = [r for r in page if owns(r.type, r.id) and r not in self._taken]
            if owned or len(page) < ROUND:
                return owned
            after = page[-1]
        return []

    async def _fire_logged(self, reminder: Reminder) -> bool:
        """``_fire``; a storage failure is logged, and the reminder stays due."""
        try:
            return await self._fire(reminder)
        except PgActorsError as exc:
            logger.warning(
                "firing reminder %s/%s %r failed, it stays due: %s",
                reminder.type,
                reminder.id,
                reminder.name,
                exc,
            )
            return False

    async def _fire(self, reminder: Reminder) -> bool:
        """Fire one reminder and move it on; False if ``on_reminder`` raised (it is then
        put off)."""
        cls = self._classes[reminder.type]
        activation = await self._system.activation(cls, reminder.id)
        try:
            async with activation.lock:
                applied = await self._system.reminder_turn(activation, reminder)
        except PgActorsError:
            raise  # storage trouble: it stays due, and is fired again
        except Exception as exc:  # on_reminder raised: nothing of it was saved
            self.failed += 1
            logger.warning(
                "on_reminder(%r) of %s/%s raised, it fires again in %gs: %r",
                reminder.name,
                reminder.type,
                reminder.id,
                RETRY_DELAY,
                exc,
            )
            await self._store.retry_reminder(reminder, RETRY_DELAY)
            return False
        if not applied:
            self.repeated += 1  # another instance had fired it: nothing changed
        else:
            self.fired += 1
            lateness = (datetime.now(UTC) - reminder.due_at).total_seconds()
            self._store.observe("reminder_fired", max(lateness, 0.0))
        return True

    async def _purge(self) -> None:
        """Forget firings recorded more than ``CALL_RETENTION`` seconds ago."""
        try:
            await self._store.purge_calls(older_than=CALL_RETENTION, prefix=CALL_PREFIX)
        except PgActorsError as exc:
            logger.warning("purging recorded firings failed, will retry: %s", exc)


__all__ = ["CONCURRENCY", "RETRY_DELAY", "ReminderFiring"]
